"""``adindex build --engine ray`` as a user runs it: its own local Ray, the real model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from benchmarks.scale_out import ray_head
from indexer import artifact
from indexer.ann import exact_search, recall_at_k, search_params
from indexer.build import BuildConfig, build
from indexer.catalog import write_catalog_jsonl
from indexer.embedding import SentenceTransformerEmbedder
from indexer.queries import catalog_queries
from indexer.sample import generate_catalog, write_sample
from support import HashEmbedder

pytest.importorskip("ray", reason="the [ray] extra is not installed (make test installs it)")


def _recall(version_dir: Path, xq: np.ndarray, k: int = 100) -> float:
    art = artifact.load(version_dir)
    m = art.manifest
    params = search_params(
        art.index, m.search.nprobe, m.search.k_factor, k, min_rerank=m.search.min_rerank
    )
    _, found = art.index.search(xq, k, params=params)
    return recall_at_k(found, exact_search(art.exact_embeddings(), xq, k)[1])


def _session(sid: int) -> list[psutil.Process]:
    """Processes of a session (what a build started and did not stop)."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                found.append(p)
        except OSError:  # exited meanwhile
            continue
    return found


@pytest.mark.slow
def test_engine_ray_starts_and_stops_its_own_ray(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder
) -> None:
    catalog, _ = write_sample(tmp_path / "sample", n_ads=300, n_users=1)
    out = tmp_path / "ray"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own, not a cluster this shell points at
    argv = [sys.executable, "-m", "retrieval.cli", "build", "--catalog", str(catalog),
            "--out", str(out), "--engine", "ray", "--threads", "1"]  # fmt: skip
    # Its own session: whatever the build starts (GCS, raylet, workers) stays in it.
    proc = subprocess.Popen(
        argv, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    _, alive = psutil.wait_procs(_session(proc.pid), timeout=60)
    assert not alive, f"Ray processes left behind: {alive}"
    on_ray = artifact.resolve(out)
    m = artifact.read_manifest(on_ray)
    assert (m.build.engine, m.build.nodes, m.counts.ads) == ("ray", 1, 300)
    assert m.embedding is not None and (m.embedding.embedded, m.embedding.reused) == (300, 0)
    local = build(
        BuildConfig(catalog=catalog, out=tmp_path / "local", threads=1), embedder=real_embedder
    )
    assert m.model == local.manifest.model
    xb = np.load(on_ray / artifact.EMBEDDINGS_FILE)
    np.testing.assert_allclose(xb, np.load(local.version_dir / artifact.EMBEDDINGS_FILE), atol=1e-4)
    xq = catalog_queries(xb, 200, seed=5).xq
    r_ray, r_local = _recall(on_ray, xq), _recall(local.version_dir, xq)
    assert r_ray >= 0.9 and abs(r_ray - r_local) <= 0.01, (r_ray, r_local)


def test_engine_ray_joins_a_cluster_started_with_ray_start(tmp_path: Path) -> None:
    """``ray start --head`` turns token authentication on; the build presents the token."""
    records = generate_catalog(300)
    path = tmp_path / "ads.jsonl"
    xb = HashEmbedder().encode([r.title for r in records])
    write_catalog_jsonl(records, path, embeddings=xb)  # no model to load: the join is the test
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    out = tmp_path / "idx"
    with ray_head(1) as address:
        argv = [sys.executable, "-m", "retrieval.cli", "build", "--catalog", str(path),
                "--out", str(out), "--engine", "ray", "--ray-address", address]  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    m = artifact.read_manifest(artifact.resolve(out))
    assert (m.build.engine, m.counts.ads) == ("ray", 300)
    assert "Joining a Ray cluster" in m.build.seconds
