from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer import artifact
from indexer.ann import exact_search, normalize, recall_at_k
from indexer.build import BuildConfig, BuildError, RecallBelowTarget, build
from indexer.catalog import write_catalog_jsonl
from indexer.manifest import ModelInfo
from indexer.records import CatalogError
from retrieval import cli
from retrieval.searcher import Searcher
from support import HashEmbedder, clustered_vectors, make_records

# One build per factory string, as FAISS's own tests do: Flat lists, 4-bit fast-scan PQ with
# flat re-ranking, 8-bit PQ (no polysemous training) with SQ8 re-ranking.
FACTORIES = ["IVF32,Flat", "IVF32,PQ16x4fs,RFlat", "IVF32,PQ8np,Refine(SQ8)"]


@pytest.mark.parametrize("factory", FACTORIES)
def test_recall_against_exact_search(factory: str, tmp_path: Path) -> None:
    records = make_records(4000, paused_every=0)
    xb = clustered_vectors(len(records))
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(records, path, embeddings=xb)
    # Build-time tuning picks k_factor for recall@recall_k: tune it for the k measured here.
    config = BuildConfig(
        catalog=path, out=tmp_path / "idx", index_factory=factory, nprobe=8, threads=1, recall_k=20
    )
    result = build(config)
    searcher = Searcher(artifact.load(result.version_dir))
    xq = normalize(
        xb[:200] + 0.3 * np.random.default_rng(0).standard_normal(xb[:200].shape).astype(np.float32)
    )
    truth = exact_search(xb, xq, 20)[1]
    found = [searcher.search(q, 20).ids.tolist() for q in xq]
    assert recall_at_k(found, truth) >= 0.9, factory


def test_text_catalog_is_embedded_and_recorded(tmp_path: Path) -> None:
    records = make_records(600)
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(records, path)
    embedder = HashEmbedder()
    config = BuildConfig(
        catalog=path, out=tmp_path / "idx", text_fields=("title", "creative_text"), threads=1
    )
    result = build(config, embedder=embedder)
    m = result.manifest
    assert m.model == ModelInfo(
        "hash-bow", embedder.dimension, "text", ("title", "creative_text"), ". ", "hash-bow"
    )
    assert m.index.factory == "IVF8,Flat"  # small corpus rule
    art = artifact.load(result.version_dir)
    expected = embedder.encode([f"{records[5].title}. {records[5].creative_text}"])[0]
    np.testing.assert_allclose(art.embeddings[5], expected, atol=1e-6)


def test_invalid_catalog_fails_before_anything_is_published(tmp_path: Path) -> None:
    path = tmp_path / "ads.jsonl"
    path.write_text(
        '{"ad_id": "a", "advertiser_id": "x", "campaign_id": "c", "title": "t", "status": "on"}\n'
    )
    with pytest.raises(CatalogError, match="status"):
        build(BuildConfig(catalog=path, out=tmp_path / "idx", threads=1), embedder=HashEmbedder())
    assert not (tmp_path / "idx").exists() or artifact.list_versions(tmp_path / "idx") == []


def test_precomputed_dimension_must_match_the_query_model(tmp_path: Path) -> None:
    records = make_records(100)
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(records, path, embeddings=clustered_vectors(100, 16))
    config = BuildConfig(catalog=path, out=tmp_path / "idx", model=tmp_path, threads=1)
    with pytest.raises(
        BuildError,
        match=r"ads.jsonl:1: embedding: dimension 16 differs from the query model hash-bow \(32-d\)",
    ):
        build(config, embedder=HashEmbedder(32))


def _vector_catalog(tmp_path: Path, n: int = 3000) -> Path:
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(make_records(n), path, embeddings=clustered_vectors(n))
    return path


def test_build_publishes_its_measured_curve_and_tuned_defaults(tmp_path: Path) -> None:
    path = _vector_catalog(tmp_path)
    m = build(BuildConfig(catalog=path, out=tmp_path / "idx", threads=1)).manifest
    assert m.index.factory == "IVF64,PQ16x4fs,Refine(SQfp16)"  # 3,000 x 32: the default rule
    q = m.quality
    assert q is not None
    assert q.target_recall == 0.95 and q.recall_k == 100 and not q.below_target
    assert q.queries.source == "catalog-sample" and q.queries.nq == 500
    assert q.chosen.recall >= 0.95 and q.chosen.frontier
    assert (m.search.nprobe, m.search.k_factor) == (q.chosen.nprobe, q.chosen.k_factor)
    assert q.chosen in q.curve
    estimate = m.index.memory_bytes_estimate
    assert estimate is not None and 0 < estimate < 3000 * 32 * 4 + 3000 * 8 + 2**20


# 2 sub-quantizers of 16 dimensions with 16 centroids each and no re-ranking: far below 0.95.
TINY_PQ = "IVF16,PQ2x4fs"


def test_gate_refuses_an_index_below_target_and_leaves_latest_alone(tmp_path: Path) -> None:
    path = _vector_catalog(tmp_path)
    out = tmp_path / "idx"
    good = build(BuildConfig(catalog=path, out=out, index_factory="IVF16,Flat", threads=1))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RecallBelowTarget) as info:
        build(BuildConfig(catalog=path, out=out, index_factory=TINY_PQ, threads=1))
    message = str(info.value)
    assert f"recall@100 of {TINY_PQ} does not reach the target 0.95: best 0." in message
    assert "a re-ranking stage: 'IVF16,PQ2x4fs,RFlat'" in message
    assert "more PQ bytes: 'IVF16,PQ4x4fs'" in message and "--allow-below-target" in message
    assert info.value.tuning.best.recall < 0.95
    assert sorted(p.name for p in out.iterdir()) == before, "no version, no staging dir left"
    assert artifact.resolve(out) == good.version_dir


def test_gate_override_publishes_and_marks_the_manifest(tmp_path: Path) -> None:
    path = _vector_catalog(tmp_path)
    out = tmp_path / "idx"
    config = BuildConfig(
        catalog=path, out=out, index_factory=TINY_PQ, threads=1, allow_below_target=True
    )
    result = build(config)
    q = result.manifest.quality
    assert q is not None
    assert q.below_target and not q.reached and q.chosen.recall < 0.95
    assert q.chosen.recall == max(p.recall for p in q.curve)
    assert artifact.resolve(out) == result.version_dir


def test_explicit_search_parameters_win_over_tuning(tmp_path: Path) -> None:
    # Reaching the target: the cheapest point among those with the explicit values. Below it
    # (with the override): the explicit values are still what is published.
    path = _vector_catalog(tmp_path)
    for nprobe, k_factor, target in ((32, 8, 0.95), (2, 2, 0.999)):
        config = BuildConfig(
            catalog=path,
            out=tmp_path / f"idx-{nprobe}",
            threads=1,
            nprobe=nprobe,
            k_factor=k_factor,
            target_recall=target,
            allow_below_target=True,
        )
        m = build(config).manifest
        assert m.quality is not None
        assert m.quality.below_target == (target > 0.99)  # both branches are exercised
        assert (m.search.nprobe, m.search.k_factor) == (nprobe, k_factor)
        assert (m.quality.chosen.nprobe, m.quality.chosen.k_factor) == (nprobe, k_factor)


def test_cli_exit_code_and_info_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _vector_catalog(tmp_path)
    out = tmp_path / "idx"
    argv = ["build", "--catalog", str(path), "--out", str(out), "--threads", "1"]
    assert cli.main([*argv, "--index-factory", TINY_PQ]) == 3
    assert "does not reach the target" in capsys.readouterr().err
    assert not out.exists() or artifact.list_versions(out) == []
    assert cli.main([*argv, "--index-factory", TINY_PQ, "--allow-below-target"]) == 0
    assert "BELOW TARGET" in capsys.readouterr().out
    assert cli.main(["info", "--index", str(out)]) == 0
    text = capsys.readouterr().out
    assert "BELOW TARGET (published with --allow-below-target)" in text
    assert "frontier" in text and "<- default" in text
    assert cli.main(["info", "--index", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["quality"]["below_target"] is True


def test_normalize_in_place_matches_the_copy_and_keeps_zero_rows() -> None:
    x = clustered_vectors(50, 16) * 3.0
    x[7] = 0.0
    expected = normalize(x)
    assert expected is not x and np.abs(x[0]).sum() > 0  # the copy leaves x alone
    same = normalize(x, inplace=True)
    assert same is x  # no second matrix: a build's peak memory
    np.testing.assert_allclose(same, expected, rtol=1e-6)
    assert not same[7].any()
    np.testing.assert_allclose(np.linalg.norm(np.delete(same, 7, axis=0), axis=1), 1.0, rtol=1e-5)
