from __future__ import annotations

import gc
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer import artifact
from indexer.artifact import ArtifactError
from indexer.build import BuildConfig, BuildResult, build
from indexer.manifest import SCHEMA, FileEntry, Manifest
from indexer.records import AdRecord


def test_round_trip(
    built_index: BuildResult, vector_catalog: tuple[Path, list[AdRecord], np.ndarray]
) -> None:
    _, records, xb = vector_catalog
    art = artifact.load(built_index.version_dir.parent)  # through LATEST
    assert art.path == built_index.version_dir
    m = art.manifest
    assert m == built_index.manifest == Manifest.from_json(m.to_json())  # lossless, typed
    assert m.schema == SCHEMA
    assert m.dimension == xb.shape[1] and m.metric == "inner_product"
    assert m.index.factory == "IVF32,PQ16x4fs,RFlat"
    assert m.counts.ads == len(records)
    assert m.counts.paused == sum(r.status == "paused" for r in records)
    assert set(m.files) == {artifact.INDEX_FILE, artifact.ADS_FILE, artifact.EMBEDDINGS_FILE}
    assert [a.ad_id for a in art.ads] == [r.ad_id for r in records]
    assert art.ads[0].targeting == records[0].targeting
    assert art.index.ntotal == len(records)
    np.testing.assert_allclose(art.embeddings, xb, atol=1e-6)


def _copy_version(result: BuildResult, tmp_path: Path) -> Path:
    dst = tmp_path / result.version_dir.name
    shutil.copytree(result.version_dir, dst)
    return dst


@pytest.mark.parametrize("name", [artifact.INDEX_FILE, artifact.ADS_FILE, artifact.EMBEDDINGS_FILE])
def test_corrupted_file_is_refused(built_index: BuildResult, tmp_path: Path, name: str) -> None:
    version = _copy_version(built_index, tmp_path)
    data = bytearray((version / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (version / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{name}: sha256 mismatch"):
        artifact.load(version)


def test_missing_or_truncated_file_is_refused(built_index: BuildResult, tmp_path: Path) -> None:
    version = _copy_version(built_index, tmp_path)
    (version / artifact.ADS_FILE).write_text("", encoding="utf-8")
    with pytest.raises(ArtifactError, match="bytes, manifest says"):
        artifact.load(version)
    (version / artifact.ADS_FILE).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        artifact.load(version)


def test_wrong_dimension_and_format_are_refused(built_index: BuildResult, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="expected 384"):
        artifact.load(built_index.version_dir, expected_dimension=384)
    version = _copy_version(built_index, tmp_path)
    original = json.loads((version / artifact.MANIFEST).read_text())

    def refused(change: Callable[[dict[str, Any]], object], message: str) -> None:
        manifest = json.loads(json.dumps(original))
        change(manifest)
        (version / artifact.MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match=message):
            artifact.load(version)

    refused(lambda m: m.update(schema=SCHEMA + 1), f"schema {SCHEMA + 1}.*upgrade adindex")
    refused(lambda m: m.update(schema=None, format_version=1), "older adindex.*rebuild")
    refused(lambda m: m["search"].pop("nprobe"), "search.nprobe: missing")
    refused(
        lambda m: m["quality"]["chosen"].update(recall="high"),
        "quality.chosen.recall: expected float",
    )
    refused(lambda m: m["model"].update(colour="red"), "model: unknown field.*colour")


def test_root_without_latest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="neither a version directory"):
        artifact.load(tmp_path)


def test_failed_build_leaves_previous_version_and_no_debris(
    vector_catalog: tuple[Path, list[AdRecord], np.ndarray], tmp_path: Path
) -> None:
    path, _, _ = vector_catalog
    first = build(BuildConfig(catalog=path, out=tmp_path, index_factory="IVF16,Flat", threads=1))
    with pytest.raises(Exception, match="IVF4096"):
        build(BuildConfig(catalog=path, out=tmp_path, index_factory="IVF4096,Flat", threads=1))
    assert artifact.resolve(tmp_path) == first.version_dir
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    second = build(BuildConfig(catalog=path, out=tmp_path, index_factory="IVF16,Flat", threads=1))
    assert artifact.resolve(tmp_path) == second.version_dir
    assert artifact.list_versions(tmp_path) == sorted(
        [first.version_dir.name, second.version_dir.name]
    )


def test_an_fp16_stage_is_the_one_copy_of_the_vectors(
    vector_catalog: tuple[Path, list[AdRecord], np.ndarray], tmp_path: Path
) -> None:
    """With the default Refine(SQfp16) stage the artifact's embeddings are the stage's fp16 codes,
    read in place: half RFlat's memory, within fp16 rounding of embeddings.npy."""
    path, _, _ = vector_catalog
    result = build(
        BuildConfig(
            catalog=path,
            out=tmp_path,
            index_factory="IVF32,PQ16x4fs,Refine(SQfp16)",
            nprobe=8,
            threads=1,
        )
    )
    stored = np.load(result.version_dir / artifact.EMBEDDINGS_FILE)
    loaded = artifact.load(result.version_dir)
    exact = loaded.exact_embeddings()  # ground truth stays the float32 file
    assert exact.dtype == np.float32 and np.array_equal(exact, stored)
    xb = loaded.embeddings
    del loaded
    gc.collect()
    assert xb.dtype == np.float16 and not isinstance(xb, np.memmap) and not xb.flags.writeable
    assert xb.shape == stored.shape
    assert np.abs(xb.astype(np.float32) - stored).max() <= 2.0**-11


def test_serving_holds_one_copy_of_the_vectors(built_index: BuildResult, tmp_path: Path) -> None:
    """With an RFlat stage the artifact's embeddings are the index's own vectors (no second
    copy), they outlive the Artifact object, and embeddings.npy must agree with them."""
    stored = np.load(built_index.version_dir / artifact.EMBEDDINGS_FILE)
    xb = artifact.load(built_index.version_dir).embeddings  # the Artifact itself is gone
    gc.collect()
    assert not isinstance(xb, np.memmap) and not xb.flags.writeable
    np.testing.assert_array_equal(xb, stored)
    version = _copy_version(built_index, tmp_path)
    np.save(version / artifact.EMBEDDINGS_FILE, stored[::-1].copy())  # rows no longer match ids
    manifest = artifact.read_manifest(version)
    entry = FileEntry(
        artifact._sha256(version / artifact.EMBEDDINGS_FILE),
        (version / artifact.EMBEDDINGS_FILE).stat().st_size,
    )
    files = {**manifest.files, artifact.EMBEDDINGS_FILE: entry}
    (version / artifact.MANIFEST).write_text(replace(manifest, files=files).dumps())
    with pytest.raises(ArtifactError, match="rows differ from the index's own vectors"):
        artifact.load(version)
