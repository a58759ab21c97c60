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

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.catalog_formats import read_csv, read_jsonl, read_parquet
from indexer.catalog_validation import Builder, RowBuilder
from indexer.records import (
    DEFAULT_TEXT_FIELDS,
    FILE_FIELD,
    AdRecord,
    Catalog,
    CatalogError,
    Problem,
    check_text_fields,
)

_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")


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
    check_format(source)
    builder = Builder(source, check_text_fields(text_fields))
    return builder.finish(read_rows(source, builder), skip_invalid=skip_invalid)


def check_format(source: Path) -> None:
    """Raise CatalogError unless the suffix names a format the readers know."""
    suffix = source.suffix.lower()
    if suffix not in _SUFFIXES:
        message = f"unsupported catalog format {suffix or '(no suffix)'!r}: expected one of {', '.join(_SUFFIXES)}"
        raise CatalogError([Problem(str(source), 0, FILE_FIELD, message)], source)


def read_rows(source: Path, builder: RowBuilder[Any]) -> str:
    """Feed every row of a JSONL, CSV or Parquet file (by suffix) to ``builder``.

    Returns:
        The sha256 of the file bytes.
    """
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return read_csv(source, builder)
    if suffix == ".parquet":
        return read_parquet(source, builder)
    return read_jsonl(source, builder)


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
