"""``--engine ray`` on a real two-node Ray cluster (``ray.cluster_utils.Cluster``, one per module).

The builds embed with ``support.HashEmbedder`` in the actors (``embedder_factory``); the slow
test in test_ray_cli.py runs the real model through ``adindex build --engine ray``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer import artifact
from indexer.ann import exact_search, recall_at_k, search_params
from indexer.build import BuildConfig, BuildError, BuildResult, RayOptions, build
from indexer.catalog import read_catalog, write_catalog_jsonl
from indexer.queries import catalog_queries
from indexer.records import AdRecord, CatalogError
from indexer.sample import generate_catalog
from retrieval import cli
from support import HashEmbedder

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (make test installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

N_ADS = 2000
TESTS = Path(__file__).resolve().parents[1]  # where ``support`` is imported from, for workers


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two nodes of one CPU each; afterwards, every process the cluster started has exited."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # Nodes inherit the environment: their workers import ``support`` (the test embedder).
        env.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        )
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        c = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        c.add_node(num_cpus=1)
        try:
            yield c
        finally:
            started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
            c.shutdown()  # type: ignore[no-untyped-call]
            _, alive = psutil.wait_procs(started, timeout=60)
            assert not alive, f"Ray processes left behind: {alive}"


def _options(c: Cluster, **kwargs: object) -> RayOptions:
    return RayOptions(address=c.address, add_block_rows=700, batch_size=128, **kwargs)  # type: ignore[arg-type]


def _ad_json(r: AdRecord) -> dict[str, object]:
    return r.to_json()


def write_catalog_dir(root: Path, records: list[AdRecord]) -> Path:
    """The sample ads as part files (JSONL and Parquet), with a few bad rows among them."""
    root.mkdir(parents=True, exist_ok=True)
    half = len(records) // 2
    lines = [json.dumps(_ad_json(r)) for r in records[:half]]
    lines.insert(10, '{"ad_id": "broken", ')  # not JSON
    bad = {**_ad_json(records[5]), "ad_id": "bad-status", "status": "live"}
    lines.insert(20, json.dumps(bad))
    (root / "part-0.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = [_ad_json(r) for r in records[half:]]
    rows.insert(3, {**rows[0], "ad_id": records[0].ad_id})  # also in part-0: a duplicate
    for r in rows:
        r["targeting"] = json.dumps(r["targeting"])
    pq.write_table(pa.Table.from_pylist(rows), root / "part-1.parquet")
    return root


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog_dir(tmp_path_factory.mktemp("catalog") / "ads", generate_catalog(N_ADS))


def _config(catalog: Path, out: Path, **kwargs: object) -> BuildConfig:
    return BuildConfig(catalog=catalog, out=out, threads=1, skip_invalid=True, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def builds(
    cluster: Cluster, catalog_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BuildResult, BuildResult]:
    """The same catalog built on the cluster and in this process."""
    out = tmp_path_factory.mktemp("ray")
    on_ray = build(
        _config(catalog_dir, out, engine="ray", ray=_options(cluster)),
        embedder_factory=HashEmbedder,
    )
    local = build(_config(catalog_dir, tmp_path_factory.mktemp("local")), embedder=HashEmbedder())
    return on_ray, local


def _recall(result: BuildResult, xq: np.ndarray, k: int = 100) -> float:
    art = artifact.load(result.version_dir)
    m = art.manifest
    params = search_params(
        art.index, m.search.nprobe, m.search.k_factor, k, min_rerank=m.search.min_rerank
    )
    _, found = art.index.search(xq, k, params=params)
    return recall_at_k(found, exact_search(art.exact_embeddings(), xq, k)[1])


def test_ray_build_publishes_what_a_local_build_does(
    builds: tuple[BuildResult, BuildResult],
) -> None:
    on_ray, local = builds
    m, ml = on_ray.manifest, local.manifest
    assert (m.build.engine, m.build.nodes) == ("ray", 2)
    assert m.counts == ml.counts and m.counts.ads == N_ADS and m.counts.rejected == 3
    assert m.catalog.sha256 == ml.catalog.sha256 and m.model == ml.model
    for name in (artifact.ADS_FILE, artifact.REJECTS_FILE):
        assert (on_ray.version_dir / name).read_bytes() == (local.version_dir / name).read_bytes()
    xb = np.load(on_ray.version_dir / artifact.EMBEDDINGS_FILE)
    np.testing.assert_allclose(xb, np.load(local.version_dir / artifact.EMBEDDINGS_FILE), atol=1e-6)
    # FAISS id i is row i of ads.jsonl: each ad finds itself (or an ad of identical text).
    index = artifact.load(on_ray.version_dir).index
    rows = np.arange(0, N_ADS, 97)
    _, found = index.search(xb[rows], 1, params=search_params(index, 64, 4, 1))
    np.testing.assert_allclose(xb[found[:, 0]], xb[rows], atol=1e-6)
    xq = catalog_queries(xb, 200, seed=3).xq
    r_ray, r_local = _recall(on_ray, xq), _recall(local, xq)
    assert r_ray >= 0.9 and abs(r_ray - r_local) <= 0.01, (r_ray, r_local)


def test_ray_build_rejects_the_same_rows_with_the_same_messages(
    cluster: Cluster, catalog_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(CatalogError) as local:
        read_catalog(catalog_dir)
    config = dataclasses.replace(
        _config(catalog_dir, tmp_path / "idx", engine="ray", ray=_options(cluster)),
        skip_invalid=False,
    )
    with pytest.raises(CatalogError) as on_ray:
        build(config, embedder_factory=HashEmbedder)
    assert [str(p) for p in on_ray.value.problems] == [str(p) for p in local.value.problems]
    first = generate_catalog(N_ADS)[0].ad_id
    assert [str(p) for p in on_ray.value.problems] == [
        f"{catalog_dir / 'part-0.jsonl'}:11: <record>: not valid JSON: Expecting property name "
        "enclosed in double quotes: line 2 column 1 (char 21)",
        f"{catalog_dir / 'part-0.jsonl'}:21: status: 'live': expected one of active, paused",
        f"{catalog_dir / 'part-1.parquet'}:row 4: ad_id: duplicate ad_id {first!r} "
        f"(first seen at {catalog_dir / 'part-0.jsonl'} line 1)",
    ]
    assert artifact.list_versions(tmp_path / "idx") == []


def test_a_ray_rebuild_embeds_only_changed_ads(
    cluster: Cluster, builds: tuple[BuildResult, BuildResult], tmp_path: Path
) -> None:
    on_ray, _ = builds
    records = generate_catalog(N_ADS)
    changed = set(range(0, N_ADS, 100))  # 1%
    for i in changed:
        records[i] = dataclasses.replace(records[i], title=f"A new title for ad {i}")
    catalog = write_catalog_dir(tmp_path / "ads", records)
    config = _config(catalog, on_ray.version_dir.parent, engine="ray", ray=_options(cluster))
    m = build(config, embedder_factory=HashEmbedder).manifest
    assert m.embedding is not None
    assert (m.embedding.embedded, m.embedding.reused) == (len(changed), N_ADS - len(changed))
    assert m.embedding.texts_embedded == len(changed)


class WorkerEmbedder(HashEmbedder):
    """Embeds like HashEmbedder, but names itself differently inside a Ray worker: nodes with
    other model files installed than the driver's."""

    @property
    def embedder_id(self) -> str:
        in_worker = ray.get_runtime_context().worker.mode == ray.WORKER_MODE
        return "hash-bow/other-weights" if in_worker else "hash-bow"


# Workers cannot import this test module: ship the class itself.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_actors_with_another_embedder_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(generate_catalog(300), path)
    config = _config(path, tmp_path / "idx", engine="ray", ray=_options(cluster))
    with pytest.raises(BuildError, match="refusing to mix vectors of different embedders"):
        build(config, embedder_factory=WorkerEmbedder)
    assert artifact.list_versions(tmp_path / "idx") == []
    # The abandoned Ray Data iterator was closed in the build: collecting it now must not
    # shut an executor down late, which re-connects this process to the cluster.
    gc.collect()
    assert not ray.is_initialized()


def test_without_an_address_a_build_starts_its_own_ray(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even while a cluster runs on this machine (``ray.init()`` alone would join it); the
    cluster fixture then checks that this Ray's processes are gone too."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    records = generate_catalog(200)
    path = tmp_path / "ads.jsonl"
    xb = HashEmbedder().encode([r.title for r in records])
    write_catalog_jsonl(records, path, embeddings=xb)  # no model: no actors to wait for
    config = _config(path, tmp_path / "idx", engine="ray", ray=RayOptions(num_cpus=1))
    m = build(config).manifest
    assert (m.build.engine, m.build.nodes, m.counts.ads) == ("ray", 1, 200)
    assert "Starting a local Ray" in m.build.seconds


def test_no_cluster_at_the_address_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(generate_catalog(50), path)
    out = tmp_path / "idx"
    argv = ["build", "--catalog", str(path), "--out", str(out), "--engine", "ray"]
    assert cli.main([*argv, "--ray-address", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"error: no Ray cluster at '127.0.0.1:{port}'" in err and "ray start --head" in err
    assert not out.exists() or artifact.list_versions(out) == []


def test_actors_larger_than_every_node_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    """Two nodes of one CPU: a two-CPU actor fits the cluster's total but no node."""
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(generate_catalog(100), path)
    config = _config(path, tmp_path / "idx", engine="ray", ray=_options(cluster, cpus_per_actor=2))
    with pytest.raises(BuildError, match="exceeds every node's CPUs"):
        build(config, embedder_factory=HashEmbedder)
    assert artifact.list_versions(tmp_path / "idx") == []
    assert not ray.is_initialized()


def test_something_else_listening_at_the_address_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong port where some other server listens: ray.init would retry for minutes."""
    from indexer import ray_build

    monkeypatch.setattr(ray_build, "GCS_PROBE_S", 1.0)
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(generate_catalog(50), path)
    out = tmp_path / "idx"
    with socket.socket() as listener:  # accepts connections, never speaks gRPC
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        argv = ["build", "--catalog", str(path), "--out", str(out), "--engine", "ray"]
        assert cli.main([*argv, "--ray-address", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"error: no Ray cluster at '127.0.0.1:{port}'" in err and "Ray head's GCS" in err
    assert not out.exists() or artifact.list_versions(out) == []
    assert not ray.is_initialized()


def test_blocks_filling_whole_fast_scan_blocks_merge_without_corruption(cluster: Cluster) -> None:
    """FAISS 1.15's merge into a fast-scan list whose size is a non-zero multiple of its block
    (256 bytes here) writes past the list: the driver aborted. Such blocks are added there."""
    from indexer.ann import normalize
    from indexer.build import train_index
    from indexer.params import IndexParams
    from indexer.ray_build import index_on_ray

    rng = np.random.default_rng(0)
    xb = normalize(rng.standard_normal((1024, 32)).astype(np.float32))
    params = IndexParams("IVF1,PQ16x4fs,RFlat", nlist=1, nprobe=1, k_factor=4, train_size=1024)
    ray.init(address=cluster.address)
    try:
        merged = index_on_ray(xb, params, 7, options=RayOptions(add_block_rows=256))
    finally:
        ray.shutdown()
    local = train_index(xb, params, 7)
    assert merged.ntotal == local.ntotal == len(xb)
    _, got = merged.search(xb[:100], 10)
    _, want = local.search(xb[:100], 10)
    np.testing.assert_array_equal(got, want)  # same codes under the same ids: row i = id i
