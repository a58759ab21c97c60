from __future__ import annotations

import csv
import hashlib
import json
import logging
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.catalog import read_catalog, write_catalog_jsonl, write_rejects
from indexer.records import AdRecord, Catalog, CatalogError, Problem, Targeting

COLUMNS = [
    "ad_id",
    "advertiser_id",
    "campaign_id",
    "title",
    "description",
    "creative_text",
    "targeting",
    "status",
    "bid",
]

RECORDS = [
    AdRecord(
        "ad-1",
        "adv-1",
        "c-1",
        title="Running shoes",
        description="Light and fast",
        targeting=Targeting(countries=("US", "CA"), locales=("en-US", "en"), devices=("mobile",)),
        bid=1.25,
    ),
    AdRecord("ad-2", "adv-1", "c-2", creative_text="Summer sale", status="paused"),
    AdRecord(
        "ad-3",
        "adv-2",
        "c-3",
        title='Espresso, "strong"\nand smooth',
        targeting=Targeting(devices=("desktop", "tablet")),
        bid=0.0,
    ),
]


def row(**overrides: Any) -> dict[str, Any]:
    """A valid JSONL row; None values are removed (the key is absent)."""
    obj: dict[str, Any] = {
        "ad_id": "ad-1",
        "advertiser_id": "adv-1",
        "campaign_id": "c-1",
        "title": "Running shoes",
        "status": "active",
    }
    obj.update(overrides)
    return {k: v for k, v in obj.items() if v is not None}


def write_jsonl(path: Path, lines: Sequence[object]) -> Path:
    """Rows as JSON lines; a str is written verbatim (blank lines, broken JSON)."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    columns = [*COLUMNS, *(["embedding"] if any("embedding" in r for r in rows) else [])]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in rows:
            cells = {k: "" if v is None else v for k, v in r.items()}
            for key in ("targeting", "embedding"):
                if r.get(key) is not None:
                    cells[key] = json.dumps(r[key])
            writer.writerow(cells)
    return path


def write_parquet(path: Path, rows: Sequence[dict[str, Any]], targeting_json: bool = False) -> Path:
    rows = [dict(r) for r in rows]
    if targeting_json:
        for r in rows:
            r["targeting"] = json.dumps(r["targeting"])
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_parquet_embeddings(
    path: Path, xb: np.ndarray, list_type: str, row_group_size: int | None = None
) -> Path:
    n, d = xb.shape
    values = pa.array(xb.ravel(), pa.float32())
    offsets = pa.array(np.arange(n + 1) * d, pa.int32())
    if list_type == "fixed_size_list":
        embedding = pa.FixedSizeListArray.from_arrays(values, d)
    elif list_type == "large_list":
        embedding = pa.LargeListArray.from_arrays(offsets.cast(pa.int64()), values)
    else:
        embedding = pa.ListArray.from_arrays(offsets, values)
    ids = [f"ad-{i}" for i in range(n)]
    table = pa.table(
        {
            "ad_id": ids,
            "advertiser_id": ["adv"] * n,
            "campaign_id": ["c"] * n,
            "status": ["active"] * n,
            "embedding": embedding,
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def problems_of(path: Path, **kwargs: Any) -> list[Problem]:
    with pytest.raises(CatalogError) as info:
        read_catalog(path, **kwargs)
    return info.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# --- round trips ---------------------------------------------------------------------------


def _jsonl(path: Path) -> Path:
    write_catalog_jsonl(RECORDS, path / "ads.jsonl")
    return path / "ads.jsonl"


def _csv(path: Path) -> Path:
    return write_csv(path / "ads.csv", [r.to_json() for r in RECORDS])


def _parquet_struct(path: Path) -> Path:
    return write_parquet(path / "ads.parquet", [r.to_json() for r in RECORDS])


def _parquet_json(path: Path) -> Path:
    return write_parquet(path / "ads.parquet", [r.to_json() for r in RECORDS], targeting_json=True)


@pytest.mark.parametrize("write", [_jsonl, _csv, _parquet_struct, _parquet_json])
def test_round_trip(tmp_path: Path, write: Callable[[Path], Path]) -> None:
    path = write(tmp_path)
    catalog = read_catalog(path)
    assert catalog.records == RECORDS
    assert catalog.embeddings is None
    assert catalog.rejects == []
    assert catalog.source == path
    assert catalog.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix == ".parquet":
        assert catalog.lines == [1, 2, 3]
    elif path.suffix == ".csv":
        assert catalog.lines == [2, 3, 4]  # header is line 1
    else:
        assert catalog.lines == [1, 2, 3]


def test_jsonl_normalises_values(tmp_path: Path) -> None:
    targeting = {
        "countries": ["us", "US", " gb"],
        "locales": ["EN_us", "FR"],
        "devices": ["Mobile"],
    }
    obj = row(ad_id=42, advertiser_id=" adv ", status=" PAUSED", bid=3, targeting=targeting)
    catalog = read_catalog(write_jsonl(tmp_path / "ads.ndjson", [obj, "", "  "]))
    (record,) = catalog.records
    assert (record.ad_id, record.advertiser_id, record.status, record.bid) == (
        "42",
        "adv",
        "paused",
        3.0,
    )
    assert record.targeting == Targeting(("US", "GB"), ("en-US", "fr"), ("mobile",))


def test_unknown_fields_are_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(
        tmp_path / "ads.jsonl", [row(ad_id="a", extra=1), row(ad_id="b", extra=2, note="x")]
    )
    with caplog.at_level(logging.INFO, logger="indexer.catalog"):
        read_catalog(path)
    unknown = [r.getMessage() for r in caplog.records if "unknown field" in r.getMessage()]
    assert len(unknown) == 1
    assert "extra, note" in unknown[0]


def test_jsonl_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "ads.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row()).encode() + b"\n")
    assert read_catalog(path).records[0].ad_id == "ad-1"


# --- validation: one bad row at physical line 3 (a blank line 2 must be counted) -------------

CASES = [
    (row(ad_id=None), "ad_id", "required"),
    (row(ad_id="  "), "ad_id", "must not be empty"),
    (row(ad_id=[1]), "ad_id", "expected a string or integer, got array"),
    (row(advertiser_id=None), "advertiser_id", "required"),
    (row(campaign_id=""), "campaign_id", "must not be empty"),
    (row(title=" "), "text", "no text to embed"),
    (row(description=7), "description", "expected a string, got number"),
    (row(status=None), "status", "required"),
    (row(status="deleted"), "status", "'deleted': expected one of active, paused"),
    (row(targeting="US"), "targeting", "expected an object, got string"),
    (row(targeting={"regions": ["EU"]}), "targeting", "unknown key 'regions'"),
    (row(targeting={"countries": "US"}), "targeting.countries", "expected an array of strings"),
    (row(targeting={"countries": ["USA"]}), "targeting.countries", "'USA' is not a 2-letter"),
    (row(targeting={"countries": [1]}), "targeting.countries", "got number at index 0"),
    (row(targeting={"locales": ["english"]}), "targeting.locales", "'english' is not a locale"),
    (
        row(targeting={"devices": ["phone"]}),
        "targeting.devices",
        "unknown device 'phone' (expected one of mobile, tablet, desktop)",
    ),
    (row(bid=-1), "bid", "must be finite and >= 0"),
    (row(bid=float("inf")), "bid", "must be finite and >= 0"),
    (row(bid="1.5"), "bid", "expected a number, got string"),
    (row(bid=True), "bid", "expected a number, got boolean"),
]


@pytest.mark.parametrize(("bad", "field", "message"), CASES)
def test_invalid_row(tmp_path: Path, bad: dict[str, Any], field: str, message: str) -> None:
    path = write_jsonl(tmp_path / "ads.jsonl", [row(ad_id="good"), "", bad])
    problem = only(problems_of(path))
    assert (problem.path, problem.line, problem.field) == (str(path), 3, field)
    assert message in problem.message
    assert str(problem) == f"{path}:3: {field}: {problem.message}"


def test_targeting_from_json_names_the_sub_field() -> None:
    with pytest.raises(ValueError, match=r"^targeting\.devices: unknown device 'phone' "):
        Targeting.from_json({"devices": ["phone"]})
    assert Targeting.from_json(None) == Targeting()
    t = Targeting.from_json({"countries": ["de"], "locales": ["de_de"], "devices": None})
    assert t == Targeting(countries=("DE",), locales=("de-DE",))
    assert Targeting.from_json(t.to_json()) == t


def test_malformed_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ads.jsonl", [row(), "{not json", "[1, 2]", row(ad_id="x")])
    problems = problems_of(path)
    assert [(p.line, p.field) for p in problems] == [(2, "<record>"), (3, "<record>")]
    assert "not valid JSON" in problems[0].message
    assert "expected a JSON object, got array" in problems[1].message


def test_duplicate_ad_id_names_the_first_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ads.jsonl", [row(ad_id="x"), row(ad_id="y"), row(ad_id="x")])
    problem = only(problems_of(path))
    assert (problem.line, problem.field, problem.ad_id) == (3, "ad_id", "x")
    assert problem.message == "duplicate ad_id 'x' (first seen at line 1)"


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    lines = [
        row(ad_id="a", status="gone", bid=-2),
        row(ad_id="b"),
        row(ad_id="c", advertiser_id=None, targeting={"devices": ["tv"]}),
        "oops",
    ]
    path = write_jsonl(tmp_path / "ads.jsonl", lines)
    with pytest.raises(CatalogError) as info:
        read_catalog(path)
    got = [(p.line, p.field, p.ad_id) for p in info.value.problems]
    assert got == [
        (1, "status", "a"),
        (1, "bid", "a"),
        (3, "advertiser_id", "c"),
        (3, "targeting.devices", "c"),
        (4, "<record>", None),
    ]
    text = str(info.value)
    assert text.splitlines()[0] == f"{path}: 5 invalid record(s):"
    assert f"{path}:3: targeting.devices: unknown device 'tv'" in text
    assert "--skip-invalid" not in text


def test_error_message_lists_at_most_50(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ads.jsonl", [row(ad_id=f"a{i}", status="x") for i in range(60)])
    with pytest.raises(CatalogError) as info:
        read_catalog(path)
    error = info.value
    lines = str(error).splitlines()
    assert len(error.problems) == 60
    assert len(lines) == 1 + 50 + 1
    assert lines[-1].strip().startswith("... and 10 more; pass --skip-invalid")
    assert pickle.loads(pickle.dumps(error)).problems == error.problems


def test_skip_invalid_keeps_good_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [row(ad_id="a"), row(ad_id="b", status="?"), "nope", row(ad_id="c"), row(ad_id="a")]
    path = write_jsonl(tmp_path / "ads.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="indexer.catalog"):
        catalog = read_catalog(path, skip_invalid=True)
    assert [r.ad_id for r in catalog.records] == ["a", "c"]
    assert catalog.lines == [1, 4]
    assert [(p.line, p.field) for p in catalog.rejects] == [
        (2, "status"),
        (3, "<record>"),
        (5, "ad_id"),
    ]
    assert any("skipped 3 invalid row(s)" in r.getMessage() for r in caplog.records)

    rejects = tmp_path / "rejects.jsonl"
    write_rejects(catalog.rejects, rejects)
    written = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert written[0] == {
        "path": str(path),
        "line": 2,
        "field": "status",
        "message": written[0]["message"],
        "ad_id": "b",
    }
    assert [w["line"] for w in written] == [2, 3, 5]


def test_empty_catalog_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ads.jsonl", ["", "   "])
    problem = only(problems_of(path, skip_invalid=True))
    assert (problem.line, problem.field) == (0, "<file>")
    assert "no valid ad records" in problem.message

    path = write_jsonl(tmp_path / "bad.jsonl", [row(status="x")])
    problems = problems_of(path, skip_invalid=True)
    assert [p.field for p in problems] == ["status", "<file>"]


def test_unsupported_suffix_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "ads.txt"
    path.write_text("x")
    problem = only(problems_of(path))
    assert problem.field == "<file>"
    assert ".jsonl" in problem.message and ".parquet" in problem.message
    with pytest.raises(FileNotFoundError):
        read_catalog(tmp_path / "missing.jsonl")


# --- embeddings -------------------------------------------------------------------------------


def test_jsonl_embeddings(tmp_path: Path) -> None:
    xb = np.random.default_rng(1338).standard_normal((3, 8)).astype(np.float32)
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(RECORDS, path, xb)
    catalog = read_catalog(path)
    assert catalog.records == RECORDS
    assert catalog.embeddings is not None
    assert catalog.embeddings.shape == (3, 8)
    assert catalog.embeddings.dtype == np.float32
    np.testing.assert_array_equal(catalog.embeddings, xb)


def test_text_is_optional_with_embeddings(tmp_path: Path) -> None:
    lines = [
        row(ad_id="a", title=None, embedding=[1, 2]),
        row(ad_id="b", title="", embedding=[3.5, 4]),
    ]
    catalog = read_catalog(write_jsonl(tmp_path / "ads.jsonl", lines))
    assert catalog.embeddings is not None
    assert catalog.embeddings.tolist() == [[1.0, 2.0], [3.5, 4.0]]


@pytest.mark.parametrize(
    ("embedding", "message"),
    [
        (None, "missing, but other rows carry embeddings (first at line 1)"),
        ([1.0, 2.0, 3.0], "dimension 3, expected 2 (as at line 1)"),
        ([1.0, 1e39], "value at index 1 (1e+39) is not a finite float32"),
        ([1.0, "x"], "expected a flat array of numbers"),
        ([], "empty array"),
        ("1,2", "expected an array of numbers, got string"),
    ],
)
def test_invalid_embedding(tmp_path: Path, embedding: Any, message: str) -> None:
    lines = [row(ad_id="a", embedding=[0.5, 0.5]), "", row(ad_id="c", embedding=embedding)]
    problem = only(problems_of(write_jsonl(tmp_path / "ads.jsonl", lines)))
    assert (problem.line, problem.field, problem.ad_id) == (3, "embedding", "c")
    assert problem.message == message


@pytest.mark.parametrize("row_group_size", [None, 3])  # 3: a column of several chunks
@pytest.mark.parametrize("list_type", ["list", "large_list", "fixed_size_list"])
def test_parquet_embeddings(tmp_path: Path, list_type: str, row_group_size: int | None) -> None:
    xb = np.random.default_rng(1338).standard_normal((8, 16)).astype(np.float32)
    path = write_parquet_embeddings(tmp_path / "ads.parquet", xb, list_type, row_group_size)
    if row_group_size:
        assert pq.read_table(path).column("embedding").num_chunks > 1
    catalog = read_catalog(path)  # no text columns: the embeddings stand in
    assert catalog.embeddings is not None
    assert catalog.embeddings.shape == (8, 16)
    assert catalog.embeddings.dtype == np.float32
    assert catalog.embeddings.flags.writeable
    np.testing.assert_array_equal(catalog.embeddings, xb)
    assert [r.ad_id for r in catalog.records] == [f"ad-{i}" for i in range(8)]


def test_parquet_non_finite_embedding_names_the_row(tmp_path: Path) -> None:
    xb = np.ones((4, 3), np.float32)
    xb[2, 1] = np.nan
    path = write_parquet_embeddings(tmp_path / "ads.parquet", xb, "fixed_size_list")
    problem = only(problems_of(path))
    assert (problem.line, problem.field, problem.ad_id) == (3, "embedding", "ad-2")
    assert str(problem).startswith(f"{path}:row 3: embedding: value at index 1")
    catalog = read_catalog(path, skip_invalid=True)
    assert catalog.embeddings is not None
    assert catalog.embeddings.shape == (3, 3)
    assert catalog.lines == [1, 2, 4]


def test_parquet_mismatched_dimension_names_the_row(tmp_path: Path) -> None:
    rows = [row(ad_id=f"ad-{i}", embedding=[0.1] * 4) for i in range(4)]
    rows[2]["embedding"] = [0.1] * 5
    rows[3]["embedding"] = None
    path = write_parquet(tmp_path / "ads.parquet", rows)
    problems = problems_of(path)
    assert [(p.line, p.field) for p in problems] == [(3, "embedding"), (4, "embedding")]
    assert problems[0].message == "dimension 5, expected 4 (as at row 1)"
    assert problems[1].message == "missing, but other rows carry embeddings (first at row 1)"


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_line_numbers_follow_multi_line_cells(tmp_path: Path) -> None:
    rows = [
        row(ad_id="a", title="two\nlines", targeting=None, bid=None),
        row(ad_id="b", status="nope"),
    ]
    path = write_csv(tmp_path / "ads.csv", rows)
    problem = only(problems_of(path))
    assert (problem.line, problem.field) == (4, "status")  # header 1, "a" on 2-3


def test_csv_cells(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_text(
        "ad_id,advertiser_id,campaign_id,title,status,targeting,bid,embedding,notes\n"
        'a,adv,c,T,active,,,"[1, 2]",x\n'
        'b,adv,c,T,active,"{""devices"": [""tablet""]}",2.5,"[3, 4]",\n'
        "c,adv,c,T,active,{oops,abc,[5],\n"
        "d,adv,c\n"
        "\n"
        "e,adv,c,T,active,,,,\n",
        encoding="utf-8",
    )
    problems = problems_of(path)
    got = [(p.line, p.field) for p in problems]
    assert got == [
        (4, "targeting"),
        (4, "bid"),
        (4, "embedding"),
        (5, "<record>"),
        (7, "embedding"),
    ]
    assert problems[1].message == "not a number: 'abc'"
    assert problems[3].message == "3 cell(s), but the header has 9"
    catalog = read_catalog(path, skip_invalid=True)
    assert [r.targeting for r in catalog.records] == [Targeting(), Targeting(devices=("tablet",))]
    assert [r.bid for r in catalog.records] == [None, 2.5]


def test_csv_missing_required_column(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_text("ad_id,campaign_id,title,status\na,c,T,active\n", encoding="utf-8")
    problem = only(problems_of(path, skip_invalid=True))
    assert (problem.line, problem.field) == (1, "<header>")
    assert "missing required column(s): advertiser_id" in problem.message


# --- Targeting and AdRecord -------------------------------------------------------------------


def test_admits() -> None:
    everywhere = Targeting()
    assert everywhere.admits() and everywhere.admits("US", "en-US", "mobile")
    t = Targeting(countries=("US", "CA"), locales=("en-US", "fr"), devices=("mobile",))
    assert t.admits()  # empty arguments do not filter
    assert t.admits(country="us", locale="en_us", device="MOBILE")
    assert not t.admits(country="GB")
    assert not t.admits(device="desktop")
    assert t.admits(locale="fr-CA")  # "fr" targets every region
    assert t.admits(locale="en")  # region unknown: en-US may apply
    assert not t.admits(locale="en-GB")
    assert not t.admits(locale="de")
    assert Targeting(devices=("tablet",)).admits(country="JP", locale="ja-JP")


def test_text() -> None:
    record = AdRecord("a", "b", "c", title=" Shoes ", description="", creative_text="Buy now")
    assert record.text() == "Shoes. Buy now"
    assert record.text(["creative_text", "title"], sep=" | ") == "Buy now | Shoes"
    with pytest.raises(ValueError, match="text fields"):
        record.text(["ad_id"])


def test_catalog_is_a_plain_container(tmp_path: Path) -> None:
    catalog = read_catalog(_jsonl(tmp_path))
    assert isinstance(catalog, Catalog)
    assert json.loads(json.dumps(catalog.records[0].to_json()))["targeting"]["countries"] == [
        "US",
        "CA",
    ]


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "ads.csv"
    path.write_bytes(
        b"ad_id,advertiser_id,campaign_id,title,status\na,b,c,T,active\nb,b,c,\xff,active\n"
    )
    problem = only(problems_of(path))
    assert (problem.line, problem.field) == (3, "<file>")
    assert "not valid UTF-8" in problem.message

    path = tmp_path / "ads.jsonl"
    path.write_bytes(json.dumps(row()).encode() + b'\n{"ad_id": "\xff"}\n')
    problem = only(problems_of(path))
    assert (problem.line, problem.field) == (2, "<record>")


def test_parquet_schema_problems(tmp_path: Path) -> None:
    path = tmp_path / "ads.parquet"
    pq.write_table(pa.table({"ad_id": ["a"], "title": ["T"], "status": ["active"]}), path)
    problem = only(problems_of(path))
    assert (problem.line, problem.field) == (0, "<schema>")
    assert "advertiser_id, campaign_id" in problem.message

    rows = [
        row(ad_id="a", targeting={"countries": ["US"]}),
        row(ad_id="b", targeting={"countries": ["XYZ"]}),
    ]
    path = write_parquet(tmp_path / "t.parquet", rows, targeting_json=True)
    problem = only(problems_of(path))
    assert (problem.line, problem.field, problem.ad_id) == (2, "targeting.countries", "b")
    assert str(problem).startswith(f"{path}:row 2: targeting.countries: 'XYZ'")
