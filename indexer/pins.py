"""Pins as first-class data: a pin table read like a catalog, embedded like ads, published inside
the same version, so pins and ads always share one embedding space.

A pins file (JSONL, CSV or Parquet, read by the catalog's own format readers and row checks)
holds ``pin_id`` (required, unique), ``title``, ``description`` and optionally ``embedding``
(all rows or none, in the ads' space). Bad rows are listed by file, line and field, like a
catalog's; the build publishes nothing unless it runs with ``--skip-invalid``.

In a version (``indexer.artifact``)::

    pins.jsonl              one line per pin: {"pin_id", "title"}; row i = pin i
    pin_embeddings.npy      (m, d) float32 unit rows, same model and dimension as the ads
    pin_rejects.jsonl       only with --skip-invalid and bad pin rows

The manifest's ``pins`` section (``indexer.manifest.PinsInfo``) records count, model, dimension,
text fields and files; :func:`load_pins` refuses a table whose model or dimension differ from
the ads'.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from indexer.ann import normalize
from indexer.catalog import check_format, read_rows
from indexer.catalog_validation import RowBuilder
from indexer.embedding import Embedder
from indexer.manifest import Manifest, ModelInfo, PinsInfo
from indexer.records import PIN_TEXT_FIELDS, CatalogError, Problem

PINS_FILE = "pins.jsonl"
PIN_EMBEDDINGS_FILE = "pin_embeddings.npy"
PIN_REJECTS_FILE = "pin_rejects.jsonl"


class PinsError(ValueError):
    """A pin table that cannot join this version (model, dimension); the message says why."""


@dataclass(frozen=True, slots=True)
class PinRecord:
    """One validated pin of a pins file."""

    pin_id: str
    title: str = ""
    description: str = ""

    def text(self, fields: Sequence[str] = PIN_TEXT_FIELDS, sep: str = ". ") -> str:
        """The text to embed: the non-empty stripped ``fields`` joined by ``sep``."""
        parts = (str(getattr(self, name)).strip() for name in check_pin_text_fields(fields))
        return sep.join(p for p in parts if p)


@dataclass
class PinFile:
    """The valid pins of a pins file, in file order (like ``indexer.records.Catalog``)."""

    records: list[PinRecord]
    embeddings: np.ndarray | None  # (m, d) float32, row i = records[i]; None: text only
    rejects: list[Problem]
    source: Path
    sha256: str
    lines: list[int]


def check_pin_text_fields(fields: Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str) or not fields or any(f not in PIN_TEXT_FIELDS for f in fields):
        raise ValueError(
            f"pin text fields must be a non-empty subset of {PIN_TEXT_FIELDS}; got {fields!r}"
        )
    return tuple(fields)


class PinBuilder(RowBuilder[PinRecord]):
    """The catalog's row checks (ids, duplicates, text, embeddings) for pin rows."""

    REQUIRED = ("pin_id",)
    FIELDS = frozenset(("pin_id", *PIN_TEXT_FIELDS, "embedding"))
    ENCODED = ("embedding",)
    ID_FIELD = "pin_id"
    EMPTY = "the pins file has no valid pins"

    def add(self, line: int, obj: Mapping[str, object]) -> None:
        """Validate one row (JSON-like values) and keep it, with its problems."""
        pin_id, n_problems = self._begin(line, obj)
        title, description = self._texts(obj, PIN_TEXT_FIELDS)
        if self._xb is None:
            self._embedding(obj.get("embedding"))
        record = PinRecord(pin_id, title, description) if pin_id is not None else None
        self._end(line, pin_id, record, n_problems)

    def finish(self, sha256: str, *, skip_invalid: bool) -> PinFile:
        keep, problems = self._keep(skip_invalid=skip_invalid)
        return PinFile(
            self._kept(keep),
            self._embeddings(keep),
            problems,
            self.source,
            sha256,
            [self._lines[i] for i in keep],
        )


def read_pins(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    text_fields: Sequence[str] = PIN_TEXT_FIELDS,
) -> PinFile:
    """Read and validate a pins file (.jsonl/.ndjson, .csv or .parquet, by suffix).

    Raises:
        CatalogError: listing every problem (file, line, field), unless ``skip_invalid``; or
            when no valid pin is left.
    """
    source = Path(path)
    check_format(source)
    builder = PinBuilder(source, check_pin_text_fields(text_fields))
    return builder.finish(read_rows(source, builder), skip_invalid=skip_invalid)


def embed_pins(
    pins: PinFile,
    model: ModelInfo,
    embedder: Embedder | None,
    *,
    text_fields: Sequence[str] = PIN_TEXT_FIELDS,
) -> tuple[np.ndarray, PinsInfo]:
    """The pins' vectors in the ads' space, and the manifest section describing them.

    Args:
        pins: the validated pins file.
        model: how the version's ads were embedded (name and dimension are shared).
        embedder: the model that embedded the ads' text (None when the ads came with
            precomputed embeddings and no model was given).
        text_fields: pin fields embedded, in order.

    Returns:
        (xp, info): xp (m, d) float32 unit rows, row i = ``pins.records[i]``.

    Raises:
        CatalogError: precomputed pin embeddings of another dimension than the ads'.
        PinsError: pins that need embedding, but no model embedded the ads.
    """
    fields = check_pin_text_fields(text_fields)
    if pins.embeddings is not None:
        xp = normalize(pins.embeddings, inplace=True)
        if xp.shape[1] != model.dimension:
            message = f"dimension {xp.shape[1]} differs from the ads' ({model.dimension})"
            problem = Problem(str(pins.source), pins.lines[0], "embedding", message)
            raise CatalogError([problem], pins.source)
        source: Literal["text", "catalog embeddings"] = "catalog embeddings"
    else:
        if embedder is None:
            raise PinsError(
                f"{pins.source}: the pins have no embeddings and the ads were not embedded by a "
                "model (precomputed catalog embeddings, no --model): pass --model (the model "
                "behind the ad embeddings) or give every pin an embedding"
            )
        if embedder.model_name != model.name or embedder.dimension != model.dimension:
            raise PinsError(
                f"{pins.source}: the pins' model {embedder.model_name} "
                f"({embedder.dimension}-d) is not the ads' {model.name} ({model.dimension}-d)"
            )
        texts = [p.text(fields, model.text_separator) for p in pins.records]
        xp = embedder.encode(texts, progress=True)
        source = "text"
    files = (PINS_FILE, PIN_EMBEDDINGS_FILE) + ((PIN_REJECTS_FILE,) if pins.rejects else ())
    info = PinsInfo(
        count=len(pins.records),
        model=model.name,
        dimension=int(xp.shape[1]),
        source=source,
        path=str(pins.source),
        sha256=pins.sha256,
        files=files,
        text_fields=fields,
        text_separator=model.text_separator,
        rejected=len(pins.rejects),
    )
    return xp, info


def write_pins(staged: Path, pins: PinFile, xp: np.ndarray) -> None:
    """Write the pin table files into a staged version directory."""
    with (staged / PINS_FILE).open("w", encoding="utf-8") as f:
        for p in pins.records:
            obj = {"pin_id": p.pin_id, "title": p.title}
            f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
    np.save(staged / PIN_EMBEDDINGS_FILE, np.ascontiguousarray(xp, dtype=np.float32))
    if pins.rejects:
        with (staged / PIN_REJECTS_FILE).open("w", encoding="utf-8") as f:
            for problem in pins.rejects:
                obj = dataclasses.asdict(problem)
                obj["pin_id"] = obj.pop("ad_id")  # Problem names a row's key ad_id
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class PinTable:
    """The pins of a loaded version; row i of ``embeddings`` is ``pin_ids[i]``."""

    pin_ids: list[str]
    titles: list[str]
    embeddings: np.ndarray  # (m, d) float32 unit rows, memory-mapped read-only
    row_of: dict[str, int]

    def __len__(self) -> int:
        return len(self.pin_ids)

    def lookup(self, pin_ids: Sequence[str]) -> tuple[list[int], list[str]]:
        """(rows of the known ids, in order; the unknown ids, in order)."""
        rows, unknown = [], []
        for pin_id in pin_ids:
            row = self.row_of.get(pin_id)
            if row is None:
                unknown.append(pin_id)
            else:
                rows.append(row)
        return rows, unknown


def load_pins(version_dir: Path, manifest: Manifest) -> PinTable | None:
    """The version's pin table (None without one), checked against the ads' model.

    Files were already checksummed against the manifest (``indexer.artifact.verify``).

    Raises:
        PinsError: model or dimension differ from the ads', or the files from the manifest.
    """
    info = manifest.pins
    if info is None:
        return None
    if info.model != manifest.model.name or info.dimension != manifest.dimension:
        raise PinsError(
            f"{version_dir}: pins embedded with {info.model} ({info.dimension}-d), ads with "
            f"{manifest.model.name} ({manifest.dimension}-d): they must share one space"
        )
    with (version_dir / PINS_FILE).open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    xp = np.load(version_dir / PIN_EMBEDDINGS_FILE, mmap_mode="r")
    if (
        xp.dtype != np.float32
        or xp.shape != (info.count, info.dimension)
        or len(rows) != info.count
    ):
        raise PinsError(
            f"{version_dir}: inconsistent pin table: {len(rows)} pins, embeddings {xp.shape} "
            f"{xp.dtype}, manifest says {info.count} x {info.dimension} float32"
        )
    pin_ids = [r["pin_id"] for r in rows]
    return PinTable(
        pin_ids, [r.get("title", "") for r in rows], xp, {p: i for i, p in enumerate(pin_ids)}
    )
