"""The catalog file formats: JSONL, CSV and Parquet rows fed to a ``Builder``.

Each reader only decodes its format into JSON-like rows and hashes the file bytes; all
validation is in ``indexer.catalog_validation``. The builder names the columns (ads, or pins:
``indexer.pins``), so every table shares these readers.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indexer.catalog_validation import BadCell, RowBuilder
from indexer.records import FILE_FIELD, CatalogError, type_name

Builder = RowBuilder[Any]  # the ads' Builder or the pins' PinBuilder
_JSON = json.JSONDecoder()


def read_jsonl(source: Path, builder: Builder) -> str:
    digest = hashlib.sha256()
    unknown, fields = builder.unknown, builder.FIELDS
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
                builder.malformed(line, f"expected a JSON object, got {type_name(obj)}")
                continue
            if not fields.issuperset(obj):
                unknown.update(obj.keys() - fields)
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
        value = BadCell(f"not a number: {text!r}" if column == "bid" else f"not valid JSON: {exc}")
    if column == "targeting":
        cache[text] = value
    return value


def _check_columns(builder: Builder, columns: Sequence[str], line: int, field: str) -> None:
    """Fail fast on a header that would make every row invalid."""
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise builder.file_error(line, field, f"duplicate column(s): {', '.join(duplicates)}")
    missing = [c for c in builder.REQUIRED if c not in columns]
    if missing:
        message = f"missing required column(s): {', '.join(missing)}; found: {', '.join(columns)}"
        raise builder.file_error(line, field, message)
    if not set(builder.text_fields) & set(columns) and "embedding" not in columns:
        message = f"no text column ({', '.join(builder.text_fields)}) and no embedding column"
        raise builder.file_error(line, field, message)
    builder.unknown.update(c for c in columns if c not in builder.FIELDS)


def read_csv(source: Path, builder: Builder) -> str:
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
    header: tuple[int, list[str]], rows: Iterator[tuple[int, list[str]]], builder: Builder
) -> None:
    columns = [c.strip() for c in header[1]]
    _check_columns(builder, columns, header[0], "<header>")
    fields, encoded_fields = builder.FIELDS, builder.ENCODED
    plain = [(i, c) for i, c in enumerate(columns) if c in fields and c not in encoded_fields]
    encoded = [(i, c) for i, c in enumerate(columns) if c in encoded_fields]
    cache: dict[str, object] = {}
    for line, row in rows:
        if len(row) != len(columns):
            builder.malformed(line, f"{len(row)} cell(s), but the header has {len(columns)}")
            continue
        obj: dict[str, object] = {c: row[i] for i, c in plain}
        obj.update((c, _decode(c, row[i], cache)) for i, c in encoded)
        builder.add(line, obj)


def _csv_rows(text: TextIO, builder: Builder) -> Iterator[tuple[int, list[str]]]:
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


def _not_utf8(source: Path, builder: Builder) -> CatalogError:
    data = source.read_bytes()  # only on this error path: find the line of the bad byte
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return builder.file_error(
            line, FILE_FIELD, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
        )
    return builder.file_error(0, FILE_FIELD, "not valid UTF-8")


_PARQUET_BATCH_ROWS = 65_536


def read_parquet(source: Path, builder: Builder) -> str:
    with source.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        f.seek(0)
        try:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            _check_columns(builder, names, 0, "<schema>")
            columns = [c for c in names if c in builder.FIELDS]
            if "embedding" in columns:
                # Read apart from the other columns, batch by batch into one float32 matrix: the
                # whole Arrow column is never held (1.5 GB at 1M x 384, more while decoding).
                batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=["embedding"])
                field = pf.schema_arrow.field("embedding")
                xb = _parquet_matrix(batches, pf.metadata.num_rows, field.type)
                if xb is not None:
                    builder.set_matrix(xb)
                    columns.remove("embedding")
            table = pf.read(columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise builder.file_error(0, FILE_FIELD, f"not a readable Parquet file: {exc}") from exc
    cache: dict[str, object] = {}
    line = 0
    for batch in table.to_batches(max_chunksize=_PARQUET_BATCH_ROWS):
        values = {c: _parquet_values(batch.column(c), c, builder.ENCODED, cache) for c in columns}
        for j in range(batch.num_rows):
            line += 1
            builder.add(line, {c: v[j] for c, v in values.items()})
    return sha256


def _parquet_values(
    array: pa.Array, column: str, encoded: tuple[str, ...], cache: dict[str, object]
) -> list[object]:
    values: list[object] = array.to_pylist()
    if column in encoded:  # any string flavour (plain, large, dictionary) holds JSON/number text
        return [_decode(column, v, cache) if isinstance(v, str) else v for v in values]
    return values


def _parquet_matrix(
    batches: Iterable[pa.RecordBatch], n: int, list_type: pa.DataType
) -> np.ndarray | None:
    """Vectorised embeddings: (n, d) float32 when every row is a same-length list of non-null
    numbers; otherwise None, and the rows are checked one by one (which names the bad rows)."""
    t = list_type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return None
    xb: np.ndarray | None = None
    row = 0
    for batch in batches:
        chunk = batch.column(0)
        if chunk.null_count:
            return None
        lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
        if xb is None and len(lengths):
            d = int(lengths[0])
            if d == 0:
                return None
            xb = np.empty((n, d), dtype=np.float32)
        if xb is None or (lengths != xb.shape[1]).any():
            return None
        values = chunk.flatten()  # respects slicing offsets, unlike .values
        if values.null_count or not (
            pa.types.is_floating(values.type) or pa.types.is_integer(values.type)
        ):
            return None
        with np.errstate(over="ignore", invalid="ignore"):  # > float32 max -> inf: flagged per row
            xb[row : row + len(chunk)] = values.to_numpy(zero_copy_only=False).reshape(
                len(chunk), -1
            )
        row += len(chunk)
    return xb if xb is not None and row == n else None
