"""The record types of a catalog and the rules that define their values.

``Targeting``, ``AdRecord``, ``Problem``, ``Catalog`` and ``CatalogError`` are used by the
catalog reader, the artifact and the server alike, so they stand apart from how a catalog file is
read (``indexer.catalog``). Targeting parsing lives here, not with the row checks, because
``Targeting.from_json`` and ``Targeting.admits`` are built on it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

STATUSES = ("active", "paused")
DEVICES = ("mobile", "tablet", "desktop")
DEFAULT_TEXT_FIELDS = ("title", "description", "creative_text")
PIN_TEXT_FIELDS = ("title", "description")  # a pin's text fields (indexer.pins), in this order

Status = Literal["active", "paused"]
FILE_FIELD = "<file>"  # Problem.field of a problem with the file as a whole (line 0)
_TARGETING_KEYS = ("countries", "locales", "devices")
_MAX_LISTED = 50
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
        targeting, errors = parse_targeting(obj)
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


EVERYWHERE = Targeting()


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
        parts = (str(getattr(self, name)).strip() for name in check_text_fields(fields))
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
    """The valid records of a catalog file (or directory of files), in file order."""

    records: list[AdRecord]
    embeddings: np.ndarray | None  # (n, d) float32, row i = records[i]; None without embeddings
    rejects: list[Problem]  # problems of the rows skipped under skip_invalid
    source: Path
    sha256: str  # of the catalog file bytes (a directory: of its files' names and sha256s)
    lines: list[int]  # source line (Parquet: row) of each record, for later error messages
    # A directory catalog: (file, records read from it), in order; empty for a single file.
    files: list[tuple[Path, int]] = field(default_factory=list)

    def location(self, i: int) -> str:
        """Where record ``i`` came from, as ``path:line`` (Parquet: ``path:row N``)."""
        path, first = self.source, 0
        for file, count in self.files:
            if i < first + count:
                path = file
                break
            first += count
        return str(Problem(str(path), self.lines[i], "", "")).removesuffix(": : ")


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


def check_text_fields(fields: Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str) or not fields or any(f not in DEFAULT_TEXT_FIELDS for f in fields):
        raise ValueError(
            f"text fields must be a non-empty subset of {DEFAULT_TEXT_FIELDS}; got {fields!r}"
        )
    return tuple(fields)


_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string"}
_JSON_TYPES.update({list: "array", tuple: "array", dict: "object"})


def type_name(value: object) -> str:
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


def parse_targeting(obj: object) -> tuple[Targeting, list[tuple[str, str]]]:
    """Normalise a targeting object; returns it with (field, message) for each problem."""
    if obj is None:
        return EVERYWHERE, []
    if not isinstance(obj, Mapping):
        return EVERYWHERE, [("targeting", f"expected an object, got {type_name(obj)}")]
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
            errors.append((name, f"expected an array of strings, got {type_name(raw)}"))
        for i, item in enumerate(items):
            if not isinstance(item, str):
                errors.append(
                    (name, f"expected an array of strings, got {type_name(item)} at index {i}")
                )
            elif (value := _normalise(key, item)) is None:
                errors.append((name, template.format(item)))
            elif value not in out:
                out.append(value)
        values.append(tuple(out))
    if not any(values):
        return EVERYWHERE, errors
    return Targeting(*values), errors
