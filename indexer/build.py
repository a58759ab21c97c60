"""Catalog -> embeddings -> trained FAISS index -> published artifact version.

A build has two halves. Getting the records and their vectors (:class:`Vectors`) is the
engine's: in this process (:func:`build`), or on a Ray cluster (``indexer.ray_build``, loaded
only for ``engine="ray"``). Everything after is shared by both engines
(:func:`index_and_publish`): choosing the index, training and filling it (an engine may bring
its own :data:`IndexMaker`), the recall gate, the manifest and the atomic publish.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from indexer import artifact
from indexer.advice import below_target_message
from indexer.ann import normalize
from indexer.catalog import read_catalog, write_rejects
from indexer.embedding import Embedder, SentenceTransformerEmbedder, embedder_identity
from indexer.embedding_cache import CACHE_DIR, CacheKey, Encode, embed_with_cache
from indexer.manifest import (
    DEFAULT_TEXT_SEPARATOR,
    BuildInfo,
    CatalogInfo,
    Counts,
    EmbeddingInfo,
    IndexSpec,
    Manifest,
    ModelInfo,
    OperatingPoint,
    PinsInfo,
    SearchDefaults,
)
from indexer.params import DEFAULT_MIN_RERANK, IndexParams, choose_params
from indexer.pins import PinFile, PinsError, embed_pins, read_pins, write_pins
from indexer.queries import QuerySet, catalog_queries, file_queries
from indexer.records import DEFAULT_TEXT_FIELDS, PIN_TEXT_FIELDS, Catalog
from indexer.tuning import Tuning, TuningConfig, allowed_best, tune

logger = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """The build cannot go on; the message says what to change. Nothing was published."""


class RecallBelowTarget(BuildError):
    """The index cannot reach the target recall at any measured setting; nothing was published.

    ``tuning`` holds the measured curve (the message names the best point and what to change).
    """

    def __init__(self, message: str, tuning: Tuning):
        super().__init__(message)
        self.tuning = tuning


@dataclass(frozen=True)
class RayOptions:
    """How ``engine="ray"`` uses a Ray cluster (``indexer.ray_build``, docs/scale-out.md)."""

    # None: start a local Ray for this build and stop it after (unless RAY_ADDRESS is set);
    # else join the cluster at this address ("host:port" of its GCS, as ``ray start --head``
    # prints, or "auto").
    address: str | None = None
    num_cpus: int | None = None  # CPUs of a local Ray (None: every core); unused with address
    # Embedding actors, each loading the model once (None: one per cpus_per_actor CPUs of the
    # cluster). They run after the catalog is read, so they may take every CPU.
    actors: int | None = None
    cpus_per_actor: int = 1  # CPUs reserved per actor = its embedder's threads
    batch_size: int = 256  # texts per actor call
    add_block_rows: int = 100_000  # vectors per parallel FAISS add task

    def __post_init__(self) -> None:
        for name in ("num_cpus", "actors", "cpus_per_actor", "batch_size", "add_block_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"ray {name} must be >= 1; got {value}")


@dataclass(frozen=True)
class BuildConfig:
    """One build: where the catalog is, where versions go, and how to index."""

    catalog: Path  # a file, or a directory of catalog files (indexer.catalog.catalog_files)
    out: Path
    model: Path | None = None  # None: the installed all-MiniLM-L6-v2
    index_factory: str | None = None  # None: chosen from corpus size (indexer.params)
    nprobe: int | None = None
    k_factor: int | None = None
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    text_separator: str = DEFAULT_TEXT_SEPARATOR
    skip_invalid: bool = False
    # A pins file to embed with the ads' model into the version's pin table (indexer.pins).
    pins: Path | None = None
    pin_text_fields: tuple[str, ...] = PIN_TEXT_FIELDS
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 1234
    # Recall gate (indexer.tuning): a version is published only if some measured
    # (nprobe, k_factor) reaches recall@recall_k >= target_recall against exact search.
    target_recall: float = 0.95
    recall_k: int = 100
    max_memory_mb: float | None = None  # RAM budget for the index; None: no limit
    queries: Path | None = None  # held-out queries (.npy, (nq, d)); None: sampled from the catalog
    max_eval_queries: int = 500
    eval_budget_s: float = 40.0  # for the nprobe x k_factor sweep (exact search comes on top)
    allow_below_target: bool = False  # publish anyway, marked quality.below_target
    # When the catalog was exported from the source of truth. Admin changes (pause, upsert,
    # delete) acknowledged after this moment are replayed on top of the new version; None
    # takes the catalog file's modification time.
    snapshot_at: datetime | None = None
    # Where the records and vectors are made: in this process, or on a Ray cluster.
    engine: Literal["local", "ray"] = "local"
    ray: RayOptions = field(default_factory=RayOptions)
    # Reuse the vectors of texts embedded before (indexer.embedding_cache), kept in
    # embedding_cache_dir (None: OUT/embedding-cache).
    embedding_cache: bool = True
    embedding_cache_dir: Path | None = None
    # Split the version into this many shards by ad id (indexer.shards); None: one index.
    shards: int | None = None

    def __post_init__(self) -> None:
        if self.shards is not None and self.shards < 1:
            raise ValueError(f"shards must be >= 1; got {self.shards}")
        if self.shards is not None and self.pins is not None:
            # A root would have to resolve engaged pins into interests before fanning out.
            raise ValueError("--pins with --shards is not supported yet: build pins unsharded")
        if self.engine == "ray" and self.pins is not None:
            raise ValueError("--pins with --engine ray is not supported yet: build pins locally")
        if not self.text_fields:
            raise ValueError("text_fields must name at least one field")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1; got {self.threads}")
        if not 0.0 <= self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in [0, 1]; got {self.target_recall}")
        if self.recall_k < 1:
            raise ValueError(f"recall_k must be >= 1; got {self.recall_k}")
        if self.max_memory_mb is not None and self.max_memory_mb <= 0:
            raise ValueError(f"max_memory_mb must be > 0; got {self.max_memory_mb}")
        if self.max_eval_queries < 1 or self.eval_budget_s <= 0:
            raise ValueError(
                f"max_eval_queries must be >= 1 and eval_budget_s > 0; got "
                f"{self.max_eval_queries} and {self.eval_budget_s}"
            )
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray'; got {self.engine!r}")

    @property
    def cache_root(self) -> Path | None:
        """The embedding cache directory, or None when caching is off."""
        if not self.embedding_cache:
            return None
        return self.embedding_cache_dir or self.out / CACHE_DIR


@dataclass(frozen=True)
class BuildResult:
    version_dir: Path
    manifest: Manifest


@contextmanager
def timeit(stage: str, timings: dict[str, float]) -> Iterator[None]:
    """Log and record how long a build stage took."""
    logger.info("%s ...", stage)
    t0 = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - t0, 3)
    logger.info("%s: %.2f s", stage, timings[stage])


@dataclass(frozen=True)
class Vectors:
    """Records and their vectors, ready to index: what every engine hands the shared stages."""

    catalog: Catalog
    xb: np.ndarray  # (n, d) float32 unit rows; row i = catalog.records[i] = FAISS id i
    model: ModelInfo
    embedding: EmbeddingInfo | None = None  # text catalogs: embedded vs reused


# Trains an index of ``params`` and adds xb with ids 0..n-1: (xb, params, seed) -> index.
IndexMaker = Callable[[np.ndarray, IndexParams, int], faiss.Index]


def embed_catalog(
    catalog: Catalog,
    config: BuildConfig,
    embedder: Embedder | None,
    *,
    encode: Encode | None = None,
) -> Vectors:
    """Vectors for every record: the catalog's own, or the model's embedding of its text.

    Args:
        catalog: the records.
        config: the build (model, text fields, embedding cache).
        embedder: the embedder that names the vectors (identity, dimension); None loads
            ``config.model``.
        encode: embeds the texts the cache does not have (default: ``embedder.encode`` here;
            the Ray engine passes its actor pool).
    """
    if catalog.embeddings is not None:
        xb = normalize(catalog.embeddings, inplace=True)  # the build owns the catalog's matrix
        if config.model is not None:
            embedder = embedder or SentenceTransformerEmbedder(config.model)
            if embedder.dimension != xb.shape[1]:
                raise BuildError(
                    f"{catalog.location(0)}: embedding: dimension {xb.shape[1]} "
                    f"differs from the query model {embedder.model_name} ({embedder.dimension}-d)"
                )
        if embedder is None:
            return Vectors(
                catalog, xb, ModelInfo("precomputed", int(xb.shape[1]), "catalog embeddings")
            )
        model = ModelInfo(
            embedder.model_name,
            int(xb.shape[1]),
            "catalog embeddings",
            embedder=embedder_identity(embedder),
        )
        return Vectors(catalog, xb, model)
    embedder = embedder or SentenceTransformerEmbedder(config.model)
    model = ModelInfo(
        embedder.model_name,
        embedder.dimension,
        "text",
        text_fields=config.text_fields,
        text_separator=config.text_separator,
        embedder=embedder_identity(embedder),
    )
    key = CacheKey(model.embedder, model.text_fields, model.text_separator, model.dimension)
    local = embedder

    def encode_here(texts: list[str]) -> np.ndarray:
        return local.encode(texts, progress=True)

    texts = [model.text_of(r) for r in catalog.records]
    xb, info = embed_with_cache(texts, key, encode or encode_here, config.cache_root)
    return Vectors(catalog, xb, model, info)


def train_empty(xb: np.ndarray, params: IndexParams, *, seed: int) -> faiss.Index:
    """Create the index from its factory string and train it on a seeded sample of xb."""
    n, d = xb.shape
    index = faiss.index_factory(d, params.index_factory, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=params.train_size, replace=False))
    index.train(xb[sample])
    return index


def train_index(xb: np.ndarray, params: IndexParams, seed: int) -> faiss.Index:
    """Train on a seeded sample, add everything (the in-process :data:`IndexMaker`)."""
    index = train_empty(xb, params, seed=seed)
    index.add(xb)  # FAISS ids 0..n-1 follow catalog order: row i of ads.jsonl
    return index


def build(
    config: BuildConfig,
    *,
    embedder: Embedder | None = None,
    embedder_factory: Callable[[], Embedder] | None = None,
) -> BuildResult:
    """Read, embed, index and atomically publish a new artifact version.

    Args:
        config: what to build; ``config.engine == "ray"`` runs it on Ray (``indexer.ray_build``).
        embedder: an already loaded embedder (tests, the demo); default loads ``config.model``.
        embedder_factory: makes the embedder where it runs (each Ray actor; here, if
            ``embedder`` is None); it must be picklable for Ray.

    Raises:
        CatalogError: invalid records (and ``skip_invalid`` is off).
        RecallBelowTarget: no measured operating point reaches ``target_recall`` (and
            ``allow_below_target`` is off); nothing is written under ``config.out``.
        BuildError: anything else that stops the build; the previous version keeps serving.
    """
    if config.engine == "ray":
        if embedder is not None:
            raise ValueError(
                "engine 'ray' makes its embedders on the workers: pass embedder_factory"
            )
        try:
            from indexer.ray_build import build_on_ray
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "ray":
                raise
            raise BuildError("engine 'ray' needs Ray: pip install 'adindex[ray]'") from exc
        return build_on_ray(config, embedder_factory=embedder_factory)
    if embedder is None and embedder_factory is not None:
        embedder = embedder_factory()
    timings: dict[str, float] = {}
    faiss.omp_set_num_threads(config.threads)
    with timeit("Reading catalog", timings):
        catalog = read_catalog(
            config.catalog, skip_invalid=config.skip_invalid, text_fields=config.text_fields
        )
    pin_file = None
    if config.pins is not None:
        with timeit("Reading pins", timings):
            pin_file = read_pins(
                config.pins, skip_invalid=config.skip_invalid, text_fields=config.pin_text_fields
            )
        text_model = catalog.embeddings is None or config.model is not None
        if pin_file.embeddings is None and embedder is None and text_model:
            embedder = SentenceTransformerEmbedder(config.model)  # one model: ads and pins
    with timeit(f"Embedding {len(catalog.records)} ads", timings):
        vectors = embed_catalog(catalog, config, embedder)
    pins = None
    if pin_file is not None:
        with timeit(f"Embedding {len(pin_file.records)} pins", timings):
            pins = (pin_file, *_embed_pins(pin_file, vectors.model, embedder, config))
    return index_and_publish(vectors, config, timings, pins=pins)


def index_and_publish(
    vectors: Vectors,
    config: BuildConfig,
    timings: dict[str, float],
    *,
    make_index: IndexMaker = train_index,
    nodes: int = 1,
    pins: tuple[PinFile, np.ndarray, PinsInfo] | None = None,
) -> BuildResult:
    """The stages every engine shares: plan, train and add, recall gate, manifest, publish.

    Args:
        vectors: the records and their vectors.
        config: the build.
        timings: seconds per stage so far; the stages here add theirs.
        make_index: trains the index and adds xb in catalog order (default: in this process).
        nodes: machines the build ran on (the manifest records it).
        pins: the pin table to publish in the version (pins, their vectors, what they are).
    """
    catalog, xb = vectors.catalog, vectors.xb
    n, d = xb.shape
    params, queries = _plan(config, xb)
    logger.info(
        "Index %s (nlist=%d, nprobe=%d) over %d x %d",
        params.index_factory,
        params.nlist,
        params.nprobe,
        n,
        d,
    )
    if config.shards is not None:
        from indexer.shards import build_shards  # imports this module

        return build_shards(config, vectors, params, queries, timings, nodes=nodes)
    with timeit("Training and adding", timings):
        try:
            index = make_index(xb, params, config.seed)
        except RuntimeError as exc:  # FAISS C++ errors arrive as RuntimeError
            raise BuildError(f"FAISS could not build {params.index_factory!r}: {exc}") from exc
    with timeit(f"Evaluating recall@{config.recall_k} on {len(queries.xq)} queries", timings):
        tuning = tune(index, xb, queries, params.nlist, tuning_config(config))
    point = recall_gate(tuning, params, d, config)
    version = artifact.new_version_name()
    with timeit("Publishing", timings), artifact.staging_dir(config.out, version) as staged:
        faiss.write_index(index, str(staged / artifact.INDEX_FILE))
        np.save(staged / artifact.EMBEDDINGS_FILE, xb)
        artifact.write_ads(
            [artifact.AdMeta.from_record(r) for r in catalog.records], staged / artifact.ADS_FILE
        )
        if catalog.rejects:
            write_rejects(catalog.rejects, staged / artifact.REJECTS_FILE)
        manifest = _manifest(vectors, params, tuning, point, timings, config, nodes)
        if pins is not None:
            write_pins(staged, pins[0], pins[1])
            manifest = replace(manifest, pins=pins[2])
        manifest = artifact.publish(config.out, staged, version=version, manifest=manifest)
    return BuildResult(version_dir=config.out / version, manifest=manifest)


def _embed_pins(
    pin_file: PinFile, model: ModelInfo, embedder: Embedder | None, config: BuildConfig
) -> tuple[np.ndarray, PinsInfo]:
    try:
        return embed_pins(pin_file, model, embedder, text_fields=config.pin_text_fields)
    except PinsError as exc:
        raise BuildError(str(exc)) from exc


def _plan(config: BuildConfig, xb: np.ndarray) -> tuple[IndexParams, QuerySet]:
    """What to build (indexer.params) and the held-out queries to measure it with."""
    n, d = xb.shape
    try:
        params = choose_params(
            n,
            d,
            index_factory=config.index_factory,
            nprobe=config.nprobe,
            k_factor=config.k_factor,
            max_memory_mb=config.max_memory_mb,
        )
        return params, eval_queries(config, xb)
    except ValueError as exc:
        raise BuildError(str(exc)) from exc


def eval_queries(config: BuildConfig, xb: np.ndarray) -> QuerySet:
    """Held-out queries for the recall gate: ``config.queries`` or a catalog sample."""
    if config.queries is not None:
        return file_queries(
            config.queries, xb.shape[1], max_queries=config.max_eval_queries, seed=config.seed
        )
    return catalog_queries(xb, min(config.max_eval_queries, len(xb)), seed=config.seed)


def tuning_config(config: BuildConfig) -> TuningConfig:
    return TuningConfig(
        target_recall=config.target_recall,
        recall_k=config.recall_k,
        max_queries=config.max_eval_queries,
        min_rerank=DEFAULT_MIN_RERANK,
        nprobe=config.nprobe,
        k_factor=config.k_factor,
        time_budget_s=config.eval_budget_s,
        seed=config.seed,
    )


def recall_gate(tuning: Tuning, params: IndexParams, d: int, config: BuildConfig) -> OperatingPoint:
    """The operating point to publish as the default, or RecallBelowTarget.

    Raises:
        RecallBelowTarget: no allowed point reaches the target and ``allow_below_target`` is off.
    """
    if tuning.chosen is not None:
        c = tuning.chosen
        logger.info(
            "Recall@%d %.3f >= %.3f at nprobe %d, k_factor %d (%.2f ms p50, %.2f ms p99)",
            tuning.recall_k,
            c.recall,
            tuning.target_recall,
            c.nprobe,
            c.k_factor,
            c.p50_ms,
            c.p99_ms,
        )
        return c
    message = below_target_message(
        tuning, params.index_factory, params.nlist, d, tuning_config(config)
    )
    if not config.allow_below_target:
        raise RecallBelowTarget(
            message + "\nNothing was published and LATEST is unchanged; --allow-below-target "
            "publishes it anyway, marked below target in its manifest.",
            tuning,
        )
    point = allowed_best(tuning, tuning_config(config))
    logger.warning(
        "Publishing below target (--allow-below-target) with nprobe %d, k_factor %d "
        "(recall@%d %.3f), marked below target in the manifest: %s",
        point.nprobe,
        point.k_factor,
        tuning.recall_k,
        point.recall,
        message,
    )
    return point


def _versions(names: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _snapshot_time(config: BuildConfig, catalog: Catalog) -> datetime:
    files = [f for f, _ in catalog.files] or [catalog.source]  # a directory: its newest file
    mtime = max(f.stat().st_mtime for f in files)
    snap = config.snapshot_at or datetime.fromtimestamp(mtime, UTC)
    return snap if snap.tzinfo else snap.replace(tzinfo=UTC)  # naive times are UTC


def _manifest(
    vectors: Vectors,
    params: IndexParams,
    tuning: Tuning,
    point: OperatingPoint,
    timings: dict[str, float],
    config: BuildConfig,
    nodes: int,
) -> Manifest:
    catalog, model = vectors.catalog, vectors.model
    n = len(catalog.records)
    paused = sum(r.status == "paused" for r in catalog.records)
    software = ["adindex", "faiss-cpu", "sentence-transformers", "torch", "numpy"]
    software += ["ray"] if config.engine == "ray" else []
    return Manifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        dimension=model.dimension,
        model=model,
        index=IndexSpec(
            factory=params.index_factory,
            nlist=params.nlist,
            train_size=params.train_size,
            seed=config.seed,
            memory_bytes_estimate=params.memory_bytes,
        ),
        search=SearchDefaults(point.nprobe, point.k_factor, DEFAULT_MIN_RERANK),
        counts=Counts(ads=n, active=n - paused, paused=paused, rejected=len(catalog.rejects)),
        catalog=CatalogInfo(str(catalog.source), catalog.sha256, _snapshot_time(config, catalog)),
        build=BuildInfo(
            dict(timings),
            config.threads,
            platform.node(),
            _versions(software),
            engine=config.engine,
            nodes=nodes,
        ),
        quality=replace(tuning.to_quality(max_memory_mb=config.max_memory_mb), chosen=point),
        embedding=vectors.embedding,
    )
