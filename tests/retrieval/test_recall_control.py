"""The recall controller through the real server: live traffic moves the default point.

A clustered catalog is built with near-duplicates of ads as its held-out queries, so the build
picks a low nprobe. Live queries from a harder distribution (between two clusters, noisier)
then make the controller raise it until recall@100 against exact search (computed here) holds
the target; easy queries let it lower it again; every move shows in metrics and logs, and a
new server on the same root resumes the learned point.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer.ann import exact_search, normalize, recall_at_k
from indexer.build import BuildConfig, build
from indexer.catalog import write_catalog_jsonl
from retrieval.client import RetrievalClient
from retrieval.controller import ControllerConfig
from retrieval.operating_points import OPERATING_POINTS_FILE, LearnedPoint, OperatingPointStore
from retrieval.server import RunningServer, ServerConfig, create_server
from retrieval.shadow import ShadowConfig
from support import make_records, metric_value, scrape_metrics

N, D, CLUSTERS, K = 8000, 32, 40, 100
MAX_CALLS = 4000  # per phase; convergence takes a few hundred
CHUNK = 32  # calls between looks at the controller (shadow measures them all in between)


class Clustered:
    """Ads around cluster centres; easy queries near ads, hard ones between two clusters."""

    def __init__(self, seed: int = 7):
        rng = np.random.default_rng(seed)
        self.centres = rng.standard_normal((CLUSTERS, D)).astype(np.float32)
        noise = 0.5 * rng.standard_normal((N, D)).astype(np.float32)
        self.xb = normalize(self.centres[rng.integers(0, CLUSTERS, N)] + noise)

    def easy(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        noise = 0.05 * rng.standard_normal((n, D)).astype(np.float32)
        return normalize(self.xb[rng.integers(0, N, n)] + noise)

    def hard(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        a, b = rng.integers(0, CLUSTERS, n), rng.integers(0, CLUSTERS, n)
        w = rng.uniform(0.3, 0.7, (n, 1)).astype(np.float32)
        noise = 0.9 * rng.standard_normal((n, D)).astype(np.float32)
        return normalize(w * self.centres[a] + (1 - w) * self.centres[b] + noise)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Clustered]:
    """An IVF64,Flat root whose build measured recall on easy queries (read-only)."""
    tmp = tmp_path_factory.mktemp("clustered")
    data = Clustered()
    write_catalog_jsonl(make_records(N, paused_every=0), tmp / "ads.jsonl", embeddings=data.xb)
    np.save(tmp / "easy.npy", data.easy(300, seed=1))
    build(
        BuildConfig(
            catalog=tmp / "ads.jsonl",
            out=tmp / "index",
            index_factory="IVF64,Flat",
            queries=tmp / "easy.npy",
            threads=1,
        )
    )
    return tmp / "index", data


@pytest.fixture
def root(clustered: tuple[Path, Clustered], tmp_path: Path) -> Path:
    """A copy per test: the controller writes operating_points.json into it."""
    shutil.copytree(clustered[0], tmp_path / "index")
    return tmp_path / "index"


CONFIG = ServerConfig(
    port=0,
    metrics_port=0,
    index_poll_s=0,
    # Every call sampled and measured, so the test waits on counts, not on luck or time.
    shadow=ShadowConfig(
        sample_rate=1.0,
        unsettled_sample_rate=1.0,
        max_duty=1.0,
        unsettled_max_duty=1.0,
        queue_size=CHUNK * 2,
        seed=1,
    ),
    recall_control=ControllerConfig(),
)


@pytest.fixture
def start(root: Path) -> Iterator[Callable[[], RunningServer]]:
    started: list[RunningServer] = []

    def start() -> RunningServer:
        started.append(create_server(dataclasses.replace(CONFIG, index=root)))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def _value(running: RunningServer, name: str, **labels: str) -> float:
    value = running.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _drive(running: RunningServer, xq: np.ndarray, until: Callable[[], bool]) -> int:
    """Default-point calls of ``xq`` (cycled) until ``until()`` holds; returns the calls made."""
    assert running.shadow is not None
    with RetrievalClient(f"127.0.0.1:{running.port}") as client:
        for calls in range(0, MAX_CALLS, CHUNK):
            for i in range(calls, calls + CHUNK):
                client.retrieve(xq[i % len(xq)], K)
            assert running.shadow.wait_idle(60)
            if until():
                return calls + CHUNK
    raise AssertionError(f"no convergence within {MAX_CALLS} calls")


def _served_recall(
    running: RunningServer, xq: np.ndarray, xb: np.ndarray, nprobe: int = 0
) -> float:
    with RetrievalClient(f"127.0.0.1:{running.port}") as client:
        found = [[int(c.ad_id[3:]) for c in client.retrieve(q, K, nprobe=nprobe).candidates]
                 for q in xq]  # fmt: skip
    return recall_at_k(found, exact_search(xb, xq, K)[1])


def test_controller_raises_on_hard_traffic_lowers_on_easy_and_survives_restarts(
    root: Path,
    clustered: tuple[Path, Clustered],
    start: Callable[[], RunningServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, data = clustered
    caplog.set_level(logging.INFO, logger="retrieval.recall_control")
    running = start()
    searcher = running.state.current()
    version, build_point = searcher.version, searcher.build_point
    assert searcher.artifact.manifest.quality is not None
    target = searcher.artifact.manifest.quality.target_recall
    hard_check = data.hard(500, seed=99)
    assert _served_recall(running, hard_check, data.xb, build_point.nprobe) < target - 0.03

    def moved(direction: str, at_least: float) -> Callable[[], bool]:
        def done() -> bool:
            moves = _value(running, "adindex_operating_point_moves_total", version=version,
                           direction=direction)  # fmt: skip
            return (
                moves >= at_least
                and _value(running, "adindex_recall_control_settled", version=version) == 1.0
            )

        return done

    # 1. Harder live traffic: the point goes up until recall against exact search holds.
    _drive(running, data.hard(2000, seed=2), moved("raise", 1))
    assert searcher.point.nprobe > build_point.nprobe
    assert _served_recall(running, hard_check, data.xb) >= target  # live calls too
    assert running.shadow is not None and running.shadow.wait_idle(60)
    raised = searcher.point
    with RetrievalClient(f"127.0.0.1:{running.port}") as client:
        info = client.info()
        assert (info.default_nprobe, info.default_k_factor) == raised and info.recall_control
        # Explicit nprobe and filtered calls never count for the default point.
        before = _value(running, "adindex_recall_control_samples_total", version=version)
        for q in data.hard(40, seed=3):
            assert client.retrieve(q, K, nprobe=16).nprobe == 16
            client.retrieve(q, K, exclude_ad_ids=["ad-00001"])
        assert running.shadow is not None and running.shadow.wait_idle(60)
        assert _value(running, "adindex_recall_control_samples_total", version=version) == before
    learned = OperatingPointStore(root).get(version)
    assert learned is not None and learned.point == raised
    assert learned.build_nprobe == build_point.nprobe and learned.moves >= 1

    # 2. A new server on the same root serves the learned point from its first call.
    text = scrape_metrics(running.metrics_port or 0)
    raises = metric_value(text, "adindex_operating_point_moves_total", version=version,
                          direction="raise")  # fmt: skip
    assert metric_value(text, "adindex_operating_point", version=version, param="nprobe") == (
        raised.nprobe
    )
    running.stop()
    running = start()
    searcher = running.state.current()
    assert searcher.point == raised
    assert _value(running, "adindex_operating_point", version=version, param="nprobe") == (
        raised.nprobe
    )
    assert any("Resuming the learned operating point" in r.getMessage() for r in caplog.records)

    # 3. Easier live traffic: the point comes down again, and still holds on easy queries.
    _drive(running, data.easy(2000, seed=4), moved("lower", 1))
    assert searcher.point.nprobe < raised.nprobe
    assert _served_recall(running, data.easy(500, seed=98), data.xb) >= target
    assert running.shadow is not None and running.shadow.wait_idle(60)
    lowered = searcher.point
    learned = OperatingPointStore(root).get(version)
    assert learned is not None and learned.point == lowered

    # Every move is in the metrics and has its log line.
    text = scrape_metrics(running.metrics_port or 0)
    lowers = metric_value(text, "adindex_operating_point_moves_total", version=version,
                          direction="lower")  # fmt: skip
    assert metric_value(text, "adindex_operating_point", version=version, param="nprobe") == (
        lowered.nprobe
    )
    logged = [r for r in caplog.records if getattr(r, "event", None) == "operating_point"]
    assert len(logged) == raises + lowers
    assert [r.nprobe for r in logged][-1] == lowered.nprobe  # type: ignore[attr-defined]
    assert all(r.version == version for r in logged)  # type: ignore[attr-defined]


def test_recall_control_off_serves_the_build_point(
    root: Path, clustered: tuple[Path, Clustered]
) -> None:
    _, data = clustered
    config = ServerConfig(
        port=0,
        index=root,
        index_poll_s=0,
        shadow=CONFIG.shadow,
        recall_control=ControllerConfig(enabled=False),
    )
    running = create_server(config)
    try:
        searcher = running.state.current()
        version = searcher.version
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            for q in data.hard(400, seed=5):  # enough to move twice with the controller on
                assert client.retrieve(q, K).nprobe == searcher.build_point.nprobe
            assert not client.info().recall_control
        assert running.shadow is not None and running.shadow.wait_idle(60)
        assert _value(running, "adindex_recall_control_samples_total", version=version) == 0
        assert _value(running, "adindex_operating_point", version=version, param="nprobe") == (
            searcher.build_point.nprobe
        )
    finally:
        running.stop()
    assert not (root / OPERATING_POINTS_FILE).exists()


def _learned(nprobe: int) -> LearnedPoint:
    return LearnedPoint(nprobe, 4, 8, 4, 0.95, 100, 1, "2025-01-01T00:00:00+00:00", "raise: ...")


def test_store_rewrites_atomically_and_forgets_versions_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "manifest.json").write_text("{}")
    store = OperatingPointStore(tmp_path)
    assert store.read() == {}
    store.put("v1", _learned(16))
    store.put("v2", _learned(24))
    assert OperatingPointStore(tmp_path).read() == {"v1": _learned(16), "v2": _learned(24)}
    shutil.rmtree(tmp_path / "v1")
    store.put("v2", _learned(32))
    assert store.read() == {"v2": _learned(32)}
    assert sorted(p.name for p in tmp_path.iterdir()) == [OPERATING_POINTS_FILE, "v2"]  # no temp
    (tmp_path / OPERATING_POINTS_FILE).write_text('{"schema": 1, "versions": {"v2": {"nprobe"')
    with caplog.at_level(logging.WARNING):
        assert store.get("v2") is None  # a damaged file: build points, logged
    assert "Ignoring" in caplog.text
    (tmp_path / OPERATING_POINTS_FILE).unlink()
    (tmp_path / OPERATING_POINTS_FILE).mkdir()  # unreadable: never keeps a version from loading
    with caplog.at_level(logging.WARNING):
        assert store.read() == {}
    assert "Cannot read" in caplog.text
