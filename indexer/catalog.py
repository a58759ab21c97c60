"""Read and validate ad catalogs (JSONL, CSV, Parquet) into ``AdRecord``s.

Every row is checked and every problem collected (file, line, field) before anything is decided:
problems raise ``CatalogError`` listing all of them, or with ``skip_invalid`` the bad rows go to
``Catalog.rejects``. No row is dropped silently. Fields, as JSONL keys, CSV or Parquet columns:
ids (required), title/description/creative_text, status (required), targeting (JSON object;
JSON text in CSV; struct or JSON text in Parquet), bid, embedding (all rows or none).

Lines: JSONL and CSV give the physical line where the row starts (CSV header = line 1), Parquet
the 1-based row number; line 0 is the file as a whole.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

STATUSES = ("active", "paused")
DEVICES = ("mobile", "tablet", "desktop")
DEFAULT_TEXT_FIELDS = ("title", "description", "creative_text")

Status = Literal["active", "paused"]
_STATUS: dict[str, Status] = {"active": "active", "paused": "paused"}
_REQUIRED = ("ad_id", "advertiser_id", "campaign_id", "status")
_FIELDS = frozenset((*_REQUIRED, *DEFAULT_TEXT_FIELDS, "targeting", "bid", "embedding"))
_TARGETING_KEYS = ("countries", "locales", "devices")
_ENCODED = ("targeting", "bid", "embedding")  # columns that hold JSON or number text in CSV
_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")
_MAX_LISTED = 50
_MAX_CACHED = 100_000  # distinct targeting values parsed once each
_RECORD = "<record>"
_FILE = "<file>"
_JSON = json.JSONDecoder()
# Language (2-3 letters), then an optional region: 2 letters or a UN M.49 area ("es-419").
_LOCALE = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{2}|[0-9]{3}))?")


@dataclass(frozen=True, slots=True)
class Targeting:
    """Where an ad may be shown; an empty tuple means no restriction on that dimension.

    Build it with ``from_json`` to get validated, normalised values.
    """

    countries: tuple[str, ...] = ()  # ISO 3166-1 alpha-2, upper case: "US"
    locales: tuple[str, ...] = ()  # "en-US" (language lower, region upper) or language only: "en"
    devices: tuple[str, ...] = ()  # subset of DEVICES

    def to_json(self) -> dict[str, list[str]]:
        """The JSON form that ``from_json`` reads back."""
        return {key: list(getattr(self, key)) for key in _TARGETING_KEYS}

    @classmethod
    def from_json(cls, obj: object) -> Targeting:
        """Validate and normalise a targeting object; ``None`` means everywhere.

        Args:
            obj: A mapping with optional keys countries, locales, devices (lists of strings).

        Returns:
            The normalised Targeting.

        Raises:
            ValueError: naming the sub-field, e.g. "targeting.devices: unknown device 'phone' ...".
        """
        targeting, errors = _parse_targeting(obj)
        if errors:
            raise ValueError("; ".join(f"{name}: {message}" for name, message in errors))
        return targeting

    def admits(self, country: str = "", locale: str = "", device: str = "") -> bool:
        """Whether a request from this country, locale and device may see the ad.

        An empty argument does not filter, and an empty targeting list admits everything.
        Locales match on the parts both sides give: targeting "en" admits "en-GB", and
        targeting "en-US" admits "en-US" and "en" (region unknown) but not "en-GB".

        Args:
            country: ISO 3166-1 alpha-2 code, any case.
            locale: "en-US", "en_us" or "en".
            device: One of DEVICES, any case.

        Returns:
            True if every given dimension is admitted.
        """
        if country and self.countries and country.upper() not in self.countries:
            return False
        if device and self.devices and device.lower() not in self.devices:
            return False
        if locale and self.locales:
            language, region = _split_locale(locale)
            return any(_locale_matches(t, language, region) for t in self.locales)
        return True


_EVERYWHERE = Targeting()


@dataclass(frozen=True, slots=True)
class AdRecord:
    """One validated ad of the catalog."""

    ad_id: str
    advertiser_id: str
    campaign_id: str
    title: str = ""
    description: str = ""
    creative_text: str = ""
    targeting: Targeting = field(default_factory=Targeting)
    status: Status = "active"
    bid: float | None = None

    def text(self, fields: Sequence[str] = DEFAULT_TEXT_FIELDS, sep: str = ". ") -> str:
        """The text to embed.

        Args:
            fields: Text fields to use, in this order (names from DEFAULT_TEXT_FIELDS).
            sep: Separator between fields.

        Returns:
            The non-empty stripped fields joined by ``sep``.
        """
        parts = (str(getattr(self, name)).strip() for name in _check_text_fields(fields))
        return sep.join(p for p in parts if p)

    def to_json(self) -> dict[str, object]:
        """A JSON-able dict of all fields, in the form the JSONL reader accepts."""
        obj = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        obj["targeting"] = self.targeting.to_json()
        return obj


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one row (or, at line 0, with the whole file)."""

    path: str
    line: int  # JSONL/CSV: physical line where the row starts; Parquet: 1-based row number
    field: str  # "ad_id", "targeting.countries", "embedding", "<record>" for a malformed row
    message: str
    ad_id: str | None = None

    def __str__(self) -> str:
        where = f"row {self.line}" if self.path.lower().endswith(".parquet") else str(self.line)
        return f"{self.path}:{where}: {self.field}: {self.message}"


@dataclass
class Catalog:
    """The valid records of a catalog file, in file order."""

    records: list[AdRecord]
    embeddings: np.ndarray | None  # (n, d) float32, row i = records[i]; None without embeddings
    rejects: list[Problem]  # problems of the rows skipped under skip_invalid
    source: Path
    sha256: str  # of the catalog file bytes
    lines: list[int]  # source line (Parquet: row) of each record, for later error messages


class CatalogError(ValueError):
    """A catalog cannot be used as it is; ``problems`` lists everything found."""

    def __init__(self, problems: list[Problem], source: Path) -> None:
        super().__init__(problems, source)  # keeps the exception picklable
        self.problems = problems
        self.source = source

    def __str__(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} invalid record(s):"]
        lines += [f"  {p}" for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            lines.append(
                f"  ... and {len(self.problems) - _MAX_LISTED} more; pass --skip-invalid "
                "to write the rejects beside the artifact and continue"
            )
        return "\n".join(lines)


def read_catalog(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
) -> Catalog:
    """Read and validate a catalog; the format follows the suffix (.jsonl/.ndjson, .csv, .parquet).

    Args:
        path: The catalog file.
        skip_invalid: Set bad rows aside in ``Catalog.rejects`` instead of raising.
        text_fields: Fields of which at least one must hold text (unless rows carry embeddings).

    Returns:
        The catalog; ``embeddings`` is (n, d) float32 when the file carries them.

    Raises:
        CatalogError: on any invalid row (unless skip_invalid), an unsupported suffix, or when
            no valid record is left.
        FileNotFoundError: if the file does not exist.
    """
    source = Path(path)
    suffix = source.suffix.lower()
    if suffix not in _SUFFIXES:
        message = f"unsupported catalog format {suffix or '(no suffix)'!r}: expected one of {', '.join(_SUFFIXES)}"
        raise CatalogError([Problem(str(source), 0, _FILE, message)], source)
    builder = _Builder(source, _check_text_fields(text_fields))
    if suffix == ".csv":
        sha256 = _read_csv(source, builder)
    elif suffix == ".parquet":
        sha256 = _read_parquet(source, builder)
    else:
        sha256 = _read_jsonl(source, builder)
    return builder.finish(sha256, skip_invalid=skip_invalid)


def write_rejects(problems: Sequence[Problem], path: Path) -> None:
    """Write problems as JSONL, one {path, line, field, message, ad_id} object per line.

    Args:
        problems: Typically ``Catalog.rejects``.
        path: The file to (over)write.
    """
    with path.open("w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps(dataclasses.asdict(p), ensure_ascii=False) + "\n")


def write_catalog_jsonl(
    records: Sequence[AdRecord], path: Path, embeddings: np.ndarray | None = None
) -> None:
    """Write records as a JSONL catalog that ``read_catalog`` reads back.

    Args:
        records: The ads, in order.
        path: The .jsonl file to (over)write.
        embeddings: Optional vectors, shape (len(records), d), written as each row's "embedding".
    """
    if embeddings is not None and (embeddings.ndim != 2 or len(embeddings) != len(records)):
        raise ValueError(
            f"embeddings must have shape ({len(records)}, d) to match the records; got {embeddings.shape}"
        )
    with path.open("w", encoding="utf-8") as f:
        for i, record in enumerate(records):
            obj = record.to_json()
            if embeddings is not None:
                obj["embedding"] = embeddings[i].astype(np.float32).tolist()
            f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


# --- Validation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bad:
    """A cell that could not even be decoded (CSV/Parquet text); the message says why."""

    message: str


def _check_text_fields(fields: Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str) or not fields or any(f not in DEFAULT_TEXT_FIELDS for f in fields):
        raise ValueError(
            f"text fields must be a non-empty subset of {DEFAULT_TEXT_FIELDS}; got {fields!r}"
        )
    return tuple(fields)


_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string"}
_JSON_TYPES.update({list: "array", tuple: "array", dict: "object"})


def _type_name(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


@lru_cache(maxsize=4096)
def _split_locale(locale: str) -> tuple[str, str]:
    """(language lower, region upper or ""); unparseable input stays as given, lower-cased."""
    m = _LOCALE.fullmatch(locale.strip())
    if m is None:
        return locale.strip().lower(), ""
    return m.group(1).lower(), (m.group(2) or "").upper()


def _locale_matches(target: str, language: str, region: str) -> bool:
    t_language, _, t_region = target.partition("-")
    return t_language == language and (not t_region or not region or t_region == region)


def _normalise(key: str, value: str) -> str | None:
    """A targeting value in canonical form ("US", "en-US", "mobile"), or None if invalid."""
    value = value.strip()
    if key == "countries":
        code = value.upper()
        return code if len(code) == 2 and code.isascii() and code.isalpha() else None
    if key == "devices":
        return value.lower() if value.lower() in DEVICES else None
    if _LOCALE.fullmatch(value) is None:
        return None
    language, region = _split_locale(value)
    return f"{language}-{region}" if region else language


_TARGETING_MESSAGES = {
    "countries": "{!r} is not a 2-letter ISO 3166-1 alpha-2 country code",
    "locales": "{!r} is not a locale like 'en' or 'en-US'",
    "devices": f"unknown device {{!r}} (expected one of {', '.join(DEVICES)})",
}


def _parse_targeting(obj: object) -> tuple[Targeting, list[tuple[str, str]]]:
    """Normalise a targeting object; returns it with (field, message) for each problem."""
    if obj is None:
        return _EVERYWHERE, []
    if not isinstance(obj, Mapping):
        return _EVERYWHERE, [("targeting", f"expected an object, got {_type_name(obj)}")]
    errors = [
        ("targeting", f"unknown key {key!r} (expected {', '.join(_TARGETING_KEYS)})")
        for key in obj
        if key not in _TARGETING_MESSAGES
    ]
    values: list[tuple[str, ...]] = []
    for key, template in _TARGETING_MESSAGES.items():
        name, raw, out = f"targeting.{key}", obj.get(key), []
        items: Sequence[object] = ()
        if isinstance(raw, list | tuple):
            items = raw
        elif raw is not None:
            errors.append((name, f"expected an array of strings, got {_type_name(raw)}"))
        for i, item in enumerate(items):
            if not isinstance(item, str):
                errors.append(
                    (name, f"expected an array of strings, got {_type_name(item)} at index {i}")
                )
            elif (value := _normalise(key, item)) is None:
                errors.append((name, template.format(item)))
            elif value not in out:
                out.append(value)
        values.append(tuple(out))
    if not any(values):
        return _EVERYWHERE, errors
    return Targeting(*values), errors


def _vector(value: object) -> tuple[np.ndarray | None, str]:
    """A JSON array of numbers as a 1-D float64 array, or None and the reason."""
    if not isinstance(value, list | tuple):
        return None, f"expected an array of numbers, got {_type_name(value)}"
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


class _Builder:
    """Validates rows one at a time and assembles the Catalog; knows nothing of file formats."""

    def __init__(self, source: Path, text_fields: tuple[str, ...]) -> None:
        self.source = source
        self._path = str(source)
        self.text_fields = text_fields
        self._problems: list[Problem] = []
        self._records: list[AdRecord | None] = []  # None: the row has problems
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

    def add(self, line: int, obj: Mapping[str, object]) -> None:
        """Validate one row (JSON-like values) and keep it, with its problems."""
        self._row, self._line, self._ad_id = len(self._records), line, ""
        n_problems = len(self._problems)
        ad_id = self._ident("ad_id", obj.get("ad_id"))
        if ad_id is not None:
            self._ad_id = ad_id
            first = self._first_line.setdefault(ad_id, line)
            if first != line:
                self.problem(
                    "ad_id", f"duplicate ad_id {ad_id!r} (first seen at {self._unit} {first})"
                )
        advertiser_id = self._ident("advertiser_id", obj.get("advertiser_id"))
        campaign_id = self._ident("campaign_id", obj.get("campaign_id"))
        texts = self._texts(obj)
        targeting = self._targeting(obj.get("targeting"))
        status = self._status(obj.get("status"))
        bid = self._bid(obj.get("bid"))
        if self._xb is None:
            self._embedding(obj.get("embedding"))
        self._lines.append(line)
        self._ids.append(ad_id)
        if (
            len(self._problems) > n_problems
            or ad_id is None
            or advertiser_id is None
            or campaign_id is None
            or status is None
        ):
            self._records.append(None)
            return
        record = AdRecord(ad_id, advertiser_id, campaign_id, *texts, targeting, status, bid)
        self._records.append(record)

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
            message = f"expected a string or integer, got {_type_name(value)}"
        self.problem(name, message)
        return None

    def _texts(self, obj: Mapping[str, object]) -> tuple[str, str, str]:
        out = ["", "", ""]
        has_text = False
        for i, name in enumerate(DEFAULT_TEXT_FIELDS):
            value = obj.get(name)
            if value is None:
                continue
            if type(value) is not str:
                self.problem(name, f"expected a string, got {_type_name(value)}")
                continue
            out[i] = value
            if not has_text and value and not value.isspace() and name in self.text_fields:
                has_text = True
        if not has_text:
            self._no_text.append(self._row)  # an error only if the catalog has no embeddings
        return out[0], out[1], out[2]

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
        if isinstance(value, _Bad):
            self.problem("bid", value.message)
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem("bid", f"expected a number, got {_type_name(value)}")
            return None
        bid = float(value) if abs(value) < 1e300 else math.inf  # float(10**400) would raise
        if not (math.isfinite(bid) and bid >= 0):
            self.problem("bid", f"must be finite and >= 0; got {value!r}")
            return None
        return bid

    def _targeting(self, value: object) -> Targeting:
        if value is None:
            return _EVERYWHERE
        if isinstance(value, _Bad):
            self.problem("targeting", value.message)
            return _EVERYWHERE
        key = repr(value)  # JSON-like values: equal reprs mean equal values
        if (parsed := self._targetings.get(key)) is None:
            parsed = _parse_targeting(value)
            if len(self._targetings) < _MAX_CACHED:
                self._targetings[key] = parsed
        for name, message in parsed[1]:
            self.problem(name, message)
        return parsed[0]

    def _embedding(self, value: object) -> None:
        if value is None:
            self._vectors.append(None)
            return
        self._has_embeddings = True
        self._vectors.append(_NO_VECTOR)  # replaced below when the vector is valid
        if isinstance(value, _Bad):
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

    def finish(self, sha256: str, *, skip_invalid: bool) -> Catalog:
        """Apply the whole-file checks, then raise, or return the catalog of good rows."""
        self._whole_file_checks()
        problems = sorted(self._problems, key=lambda p: p.line)  # stable: fields stay in order
        if problems and not skip_invalid:
            raise CatalogError(problems, self.source)
        keep = [i for i, r in enumerate(self._records) if r is not None and i not in self._bad]
        if not keep:
            n_rows = len(self._records) + self._n_malformed()
            what = f"{n_rows} row(s), none valid" if n_rows else "no rows"
            empty = Problem(self._path, 0, _FILE, f"the catalog has no valid ad records ({what})")
            raise CatalogError([*problems, empty], self.source)
        records = [r for i in keep if (r := self._records[i]) is not None]
        if problems:
            logger.warning(
                "%s: skipped %d invalid row(s) with %d problem(s); kept %d",
                self.source,
                len(self._records) - len(keep) + self._n_malformed(),
                len(problems),
                len(keep),
            )
        logger.info("Read %d ads from %s", len(records), self.source)
        return Catalog(
            records,
            self._embeddings(keep),
            problems,
            self.source,
            sha256,
            [self._lines[i] for i in keep],
        )

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
            message = f"no text to embed: {', '.join(self.text_fields)} all empty, no embedding"
            late += [(i, "text", message) for i in self._no_text]
        for i, name, message in late:
            self._row, self._line, self._ad_id = i, self._lines[i], self._ids[i] or ""
            self.problem(name, message)

    def _embeddings(self, keep: list[int]) -> np.ndarray | None:
        if not self._has_embeddings:
            return None
        if self._xb is not None:
            return self._xb if len(keep) == len(self._xb) else self._xb[keep]
        return np.stack([v for i in keep if (v := self._vectors[i]) is not None])


_NO_VECTOR = np.empty(0, dtype=np.float32)  # the row had an embedding, but not a valid one


# --- Formats ----------------------------------------------------------------------------------


def _read_jsonl(source: Path, builder: _Builder) -> str:
    digest = hashlib.sha256()
    unknown = builder.unknown
    with source.open("rb") as f:
        for line, raw in enumerate(f, 1):
            digest.update(raw)
            if raw.isspace():
                continue
            if line == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # written by some Windows tools
            try:
                obj = _JSON.decode(raw.decode())
            except ValueError as exc:  # also UnicodeDecodeError
                builder.malformed(line, f"not valid JSON: {exc}")
                continue
            if type(obj) is not dict:
                builder.malformed(line, f"expected a JSON object, got {_type_name(obj)}")
                continue
            if not _FIELDS.issuperset(obj):
                unknown.update(obj.keys() - _FIELDS)
            builder.add(line, obj)
    return digest.hexdigest()


def _decode(column: str, text: str, cache: dict[str, object]) -> object:
    """A text cell (CSV, Parquet string column) as the JSON-like value a row carries.

    An empty cell is an absent value: targeting everywhere, no bid, no embedding.
    """
    if not text.strip():
        return None
    if column == "targeting" and text in cache:  # targeting texts repeat: parse each once
        return cache[text]
    try:
        value: object = float(text) if column == "bid" else json.loads(text)
    except ValueError as exc:
        value = _Bad(f"not a number: {text!r}" if column == "bid" else f"not valid JSON: {exc}")
    if column == "targeting":
        cache[text] = value
    return value


def _check_columns(builder: _Builder, columns: Sequence[str], line: int, field: str) -> None:
    """Fail fast on a header that would make every row invalid."""
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise builder.file_error(line, field, f"duplicate column(s): {', '.join(duplicates)}")
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        message = f"missing required column(s): {', '.join(missing)}; found: {', '.join(columns)}"
        raise builder.file_error(line, field, message)
    if not set(builder.text_fields) & set(columns) and "embedding" not in columns:
        message = f"no text column ({', '.join(builder.text_fields)}) and no embedding column"
        raise builder.file_error(line, field, message)
    builder.unknown.update(c for c in columns if c not in _FIELDS)


def _read_csv(source: Path, builder: _Builder) -> str:
    with source.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    try:
        with source.open(encoding="utf-8-sig", newline="") as text:  # csv wants newline=""
            rows = _csv_rows(text, builder)
            if (header := next(rows, None)) is not None:
                _add_csv_rows(header, rows, builder)
    except UnicodeDecodeError as exc:
        raise _not_utf8(source, builder) from exc
    return sha256


def _add_csv_rows(
    header: tuple[int, list[str]], rows: Iterator[tuple[int, list[str]]], builder: _Builder
) -> None:
    columns = [c.strip() for c in header[1]]
    _check_columns(builder, columns, header[0], "<header>")
    plain = [(i, c) for i, c in enumerate(columns) if c in _FIELDS and c not in _ENCODED]
    encoded = [(i, c) for i, c in enumerate(columns) if c in _ENCODED]
    cache: dict[str, object] = {}
    for line, row in rows:
        if len(row) != len(columns):
            builder.malformed(line, f"{len(row)} cell(s), but the header has {len(columns)}")
            continue
        obj: dict[str, object] = {c: row[i] for i, c in plain}
        obj.update((c, _decode(c, row[i], cache)) for i, c in encoded)
        builder.add(line, obj)


def _csv_rows(text: TextIO, builder: _Builder) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, cells); csv's line_num is the line where it ends."""
    reader = csv.reader(text)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            builder.malformed(start, f"not valid CSV: {exc}")
            row = []
        if row:  # csv yields [] for a blank line: not a row
            yield start, row
        start = reader.line_num + 1


def _not_utf8(source: Path, builder: _Builder) -> CatalogError:
    data = source.read_bytes()  # only on this error path: find the line of the bad byte
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return builder.file_error(
            line, _FILE, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
        )
    return builder.file_error(0, _FILE, "not valid UTF-8")


_PARQUET_BATCH_ROWS = 65_536


def _read_parquet(source: Path, builder: _Builder) -> str:
    with source.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        f.seek(0)
        try:
            table = pq.read_table(f)
        except (pa.ArrowException, OSError) as exc:
            raise builder.file_error(0, _FILE, f"not a readable Parquet file: {exc}") from exc
    _check_columns(builder, table.column_names, 0, "<schema>")
    columns = [c for c in table.column_names if c in _FIELDS]
    if "embedding" in columns and (xb := _parquet_matrix(table.column("embedding"))) is not None:
        builder.set_matrix(xb)
        columns.remove("embedding")
    cache: dict[str, object] = {}
    line = 0
    for batch in table.select(columns).to_batches(max_chunksize=_PARQUET_BATCH_ROWS):
        values = {c: _parquet_values(batch.column(c), c, cache) for c in columns}
        for j in range(batch.num_rows):
            line += 1
            builder.add(line, {c: v[j] for c, v in values.items()})
    return sha256


def _parquet_values(array: pa.Array, column: str, cache: dict[str, object]) -> list[object]:
    values: list[object] = array.to_pylist()
    if column in _ENCODED:  # any string flavour (plain, large, dictionary) holds JSON/number text
        return [_decode(column, v, cache) if isinstance(v, str) else v for v in values]
    return values


def _parquet_matrix(column: pa.ChunkedArray) -> np.ndarray | None:
    """Vectorised embeddings: (n, d) float32 when every row is a same-length list of non-null
    numbers; otherwise None, and the rows are checked one by one (which names the bad rows)."""
    t = column.type
    is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    if not is_list or column.null_count or len(column) == 0:
        return None
    array = column.combine_chunks()
    values = array.flatten()  # respects slicing offsets, unlike .values
    if values.null_count or not (
        pa.types.is_floating(values.type) or pa.types.is_integer(values.type)
    ):
        return None
    lengths = pc.list_value_length(array).to_numpy()
    d = int(lengths[0])
    if d == 0 or (lengths != d).any():
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # > float32 max -> inf: flagged per row
        xb = np.array(values.to_numpy(zero_copy_only=False), dtype=np.float32)
    return xb.reshape(len(array), d)
