from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer import artifact
from indexer.build import BuildConfig, BuildError, build
from indexer.catalog import CatalogError, write_catalog_jsonl
from indexer.embedding import normalize
from retrieval.searcher import Searcher
from support import HashEmbedder, clustered_vectors, exact_topk, make_records, recall_at_k

# One build per factory string, as FAISS's own tests do: Flat lists, 4-bit fast-scan PQ with
# flat re-ranking, 8-bit PQ (no polysemous training) with SQ8 re-ranking.
FACTORIES = ["IVF32,Flat", "IVF32,PQ16x4fs,RFlat", "IVF32,PQ8np,Refine(SQ8)"]


@pytest.mark.parametrize("factory", FACTORIES)
def test_recall_against_exact_search(factory: str, tmp_path: Path) -> None:
    records = make_records(4000, paused_every=0)
    xb = clustered_vectors(len(records))
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(records, path, embeddings=xb)
    result = build(
        BuildConfig(catalog=path, out=tmp_path / "idx", index_factory=factory, nprobe=8, threads=1)
    )
    searcher = Searcher(artifact.load(result.version_dir))
    xq = normalize(
        xb[:200] + 0.3 * np.random.default_rng(0).standard_normal(xb[:200].shape).astype(np.float32)
    )
    truth = exact_topk(xb, xq, 20)
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
    assert m["model"] == {
        "name": "hash-bow",
        "source": "text",
        "dimension": embedder.dimension,
        "text_fields": ["title", "creative_text"],
        "text_separator": ". ",
    }
    assert m["index"]["factory"] == "IVF8,Flat"  # small corpus rule
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
