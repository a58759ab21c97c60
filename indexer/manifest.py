"""The manifest of an index version: what was built, from what, how to search it, how well.

A :class:`Manifest` is frozen and typed. The build composes it once, ``indexer.artifact.publish``
adds the checksums of the staged files and writes it as ``manifest.json``; the server, the
CLI, the reports and the benchmarks read it back with :meth:`Manifest.from_json`, never by
string keys. ``schema`` numbers the format: a reader refuses a schema it does not know, with an
error saying which side to upgrade.

Reading is strict: a missing field, a field of the wrong type or an unknown field names its path
(``quality.chosen.nprobe``), so a damaged or foreign manifest is refused, never half-read.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from indexer.records import DEFAULT_TEXT_FIELDS, PIN_TEXT_FIELDS, AdRecord

SCHEMA = 2  # 1: the untyped manifest of adindex 0.1 (``format_version``)
DEFAULT_TEXT_SEPARATOR = ". "


class ManifestError(ValueError):
    """A manifest that this adindex cannot read; the message names the field."""


@dataclass(frozen=True)
class ModelInfo:
    """Where the vectors come from, and how an ad becomes the text that was embedded."""

    name: str  # "all-MiniLM-L6-v2", a local model directory's name, or "precomputed"
    dimension: int
    source: Literal["text", "catalog embeddings"]
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    text_separator: str = DEFAULT_TEXT_SEPARATOR
    embedder: str = ""  # the embedder that made text vectors (model, backend, quantisation)

    def text_of(self, record: AdRecord) -> str:
        """The text this version embeds for an ad (builds and upserts alike)."""
        return record.text(self.text_fields, self.text_separator)


@dataclass(frozen=True)
class EmbeddingInfo:
    """How a text catalog's vectors were obtained: embedded now, or reused from the cache.

    ``embedded + reused`` is the number of ads. Ads whose texts are equal share one embedding,
    so ``texts_embedded`` (texts sent to the embedder) can be below ``embedded``.
    """

    embedded: int  # ads whose vector this build computed
    reused: int  # ads whose vector came from the embedding cache
    texts_embedded: int  # distinct texts sent to the embedder
    cache: str | None = None  # the cache directory used (indexer.embedding_cache); None: off


@dataclass(frozen=True)
class IndexSpec:
    """The FAISS index: factory string, lists, training sample."""

    factory: str
    nlist: int
    train_size: int
    seed: int
    memory_bytes_estimate: int | None = None


@dataclass(frozen=True)
class SearchDefaults:
    """The operating point served when a request does not choose one."""

    nprobe: int
    k_factor: int
    min_rerank: int = 0  # requests for k results re-rank at least this many candidates


@dataclass(frozen=True)
class Counts:
    ads: int
    active: int
    paused: int
    rejected: int


@dataclass(frozen=True)
class CatalogInfo:
    path: str
    sha256: str
    # Admin changes acknowledged after this moment are replayed on top of the version.
    snapshot_at: datetime


@dataclass(frozen=True)
class BuildInfo:
    seconds: dict[str, float]  # per stage
    threads: int
    host: str
    software: dict[str, str]  # package -> version
    engine: Literal["local", "ray"] = "local"  # in-process, or on a Ray cluster (indexer.ray_build)
    nodes: int = 1  # Ray nodes the build ran on


@dataclass(frozen=True)
class OperatingPoint:
    """One measured search setting."""

    nprobe: int
    k_factor: int
    recall: float
    p50_ms: float
    p99_ms: float
    frontier: bool = False
    # The recall's confidence interval over queries (None: not computed); the recall gate
    # reads recall_low. How it was computed: Quality.interval.
    recall_low: float | None = None
    recall_high: float | None = None


@dataclass(frozen=True)
class RerankProbe:
    """Recall at one (nprobe, k_factor), measured without timing (one batched search)."""

    nprobe: int
    k_factor: int
    recall: float
    coverage: float  # share of the exact top-k inside the probed lists: recall's ceiling


@dataclass(frozen=True)
class QueriesInfo:
    """The held-out queries recall was measured on."""

    source: str  # "file" or "catalog-sample"
    nq: int
    description: str
    path: str | None = None


@dataclass(frozen=True)
class Quality:
    """The build's measured recall/latency curve and the point it published."""

    target_recall: float
    recall_k: int
    queries: QueriesInfo
    ground_truth: str
    latency: str
    curve: tuple[OperatingPoint, ...]
    chosen: OperatingPoint
    best: OperatingPoint
    reached: bool
    truncated: bool
    seconds: float
    below_target: bool
    max_memory_mb: float | None = None
    # How recall_low / recall_high were computed (None: versions built before intervals).
    interval: str | None = None
    # Recall measured beyond the sweep to advise a refused or below-target build (what deeper
    # re-ranking would give at the best nprobe); latency not measured.
    probes: tuple[RerankProbe, ...] = ()


@dataclass(frozen=True)
class PinsInfo:
    """The version's pin table (``adindex build --pins``), in the ads' embedding space.

    ``model`` and ``dimension`` repeat the ads' (``Manifest.model``): loading a version checks
    they agree, so pins and ads of one version are always comparable.
    """

    count: int
    model: str
    dimension: int
    source: Literal["text", "catalog embeddings"]
    path: str  # the pins file it was built from
    sha256: str
    files: tuple[str, ...]  # the version's files holding the table (also in Manifest.files)
    text_fields: tuple[str, ...] = PIN_TEXT_FIELDS
    text_separator: str = DEFAULT_TEXT_SEPARATOR
    rejected: int = 0


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a sharded version: its directory inside the version and its ads."""

    name: str  # e.g. "shard-0"; its files are listed in the version's ``files`` under it
    counts: Counts


@dataclass(frozen=True)
class ShardsInfo:
    """A version split by ad id into ``count`` shards (``adindex build --shards N``).

    The version's own manifest lists every shard in ``entries`` and, in ``files``, every file
    of every shard (``shard-0/index.faiss``, ``shard-0/manifest.json``, ...). Each shard
    directory holds a complete manifest of its own (``index`` says which shard it is) and
    loads like an unsharded version. Every shard shares the trained quantizer and codebooks,
    so scores are comparable; search defaults and quality are the version's, measured as
    served (fan-out to every shard, merged by score).
    """

    count: int
    assignment: str  # how an ad id picks its shard (indexer.shards.shard_of)
    entries: tuple[ShardEntry, ...] = ()  # the version's manifest: every shard, in order
    index: int | None = None  # a shard's own manifest: which shard it is


@dataclass(frozen=True)
class Manifest:
    """Everything recorded about one published version (``manifest.json``)."""

    created_at: str
    dimension: int
    model: ModelInfo
    index: IndexSpec
    search: SearchDefaults
    counts: Counts
    catalog: CatalogInfo
    build: BuildInfo
    quality: Quality | None = None  # None: not measured (e.g. benchmark artifacts)
    embedding: EmbeddingInfo | None = None  # text catalogs: embedded vs reused counts
    pins: PinsInfo | None = None  # None: built without --pins
    metric: Literal["inner_product"] = "inner_product"
    normalized: bool = True
    version: str = ""  # set by publish
    files: dict[str, FileEntry] = field(default_factory=dict)  # set by publish
    schema: int = SCHEMA
    shards: ShardsInfo | None = None  # None: one index, not sharded

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _encode(self)
        if self.pins is None:  # omitted: a version without pins stays readable by older readers
            del out["pins"]
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, obj: object) -> Manifest:
        """Read a manifest; raises ManifestError naming the first bad field."""
        if not isinstance(obj, dict):
            raise ManifestError(f"expected a JSON object, got {type(obj).__name__}")
        schema = obj.get("schema")
        if schema is None and "format_version" in obj:
            raise ManifestError(
                f"written by an older adindex (format_version {obj['format_version']!r}); "
                f"this adindex reads schema {SCHEMA}: rebuild the version"
            )
        if schema != SCHEMA:
            newer = isinstance(schema, int) and schema > SCHEMA
            raise ManifestError(
                f"schema {schema!r}, this adindex reads schema {SCHEMA}"
                + (": upgrade adindex to read it" if newer else "")
            )
        manifest: Manifest = _decode(cls, obj, "")
        return manifest

    @classmethod
    def loads(cls, text: str) -> Manifest:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"not JSON: {exc}") from exc
        return cls.from_json(obj)


# --- JSON codec for the frozen dataclasses above ------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` (parsed JSON) against type ``tp`` and build it; ``path`` names it."""
    where = path or "manifest"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ManifestError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ManifestError(f"{where}: expected an array, got {type(value).__name__}")
        return tuple(_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        item = typing.get_args(tp)[1]
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: _decode(item, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, path)
    if tp is datetime:
        try:
            return datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: not an ISO 8601 time: {value!r}") from exc
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and type(value) is not tp:
        raise ManifestError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    return value


def _decode_dataclass(cls: Any, value: Any, path: str) -> Any:
    where = path or "manifest"
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown)}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in value:
            kwargs[name] = _decode(hints[name], value[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestError(f"{sub}: missing")
    return cls(**kwargs)
