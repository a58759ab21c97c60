"""Pins as first-class data: a pins file read with the catalog's checks, embedded with the ads'
model, published in the same version and checked against the ads' model at load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer import artifact
from indexer.ann import normalize
from indexer.artifact import ArtifactError
from indexer.build import BuildConfig, BuildError, BuildResult, build
from indexer.catalog import write_catalog_jsonl
from indexer.manifest import Manifest
from indexer.pins import PIN_EMBEDDINGS_FILE, PINS_FILE, read_pins
from indexer.records import CatalogError
from indexer.report import describe
from support import HashEmbedder, clustered_vectors, make_records


def _pins(n: int = 40) -> list[dict[str, object]]:
    return [
        {"pin_id": f"p{i}", "title": f"w{i % 7} w{i % 11} idea", "description": f"about w{i % 13}"}
        for i in range(n)
    ]


def _write_jsonl(rows: list[dict[str, object]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def text_build(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """A text catalog and a text pins file, both embedded by one (fake) model."""
    root = tmp_path_factory.mktemp("pins")
    write_catalog_jsonl(make_records(600), root / "ads.jsonl")
    pins = _write_jsonl(_pins(), root / "pins.jsonl")
    config = BuildConfig(catalog=root / "ads.jsonl", out=root / "idx", pins=pins, threads=1)
    return build(config, embedder=HashEmbedder())


def test_pins_are_embedded_with_the_ads_model_and_published(text_build: BuildResult) -> None:
    m = text_build.manifest
    assert m.pins is not None
    assert (m.pins.count, m.pins.model, m.pins.dimension) == (40, m.model.name, m.dimension)
    assert m.pins.source == "text" and m.pins.text_fields == ("title", "description")
    assert set(m.pins.files) == {PINS_FILE, PIN_EMBEDDINGS_FILE}
    assert set(m.pins.files) <= set(m.files)  # checksummed like every other file
    art = artifact.load(text_build.version_dir)
    assert art.pins is not None and art.pins.pin_ids == [f"p{i}" for i in range(40)]
    row = art.pins.row_of["p5"]
    expected = HashEmbedder().encode(["w5 w5 idea. about w5"])[0]
    np.testing.assert_allclose(art.pins.embeddings[row], expected, atol=1e-6)
    assert art.pins.lookup(["p1", "nope", "p2"]) == ([1, 2], ["nope"])
    assert Manifest.from_json(m.to_json()) == m
    assert "pins      40 (0 rejected), text title+description, from " in describe(m)


def test_version_without_pins_writes_no_pins_section(built_index: BuildResult) -> None:
    assert built_index.manifest.pins is None
    assert "pins" not in built_index.manifest.to_json()  # older readers still read it
    assert artifact.load(built_index.version_dir).pins is None


def test_bad_pins_file_lists_every_bad_row_and_publishes_nothing(tmp_path: Path) -> None:
    write_catalog_jsonl(make_records(300), tmp_path / "ads.jsonl")
    rows = _pins(6)
    rows[1]["pin_id"] = ""
    rows[3]["title"] = 7
    rows[3]["description"] = ""
    rows[4]["pin_id"] = "p0"
    rows[5] = {"pin_id": "p5", "title": " ", "description": ""}
    pins = _write_jsonl(rows, tmp_path / "pins.jsonl")
    with pins.open("a", encoding="utf-8") as f:
        f.write("{not json\n")
    config = BuildConfig(catalog=tmp_path / "ads.jsonl", out=tmp_path / "idx", pins=pins)
    with pytest.raises(CatalogError) as info:
        build(config, embedder=HashEmbedder())
    found = {(p.line, p.field) for p in info.value.problems}
    assert found == {
        (2, "pin_id"),
        (4, "title"),
        (4, "text"),
        (5, "pin_id"),
        (6, "text"),
        (7, "<record>"),
    }
    text = str(info.value)
    assert f"{pins}:5: pin_id: duplicate pin_id 'p0' (first seen at line 1)" in text
    assert f"{pins}:4: title: expected a string, got number" in text
    assert artifact.list_versions(tmp_path / "idx") == []


def test_skip_invalid_keeps_good_pins_and_writes_their_rejects(tmp_path: Path) -> None:
    write_catalog_jsonl(make_records(300), tmp_path / "ads.jsonl")
    rows = _pins(5)
    rows[2]["pin_id"] = None
    pins = _write_jsonl(rows, tmp_path / "pins.jsonl")
    config = BuildConfig(
        catalog=tmp_path / "ads.jsonl", out=tmp_path / "idx", pins=pins, skip_invalid=True
    )
    result = build(config, embedder=HashEmbedder())
    assert result.manifest.pins is not None
    assert (result.manifest.pins.count, result.manifest.pins.rejected) == (4, 1)
    rejects = (result.version_dir / "pin_rejects.jsonl").read_text().splitlines()
    assert [json.loads(r)["line"] for r in rejects] == [3]
    assert json.loads(rejects[0])["field"] == "pin_id"


def test_csv_and_parquet_pins_with_precomputed_embeddings(tmp_path: Path) -> None:
    xp = clustered_vectors(3, 4, seed=2)
    (tmp_path / "pins.csv").write_text(
        "pin_id,title,embedding,extra\n"
        + "".join(f'p{i},t{i},"{json.dumps(xp[i].tolist())}",x\n' for i in range(3)),
        encoding="utf-8",
    )
    csv = read_pins(tmp_path / "pins.csv")
    assert [p.pin_id for p in csv.records] == ["p0", "p1", "p2"]
    assert csv.embeddings is not None
    np.testing.assert_allclose(csv.embeddings, xp, atol=1e-6)
    table = pa.table({"pin_id": ["a", "b"], "embedding": [[1.0, 0.0], [0.0, float("nan")]]})
    pq.write_table(table, tmp_path / "pins.parquet")
    with pytest.raises(CatalogError, match=r"pins.parquet:row 2: embedding: value at index 1"):
        read_pins(tmp_path / "pins.parquet")


def test_precomputed_pins_must_have_the_ads_dimension(tmp_path: Path) -> None:
    records = make_records(300)
    write_catalog_jsonl(records, tmp_path / "ads.jsonl", embeddings=clustered_vectors(300))
    rows: list[dict[str, object]] = [
        {"pin_id": "a", "embedding": [1.0] * 8},
        {"pin_id": "b", "embedding": [0.5] * 8},
    ]
    pins = _write_jsonl(rows, tmp_path / "pins.jsonl")
    config = BuildConfig(catalog=tmp_path / "ads.jsonl", out=tmp_path / "idx", pins=pins)
    with pytest.raises(CatalogError, match=r"pins.jsonl:1: embedding: dimension 8 differs from"):
        build(config)
    assert artifact.list_versions(tmp_path / "idx") == []


def test_text_pins_need_the_model_that_embedded_the_ads(tmp_path: Path) -> None:
    write_catalog_jsonl(
        make_records(300), tmp_path / "ads.jsonl", embeddings=clustered_vectors(300)
    )
    pins = _write_jsonl(_pins(3), tmp_path / "pins.jsonl")
    config = BuildConfig(catalog=tmp_path / "ads.jsonl", out=tmp_path / "idx", pins=pins)
    with pytest.raises(BuildError, match="pass --model"):
        build(config)
    assert artifact.list_versions(tmp_path / "idx") == []


def test_precomputed_pins_beside_precomputed_ads(tmp_path: Path) -> None:
    xb = clustered_vectors(300)
    write_catalog_jsonl(make_records(300), tmp_path / "ads.jsonl", embeddings=xb)
    rows: list[dict[str, object]] = [
        {"pin_id": f"p{i}", "embedding": (2 * xb[i]).tolist()} for i in range(4)
    ]
    pins = _write_jsonl(rows, tmp_path / "pins.jsonl")
    result = build(BuildConfig(catalog=tmp_path / "ads.jsonl", out=tmp_path / "idx", pins=pins))
    art = artifact.load(result.version_dir)
    assert art.pins is not None and art.manifest.pins is not None
    assert art.manifest.pins.source == "catalog embeddings"
    np.testing.assert_allclose(art.pins.embeddings, normalize(xb[:4]), atol=1e-6)


def _tampered(result: BuildResult, tmp_path: Path, section: dict[str, object]) -> Path:
    """A copy of the version whose manifest's pins section is changed (checksums still match)."""
    version = tmp_path / result.version_dir.name
    shutil.copytree(result.version_dir, version)
    path = version / artifact.MANIFEST
    obj = json.loads(path.read_text())
    obj["pins"].update(section)
    path.write_text(json.dumps(obj))
    return version


def test_load_refuses_pins_of_another_model_or_dimension(
    text_build: BuildResult, tmp_path: Path
) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"model": "another-model"}, "pins embedded with another-model"),
        ({"dimension": 16}, r"\(16-d\), ads with hash-bow \(32-d\)"),
        ({"count": 39}, "inconsistent pin table: 40 pins"),
    ]
    for section, message in cases:
        version = _tampered(text_build, tmp_path / str(len(message)), section)
        with pytest.raises(ArtifactError, match=message):
            artifact.load(version)
