"""Row-by-row validation of a catalog: ``Builder`` turns JSON-like rows into a ``Catalog``.

It knows nothing of file formats (those are in ``indexer.catalog_formats``), so every format
shares one set of checks and messages. ``RowBuilder`` holds what any keyed table with text or
embeddings shares (ids, duplicates, text, embeddings, whole-file checks, skip or raise); the
ad catalog's ``Builder`` and the pin table's ``indexer.pins.PinBuilder`` add their own fields.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from indexer.records import (
    DEFAULT_TEXT_FIELDS,
    EVERYWHERE,
    FILE_FIELD,
    STATUSES,
    AdRecord,
    Catalog,
    CatalogError,
    Problem,
    Status,
    Targeting,
    parse_targeting,
    type_name,
)

# Log as the public reader: callers (and tests) filter on "indexer.catalog".
logger = logging.getLogger("indexer.catalog")

_STATUS: dict[str, Status] = {"active": "active", "paused": "paused"}
_MAX_CACHED = 100_000  # distinct targeting values parsed once each
_RECORD = "<record>"


@dataclass(frozen=True, slots=True)
class BadCell:
    """A cell that could not even be decoded (CSV/Parquet text); the message says why."""

    message: str


def _vector(value: object) -> tuple[np.ndarray | None, str]:
    """A JSON array of numbers as a 1-D float64 array, or None and the reason."""
    if not isinstance(value, list | tuple):
        return None, f"expected an array of numbers, got {type_name(value)}"
    if not value:
        return None, "empty array"
    try:
        a = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None, "expected a flat array of numbers"
    if a.ndim != 1 or a.dtype.kind not in "iuf":
        return None, "expected a flat array of numbers"
    return a, ""


def _first_non_finite(x: np.ndarray, original: np.ndarray | None = None) -> str:
    i = int(np.flatnonzero(~np.isfinite(x))[0])
    value = (x if original is None else original)[i]
    return f"value at index {i} ({value}) is not a finite float32"


R = TypeVar("R")


class RowBuilder(ABC, Generic[R]):
    """Validates rows of one keyed table one at a time; knows nothing of file formats.

    Subclasses name their columns (``REQUIRED``, ``FIELDS``, ``ENCODED``: read by the format
    readers), their key (``ID_FIELD``) and define ``add``, which calls :meth:`_begin`, checks
    the row, then :meth:`_end` with its record (None when the row has problems).
    """

    REQUIRED: tuple[str, ...] = ()  # columns a header must have
    FIELDS: frozenset[str] = frozenset()  # known columns; others are ignored (and logged)
    ENCODED: tuple[str, ...] = ("embedding",)  # columns that hold JSON or number text in CSV
    ID_FIELD = ""
    EMPTY = "the file has no valid rows"  # the whole-file problem when no row is valid

    def __init__(self, source: Path, text_fields: tuple[str, ...]) -> None:
        self.source = source
        self._path = str(source)
        self.text_fields = text_fields
        self._problems: list[Problem] = []
        self._records: list[R | None] = []  # None: the row has problems
        self._lines: list[int] = []
        self._ids: list[str | None] = []
        self._bad: set[int] = set()
        self._no_text: list[int] = []
        self._first_line: dict[str, int] = {}
        # Most ads share a few targetings: parse each distinct one once, and share the object.
        self._targetings: dict[str, tuple[Targeting, list[tuple[str, str]]]] = {}
        self._vectors: list[np.ndarray | None] = []  # None: no embedding in the row
        self._xb: np.ndarray | None = None  # set by the Parquet fast path instead of _vectors
        self._dim: tuple[int, int] | None = None  # (d, line of the row that set it)
        self._bad_matrix: list[int] = []
        self._has_embeddings = False
        # Parquet has rows, not lines: messages that point at another row say which.
        self._unit = "row" if source.suffix.lower() == ".parquet" else "line"
        self.unknown: set[str] = set()
        # The row being added: every problem names it.
        self._row, self._line, self._ad_id = 0, 0, ""

    def problem(self, field: str, message: str) -> None:
        """Record a problem of the row being added."""
        self._problems.append(Problem(self._path, self._line, field, message, self._ad_id or None))
        self._bad.add(self._row)

    def malformed(self, line: int, message: str) -> None:
        """A line that is not a row at all (not JSON, wrong number of CSV cells)."""
        self._problems.append(Problem(self._path, line, _RECORD, message))

    def file_error(self, line: int, field: str, message: str) -> CatalogError:
        return CatalogError([Problem(self._path, line, field, message)], self.source)

    @abstractmethod
    def add(self, line: int, obj: Mapping[str, object]) -> None:
        """Validate one row (JSON-like values) and keep it, with its problems."""

    def _begin(self, line: int, obj: Mapping[str, object]) -> tuple[str | None, int]:
        """Start a row: check its key (present, unique); returns (key, problems so far)."""
        self._row, self._line, self._ad_id = len(self._records), line, ""
        n_problems = len(self._problems)
        key = self._ident(self.ID_FIELD, obj.get(self.ID_FIELD))
        if key is not None:
            self._ad_id = key
            first = self._first_line.setdefault(key, line)
            if first != line:
                self.problem(
                    self.ID_FIELD,
                    f"duplicate {self.ID_FIELD} {key!r} (first seen at {self._unit} {first})",
                )
        return key, n_problems

    def _end(self, line: int, key: str | None, record: R | None, n_problems: int) -> None:
        """Keep the row: its record only if checking it found no problem."""
        self._lines.append(line)
        self._ids.append(key)
        self._records.append(record if len(self._problems) == n_problems else None)

    def _ident(self, name: str, value: object) -> str | None:
        if type(value) is str:
            if stripped := value.strip():
                return stripped
            message = "must not be empty"
        elif type(value) is int:
            return str(value)
        elif value is None:
            message = "required"
        else:
            message = f"expected a string or integer, got {type_name(value)}"
        self.problem(name, message)
        return None

    def _texts(self, obj: Mapping[str, object], names: tuple[str, ...]) -> list[str]:
        """The row's text fields ``names`` ("" when absent), checked to be strings."""
        out = [""] * len(names)
        has_text = False
        for i, name in enumerate(names):
            value = obj.get(name)
            if value is None:
                continue
            if type(value) is not str:
                self.problem(name, f"expected a string, got {type_name(value)}")
                continue
            out[i] = value
            if not has_text and value and not value.isspace() and name in self.text_fields:
                has_text = True
        if not has_text:
            self._no_text.append(self._row)  # an error only if the catalog has no embeddings
        return out

    def _embedding(self, value: object) -> None:
        if value is None:
            self._vectors.append(None)
            return
        self._has_embeddings = True
        self._vectors.append(_NO_VECTOR)  # replaced below when the vector is valid
        if isinstance(value, BadCell):
            self.problem("embedding", value.message)
            return
        a, reason = _vector(value)
        if a is None:
            self.problem("embedding", reason)
            return
        if self._dim is None:
            self._dim = (len(a), self._line)
        elif len(a) != self._dim[0]:
            d, line = self._dim
            self.problem(
                "embedding", f"dimension {len(a)}, expected {d} (as at {self._unit} {line})"
            )
            return
        with np.errstate(over="ignore", invalid="ignore"):  # too large for float32 -> inf, below
            x = a.astype(np.float32)
        if not np.isfinite(x).all():
            self.problem("embedding", _first_non_finite(x, a))
            return
        self._vectors[-1] = x

    def set_matrix(self, xb: np.ndarray) -> None:
        """Embeddings of all rows at once (before any row is added); non-finite rows are flagged."""
        self._xb, self._has_embeddings = xb, True
        self._bad_matrix = np.flatnonzero(~np.isfinite(xb).all(axis=1)).tolist()

    def _keep(self, *, skip_invalid: bool) -> tuple[list[int], list[Problem]]:
        """Apply the whole-file checks, then raise, or return the good rows and all problems."""
        self._whole_file_checks()
        problems = sorted(self._problems, key=lambda p: p.line)  # stable: fields stay in order
        if problems and not skip_invalid:
            raise CatalogError(problems, self.source)
        keep = [i for i, r in enumerate(self._records) if r is not None and i not in self._bad]
        if not keep:
            n_rows = len(self._records) + self._n_malformed()
            what = f"{n_rows} row(s), none valid" if n_rows else "no rows"
            empty = Problem(self._path, 0, FILE_FIELD, f"{self.EMPTY} ({what})")
            raise CatalogError([*problems, empty], self.source)
        if problems:
            logger.warning(
                "%s: skipped %d invalid row(s) with %d problem(s); kept %d",
                self.source,
                len(self._records) - len(keep) + self._n_malformed(),
                len(problems),
                len(keep),
            )
        return keep, problems

    def _kept(self, keep: list[int]) -> list[R]:
        return [r for i in keep if (r := self._records[i]) is not None]

    def _n_malformed(self) -> int:
        return sum(p.field == _RECORD for p in self._problems)

    def _whole_file_checks(self) -> None:
        if self.unknown:
            logger.info(
                "%s: ignoring unknown field(s): %s", self.source, ", ".join(sorted(self.unknown))
            )
        late: list[tuple[int, str, str]] = []  # (row, field, message)
        if self._xb is not None:
            late += [(i, "embedding", _first_non_finite(self._xb[i])) for i in self._bad_matrix]
        elif self._has_embeddings:
            first = next(self._lines[i] for i, v in enumerate(self._vectors) if v is not None)
            message = f"missing, but other rows carry embeddings (first at {self._unit} {first})"
            late += [(i, "embedding", message) for i, v in enumerate(self._vectors) if v is None]
        else:
            late += [(i, "text", _no_text(self.text_fields)) for i in self._no_text]
        for i, name, message in late:
            self._row, self._line, self._ad_id = i, self._lines[i], self._ids[i] or ""
            self.problem(name, message)

    def _embeddings(self, keep: list[int]) -> np.ndarray | None:
        if not self._has_embeddings:
            return None
        if self._xb is not None:
            return self._xb if len(keep) == len(self._xb) else self._xb[keep]
        if not keep:  # a file of a directory catalog may have no valid row
            return np.empty((0, self._dim[0] if self._dim else 0), dtype=np.float32)
        return np.stack([v for i in keep if (v := self._vectors[i]) is not None])


class Builder(RowBuilder[AdRecord]):
    """Validates ad rows one at a time and assembles the Catalog."""

    REQUIRED = ("ad_id", "advertiser_id", "campaign_id", "status")
    FIELDS = frozenset((*REQUIRED, *DEFAULT_TEXT_FIELDS, "targeting", "bid", "embedding"))
    ENCODED = ("targeting", "bid", "embedding")
    ID_FIELD = "ad_id"
    EMPTY = "the catalog has no valid ad records"

    def add(self, line: int, obj: Mapping[str, object]) -> None:
        """Validate one row (JSON-like values) and keep it, with its problems."""
        ad_id, n_problems = self._begin(line, obj)
        advertiser_id = self._ident("advertiser_id", obj.get("advertiser_id"))
        campaign_id = self._ident("campaign_id", obj.get("campaign_id"))
        title, description, creative_text = self._texts(obj, DEFAULT_TEXT_FIELDS)
        targeting = self._targeting(obj.get("targeting"))
        status = self._status(obj.get("status"))
        bid = self._bid(obj.get("bid"))
        if self._xb is None:
            self._embedding(obj.get("embedding"))
        record = None
        if ad_id is not None and advertiser_id is not None and campaign_id is not None and status:
            record = AdRecord(
                ad_id, advertiser_id, campaign_id, title, description, creative_text,
                targeting, status, bid,
            )  # fmt: skip
        self._end(line, ad_id, record, n_problems)

    def _status(self, value: object) -> Status | None:
        if type(value) is str and (status := _STATUS.get(value.strip().lower())):
            return status
        expected = f"expected one of {', '.join(STATUSES)}"
        if value is None or value == "":
            self.problem("status", f"required ({expected})")
        else:
            self.problem("status", f"{value!r}: {expected}")
        return None

    def _bid(self, value: object) -> float | None:
        if value is None:
            return None
        if isinstance(value, BadCell):
            self.problem("bid", value.message)
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem("bid", f"expected a number, got {type_name(value)}")
            return None
        bid = float(value) if abs(value) < 1e300 else math.inf  # float(10**400) would raise
        if not (math.isfinite(bid) and bid >= 0):
            self.problem("bid", f"must be finite and >= 0; got {value!r}")
            return None
        return bid

    def _targeting(self, value: object) -> Targeting:
        if value is None:
            return EVERYWHERE
        if isinstance(value, BadCell):
            self.problem("targeting", value.message)
            return EVERYWHERE
        key = repr(value)  # JSON-like values: equal reprs mean equal values
        if (parsed := self._targetings.get(key)) is None:
            parsed = parse_targeting(value)
            if len(self._targetings) < _MAX_CACHED:
                self._targetings[key] = parsed
        for name, message in parsed[1]:
            self.problem(name, message)
        return parsed[0]

    def finish(self, sha256: str, *, skip_invalid: bool) -> Catalog:
        """Apply the whole-file checks, then raise, or return the catalog of good rows."""
        return decide([self.part(sha256)], self.source, sha256, skip_invalid=skip_invalid)

    def part(self, sha256: str) -> CatalogPart:
        """The file's valid rows and all its problems (whole-file checks done), undecided."""
        self._whole_file_checks()
        keep = [i for i, r in enumerate(self._records) if r is not None and i not in self._bad]
        return CatalogPart(
            source=self.source,
            sha256=sha256,
            records=[r for i in keep if (r := self._records[i]) is not None],
            rows=keep,
            embeddings=self._embeddings(keep),
            problems=sorted(self._problems, key=lambda p: p.line),  # stable: fields stay in order
            ids=self._ids,
            lines=self._lines,
            n_malformed=self._n_malformed(),
        )


_NO_VECTOR = np.empty(0, dtype=np.float32)  # the row had an embedding, but not a valid one


@dataclass
class CatalogPart:
    """One catalog file with every row checked and nothing decided yet (:func:`decide` does).

    Picklable: the Ray build reads the files of a catalog in parallel tasks and decides on the
    driver, with the same function as a local build.
    """

    source: Path
    sha256: str
    records: list[AdRecord]  # the valid rows, in file order
    rows: list[int]  # row index (in ``ids``/``lines``) of each record
    embeddings: np.ndarray | None  # (len(records), d) float32 when the file carries embeddings
    problems: list[Problem]  # sorted by line
    ids: list[str | None]  # ad_id of every row (None: unreadable), for duplicates across files
    lines: list[int]  # line (Parquet: row) of every row
    n_malformed: int  # lines that were not rows at all

    def where(self, row: int) -> str:
        unit = "row" if self.source.suffix.lower() == ".parquet" else "line"
        return f"{self.source} {unit} {self.lines[row]}"


def decide(parts: list[CatalogPart], source: Path, sha256: str, *, skip_invalid: bool) -> Catalog:
    """The catalog of the parts' good rows, or CatalogError with every problem.

    Files of a directory catalog are one catalog: an ad_id seen in an earlier file is a
    duplicate, and embeddings come with every file or none, of one dimension.

    Args:
        parts: the files, in catalog order (one for a single-file catalog).
        source: the catalog (the file, or the directory).
        sha256: of the file, or of a directory's files (``indexer.catalog``).
        skip_invalid: set bad rows aside in ``rejects`` instead of raising.
    """
    extra, dropped = _across_files(parts) if len(parts) > 1 else ([[]], [set()])
    problems = [
        p
        for part, more in zip(parts, extra, strict=True)
        for p in sorted([*part.problems, *more], key=lambda p: p.line)
    ]
    if problems and not skip_invalid:
        raise CatalogError(problems, source)
    kept = [
        [j for j in range(len(part.records)) if j not in drop]
        for part, drop in zip(parts, dropped, strict=True)
    ]
    n_kept = sum(map(len, kept))
    n_rows = sum(len(part.ids) + part.n_malformed for part in parts)
    if not n_kept:
        what = f"{n_rows} row(s), none valid" if n_rows else "no rows"
        empty = Problem(str(source), 0, FILE_FIELD, f"the catalog has no valid ad records ({what})")
        raise CatalogError([*problems, empty], source)
    if problems:
        logger.warning(
            "%s: skipped %d invalid row(s) with %d problem(s); kept %d",
            source,
            n_rows - n_kept,
            len(problems),
            n_kept,
        )
    logger.info("Read %d ads from %s", n_kept, source)
    matrices = [
        part.embeddings if len(keep) == len(part.records) else part.embeddings[keep]
        for part, keep in zip(parts, kept, strict=True)
        if part.embeddings is not None and keep
    ]
    return Catalog(
        [part.records[j] for part, keep in zip(parts, kept, strict=True) for j in keep],
        (matrices[0] if len(matrices) == 1 else np.concatenate(matrices)) if matrices else None,
        problems,
        source,
        sha256,
        [part.lines[part.rows[j]] for part, keep in zip(parts, kept, strict=True) for j in keep],
        # A directory's files, even just one: locations and the snapshot time name the file.
        [(part.source, len(keep)) for part, keep in zip(parts, kept, strict=True)]
        if source.is_dir()
        else [],
    )


def _across_files(parts: list[CatalogPart]) -> tuple[list[list[Problem]], list[set[int]]]:
    """Problems between files, per part, and the records (index into ``records``) they reject."""
    extra: list[list[Problem]] = [[] for _ in parts]
    dropped: list[set[int]] = [set() for _ in parts]
    record_of = [dict(zip(part.rows, range(len(part.rows)), strict=True)) for part in parts]
    first: dict[str, tuple[int, int]] = {}  # ad_id -> (part, row) where it was first seen
    for k, part in enumerate(parts):
        for row, ad_id in enumerate(part.ids):
            if ad_id is None:
                continue
            seen = first.setdefault(ad_id, (k, row))
            if seen[0] != k:
                where = parts[seen[0]].where(seen[1])
                message = f"duplicate ad_id {ad_id!r} (first seen at {where})"
                extra[k].append(Problem(str(part.source), part.lines[row], "ad_id", message, ad_id))
                if (j := record_of[k].get(row)) is not None:
                    dropped[k].add(j)
    with_vectors = [part for part in parts if part.embeddings is not None and part.records]
    if not with_vectors:
        return extra, dropped
    ref = with_vectors[0]
    d, where = ref.embeddings.shape[1] if ref.embeddings is not None else 0, ref.where(ref.rows[0])
    for k, part in enumerate(parts):
        if part.embeddings is None:
            message = f"missing, but other files carry embeddings (first at {where})"
        elif part.embeddings.shape[1] != d:
            message = f"dimension {part.embeddings.shape[1]}, expected {d} (as at {where})"
        else:
            continue
        for j, (row, r) in enumerate(zip(part.rows, part.records, strict=True)):
            extra[k].append(
                Problem(str(part.source), part.lines[row], "embedding", message, r.ad_id)
            )
            dropped[k].add(j)
    return extra, dropped


def _no_text(text_fields: tuple[str, ...]) -> str:
    return f"no text to embed: {', '.join(text_fields)} all empty, no embedding"


def validate_row(
    obj: Mapping[str, object], *, text_fields: tuple[str, ...], needs_text: bool
) -> tuple[AdRecord | None, list[Problem]]:
    """One ad outside a catalog file (an admin upsert) through the same checks as a catalog row.

    Args:
        obj: JSON-like fields, as a catalog row holds them (embedding excluded).
        text_fields: the fields this index embeds.
        needs_text: whether one of ``text_fields`` must hold text (no embedding comes with it).

    Returns:
        (record, []) when valid, else (None, problems); problems name the field.
    """
    builder = Builder(Path("<request>"), text_fields)
    builder.add(1, obj)
    if needs_text and builder._no_text:
        builder.problem("text", _no_text(text_fields))
    record = builder._records[0]
    return (
        (record, []) if record is not None and not builder._problems else (None, builder._problems)
    )
