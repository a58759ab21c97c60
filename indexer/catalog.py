"""Read and validate ad catalogs (JSONL, CSV, Parquet; one file or a directory of files) into ``AdRecord``s.

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
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.catalog_formats import read_csv, read_jsonl, read_parquet
from indexer.catalog_validation import Builder, CatalogPart, RowBuilder, decide
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
        path: The catalog file, or a directory of catalog files (see :func:`catalog_files`),
            read as one catalog: ad ids are unique across its files, and embeddings come with
            every file or none.
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
    files = catalog_files(source)
    parts = [read_part(f, text_fields) for f in files]
    return decide(parts, source, catalog_sha256(source, parts), skip_invalid=skip_invalid)


def catalog_files(source: Path) -> list[Path]:
    """The files of a catalog: ``source`` itself, or a directory's catalog files.

    A directory's files are found recursively and read in the order of their relative paths
    (``part-00000.parquet``, ``part-00001.parquet``, ...); names starting with ``.`` or ``_``
    (``_SUCCESS``, ``.part-0.crc``) are skipped, any other suffix is an error: no file is
    dropped silently.

    Raises:
        CatalogError: an unsupported suffix, or a directory without catalog files.
        FileNotFoundError: if ``source`` does not exist.
    """
    if not source.is_dir():
        check_format(source)
        if not source.exists():
            raise FileNotFoundError(f"catalog {source} does not exist")
        return [source]
    files = sorted(
        (p for p in source.rglob("*") if p.is_file()),
        key=lambda p: p.relative_to(source).parts,
    )
    files = [p for p in files if not any(s[0] in "._" for s in p.relative_to(source).parts)]
    for f in files:
        check_format(f)
    if not files:
        message = f"no catalog files ({', '.join(_SUFFIXES)}) in the directory"
        raise CatalogError([Problem(str(source), 0, FILE_FIELD, message)], source)
    return files


def check_format(source: Path) -> None:
    """Raise CatalogError unless the suffix names a format the readers know."""
    suffix = source.suffix.lower()
    if suffix not in _SUFFIXES:
        message = f"unsupported catalog format {suffix or '(no suffix)'!r}: expected one of {', '.join(_SUFFIXES)}"
        raise CatalogError([Problem(str(source), 0, FILE_FIELD, message)], source)


def read_part(source: Path, text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS) -> CatalogPart:
    """Read and check one catalog file; nothing is decided (``decide`` does that).

    Raises:
        CatalogError: a problem with the file as a whole (format, header, encoding).
    """
    builder = Builder(source, check_text_fields(text_fields))
    return builder.part(read_rows(source, builder))


def catalog_sha256(source: Path, parts: Sequence[CatalogPart]) -> str:
    """The file's sha256; for a directory, the sha256 of its files' relative paths and sha256s
    (one ``path<TAB>sha256`` line each, in catalog order)."""
    if not source.is_dir():
        return parts[0].sha256
    listing = "".join(f"{p.source.relative_to(source).as_posix()}\t{p.sha256}\n" for p in parts)
    return hashlib.sha256(listing.encode()).hexdigest()


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
