"""Sharded versions: stable assignment, one shared quantizer, the layout, recall as served."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer import artifact
from indexer.ann import exact_search, merge_topk, normalize, recall_at_k, search_params
from indexer.artifact import ArtifactError
from indexer.build import BuildConfig, BuildError, BuildResult, build, eval_queries
from indexer.manifest import Manifest
from indexer.records import AdRecord
from indexer.shards import assign, shard_of

VectorCatalog = tuple[Path, list[AdRecord], np.ndarray]
SHARDS = 3


@pytest.fixture(scope="module")
def sharded(vector_catalog: VectorCatalog, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    path, _, _ = vector_catalog
    out = tmp_path_factory.mktemp("sharded")
    config = BuildConfig(
        catalog=path,
        out=out,
        index_factory="IVF32,PQ16x4fs,RFlat",
        nprobe=8,
        k_factor=2,
        threads=1,
        shards=SHARDS,
        allow_below_target=True,  # a fixed point: these tests are about sharding, not the gate
    )
    return build(config)


def test_assignment_is_sha256_and_the_same_in_every_process() -> None:
    ids = [f"ad-{i:05d}" for i in range(3000)]
    for ad_id in ids[:20]:
        digest = hashlib.sha256(ad_id.encode()).digest()
        assert shard_of(ad_id, SHARDS) == int.from_bytes(digest[:8], "big") % SHARDS
    # Another interpreter with another hash seed: Python's hash() would differ, this must not.
    code = "from indexer.shards import shard_of; print([shard_of(f'ad-{i:05d}', 3) for i in range(50)])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert json.loads(out.stdout) == [shard_of(a, 3) for a in ids[:50]]
    rows = assign(ids, SHARDS)
    assert sorted(np.concatenate(rows).tolist()) == list(range(len(ids)))
    assert all(900 <= len(r) <= 1100 for r in rows)  # about a third each


def test_layout_manifest_and_each_shard_loads_as_an_artifact(
    sharded: BuildResult, vector_catalog: VectorCatalog
) -> None:
    _, records, xb = vector_catalog
    m = sharded.manifest
    assert m.shards is not None and m.shards.count == SHARDS and m.shards.index is None
    assert [e.name for e in m.shards.entries] == [f"shard-{s}" for s in range(SHARDS)]
    assert sum(e.counts.ads for e in m.shards.entries) == m.counts.ads == len(records)
    names = ("index.faiss", "ads.jsonl", "embeddings.npy", "manifest.json")
    assert set(m.files) == {f"shard-{s}/{name}" for s in range(SHARDS) for name in names}
    assert Manifest.from_json(m.to_json()) == m  # the strict reader knows every field
    row = {r.ad_id: i for i, r in enumerate(records)}
    seen: list[str] = []
    quantizers = []
    for s in range(SHARDS):
        art = artifact.load(sharded.version_dir.parent, shard=s)  # through LATEST
        assert (art.shard, art.version) == (s, m.version)
        assert art.root == sharded.version_dir.parent
        assert art.manifest.shards is not None and art.manifest.shards.index == s
        assert art.manifest.search == m.search and art.manifest.quality == m.quality
        assert art.manifest.counts == m.shards.entries[s].counts
        assert all(shard_of(a.ad_id, SHARDS) == s for a in art.ads)
        rows = [row[a.ad_id] for a in art.ads]
        assert rows == sorted(rows)  # catalog order within a shard
        np.testing.assert_allclose(art.embeddings, xb[rows], atol=1e-6)
        assert art.index.ntotal == len(art.ads)
        ivf = faiss.extract_index_ivf(art.index)
        quantizers.append(ivf.quantizer.reconstruct_n(0, ivf.nlist))
        seen += [a.ad_id for a in art.ads]
        # a shard's own directory loads too, as today's artifact
        assert artifact.load(art.path).shard == s
    assert sorted(seen) == sorted(r.ad_id for r in records)
    for q in quantizers[1:]:
        np.testing.assert_array_equal(q, quantizers[0])  # one trained quantizer for all


def test_sharded_and_unsharded_are_refused_the_wrong_way(
    sharded: BuildResult, built_index: BuildResult, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactError, match=r"sharded into 3; load one shard"):
        artifact.load(sharded.version_dir)
    with pytest.raises(ArtifactError, match=r"not sharded; serve it without --shard"):
        artifact.load(built_index.version_dir, shard=0)
    with pytest.raises(ArtifactError, match=r"shard 3 of 3 does not exist"):
        artifact.load(sharded.version_dir, shard=3)


@pytest.mark.parametrize("name", ["manifest.json", "index.faiss", "ads.jsonl"])
def test_a_corrupted_shard_file_is_refused(sharded: BuildResult, tmp_path: Path, name: str) -> None:
    version = tmp_path / sharded.version_dir.name
    shutil.copytree(sharded.version_dir, version)
    path = version / "shard-1" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        artifact.load(version, shard=1)
    assert artifact.load(version, shard=0).shard == 0  # the other shards are intact


def test_recall_gate_measures_the_version_as_served(
    sharded: BuildResult, vector_catalog: VectorCatalog
) -> None:
    """The recorded recall is the fan-out + merge over every shard against the whole catalog."""
    path, _, xb = vector_catalog
    m = sharded.manifest
    assert m.quality is not None
    point = next(p for p in m.quality.curve if (p.nprobe, p.k_factor) == (8, 2))
    k = m.quality.recall_k
    config = BuildConfig(catalog=path, out=sharded.version_dir.parent, shards=SHARDS)
    xq = eval_queries(config, xb).xq
    assert len(xq) == m.quality.queries.nq
    arts = [artifact.load(sharded.version_dir, shard=s) for s in range(SHARDS)]
    row = {f"ad-{i:05d}": i for i in range(len(xb))}
    per_shard = []
    for art in arts:
        params = search_params(art.index, 8, 2, k, min_rerank=m.search.min_rerank)
        D, I = art.index.search(xq, k, params=params)
        catalog_rows = np.array([row[a.ad_id] for a in art.ads])
        per_shard.append((D, np.where(I >= 0, catalog_rows[np.maximum(I, 0)], -1)))
    found = [
        merge_topk([D[q] for D, _ in per_shard], [I[q] for _, I in per_shard], k)[1]
        for q in range(len(xq))
    ]
    truth = exact_search(xb, xq, k)[1]
    assert recall_at_k(found, truth) == pytest.approx(point.recall, abs=1e-4)


def test_same_lists_probed_so_merged_ivf_flat_equals_one_index(
    vector_catalog: VectorCatalog, tmp_path: Path
) -> None:
    path, _, xb = vector_catalog

    def config(out: Path, shards: int | None) -> BuildConfig:
        return BuildConfig(
            catalog=path,
            out=out,
            index_factory="IVF32,Flat",
            nprobe=4,
            threads=1,
            shards=shards,
            allow_below_target=True,  # the same fixed point sharded or not
        )

    one = artifact.load(build(config(tmp_path / "one", None)).version_dir)
    three = build(config(tmp_path / "three", SHARDS)).version_dir
    shards = [artifact.load(three, shard=s) for s in range(SHARDS)]
    rng = np.random.default_rng(2)
    noise = 0.3 * rng.standard_normal((100, xb.shape[1]))
    xq: np.ndarray = normalize(xb[rng.choice(len(xb), 100, replace=False)] + noise)
    k = 50
    D1, I1 = one.index.search(xq, k, params=search_params(one.index, 4, 1, k))
    row = {a.ad_id: i for i, a in enumerate(one.ads)}
    results = []
    for art in shards:
        D, I = art.index.search(xq, k, params=search_params(art.index, 4, 1, k))
        rows = np.array([row[a.ad_id] for a in art.ads])
        results.append((D, np.where(I >= 0, rows[np.maximum(I, 0)], -1)))
    for q in range(len(xq)):
        scores, ids = merge_topk([r[0][q] for r in results], [r[1][q] for r in results], k)
        np.testing.assert_allclose(scores, D1[q], atol=1e-5)  # the same scores, rank by rank
        above = D1[q][-1] + 1e-5  # and the same ads, but for ties at the k-th score
        assert set(ids[scores > above].tolist()) == set(I1[q][D1[q] > above].tolist())


def test_a_shard_without_ads_stops_the_build(tmp_path: Path, vector_catalog: VectorCatalog) -> None:
    path, _, _ = vector_catalog
    config = BuildConfig(
        catalog=path, out=tmp_path, index_factory="IVF16,Flat", threads=1, shards=5000
    )
    with pytest.raises(BuildError, match=r"gets no ad of 3000: use fewer shards"):
        build(config)
    assert not (tmp_path / artifact.LATEST).exists()


def test_pins_with_shards_is_refused_not_dropped(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--pins with --shards is not supported"):
        BuildConfig(catalog=tmp_path / "a.jsonl", out=tmp_path, shards=2, pins=tmp_path / "p.jsonl")
