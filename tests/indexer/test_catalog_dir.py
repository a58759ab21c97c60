"""A directory of catalog files read as one catalog (what big exports look like: part files)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.catalog import catalog_files, read_catalog
from indexer.records import CatalogError, Problem


def ad(i: int, **overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "ad_id": f"ad-{i}",
        "advertiser_id": "adv-1",
        "campaign_id": "c-1",
        "title": f"title {i}",
        "status": "active",
    }
    obj.update(overrides)
    return {k: v for k, v in obj.items() if v is not None}


def jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path


def parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def problems_of(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(CatalogError) as info:
        read_catalog(path, **kwargs)
    return [str(p) for p in info.value.problems]


def test_files_are_read_in_path_order_as_one_catalog(tmp_path: Path) -> None:
    d = tmp_path / "cat"
    b = jsonl(d / "part-1.jsonl", ["", ad(3), ad(4)])  # a blank first line: lines stay real
    a = jsonl(d / "part-0.jsonl", [ad(0), ad(1)])
    c = parquet(d / "sub" / "part-2.parquet", [ad(5), ad(6)])
    jsonl(d / "_SUCCESS.jsonl", [ad(99)])  # markers and hidden files are not catalog files
    jsonl(d / ".part-0.jsonl", [ad(98)])
    assert catalog_files(d) == [a, b, c]
    catalog = read_catalog(d)
    assert [r.ad_id for r in catalog.records] == ["ad-0", "ad-1", "ad-3", "ad-4", "ad-5", "ad-6"]
    assert catalog.lines == [1, 2, 2, 3, 1, 2]
    assert catalog.files == [(a, 2), (b, 2), (c, 2)]
    assert catalog.location(2) == f"{b}:2" and catalog.location(5) == f"{c}:row 2"
    listing = "".join(
        f"{f.relative_to(d).as_posix()}\t{hashlib.sha256(f.read_bytes()).hexdigest()}\n"
        for f in (a, b, c)
    )
    assert catalog.source == d
    assert catalog.sha256 == hashlib.sha256(listing.encode()).hexdigest()


def test_a_single_file_reads_as_before(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "ads.jsonl", [ad(0), ad(1)])
    catalog = read_catalog(path)
    assert catalog.files == [] and catalog.location(1) == f"{path}:2"
    assert catalog.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_directory_of_one_file_still_names_the_file(tmp_path: Path) -> None:
    # Its locations, and the build's snapshot time (the file's mtime, not the directory's: the
    # server replays admin changes acknowledged after it).
    d = tmp_path / "cat"
    part = jsonl(d / "part-0.jsonl", [ad(0), ad(1)])
    jsonl(d / "_SUCCESS.jsonl", [])
    catalog = read_catalog(d)
    assert catalog.files == [(part, 2)] and catalog.location(1) == f"{part}:2"


def test_problems_name_each_file_and_its_lines(tmp_path: Path) -> None:
    d = tmp_path / "cat"
    a = jsonl(d / "a.jsonl", [ad(0), ad(1, status="on")])
    b = jsonl(d / "b.jsonl", ["not json", ad(2, advertiser_id="")])
    assert problems_of(d) == [
        f"{a}:2: status: 'on': expected one of active, paused",
        f"{b}:1: <record>: not valid JSON: Expecting value: line 1 column 1 (char 0)",
        f"{b}:2: advertiser_id: must not be empty",
    ]
    catalog = read_catalog(d, skip_invalid=True)
    assert [r.ad_id for r in catalog.records] == ["ad-0"]
    assert [str(p) for p in catalog.rejects] == problems_of(d)


def test_an_ad_id_is_unique_across_files(tmp_path: Path) -> None:
    d = tmp_path / "cat"
    a = jsonl(d / "a.jsonl", [ad(0), ad(1)])
    b = parquet(d / "b.parquet", [ad(2), ad(1, title="again")])
    assert problems_of(d) == [
        f"{b}:row 2: ad_id: duplicate ad_id 'ad-1' (first seen at {a} line 2)"
    ]
    catalog = read_catalog(d, skip_invalid=True)
    assert [(r.ad_id, r.title) for r in catalog.records] == [
        ("ad-0", "title 0"),
        ("ad-1", "title 1"),
        ("ad-2", "title 2"),
    ]
    assert catalog.files == [(a, 2), (b, 1)]


def test_embeddings_come_with_every_file_or_none(tmp_path: Path) -> None:
    d = tmp_path / "cat"
    a = jsonl(d / "a.jsonl", [ad(0, embedding=[1.0, 0.0]), ad(1, embedding=[0.0, 1.0])])
    b = jsonl(d / "b.jsonl", [ad(2)])
    c = jsonl(d / "c.jsonl", [ad(3, embedding=[1.0, 0.0, 0.0])])
    assert problems_of(d) == [
        f"{b}:1: embedding: missing, but other files carry embeddings (first at {a} line 1)",
        f"{c}:1: embedding: dimension 3, expected 2 (as at {a} line 1)",
    ]
    catalog = read_catalog(d, skip_invalid=True)
    assert catalog.embeddings is not None
    np.testing.assert_array_equal(catalog.embeddings, [[1.0, 0.0], [0.0, 1.0]])


def test_what_is_not_a_catalog_file_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "cat"
    jsonl(d / "a.jsonl", [ad(0)])
    (d / "notes.txt").write_text("hello")
    problem = f"{d / 'notes.txt'}:0: <file>: unsupported catalog format '.txt': expected one of"
    assert problems_of(d)[0].startswith(problem)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert problems_of(empty) == [
        str(
            Problem(
                str(empty),
                0,
                "<file>",
                "no catalog files (.jsonl, .ndjson, .csv, .parquet) in the directory",
            )
        )
    ]
    jsonl(empty / "a.jsonl", [ad(0, status="on")])
    assert problems_of(empty, skip_invalid=True)[-1] == (
        f"{empty}:0: <file>: the catalog has no valid ad records (1 row(s), none valid)"
    )
