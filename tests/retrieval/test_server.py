"""The real gRPC server on a free loopback port, through a real channel."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import faiss
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from indexer.ann import exact_search, recall_at_k
from indexer.build import BuildResult
from indexer.manifest import Manifest
from indexer.records import AdRecord
from retrieval.client import RetrievalClient
from retrieval.controller import ControllerConfig
from retrieval.server import RunningServer, ServerConfig, create_server
from retrieval.v1 import retrieval_pb2

VectorCatalog = tuple[Path, list[AdRecord], np.ndarray]


@pytest.fixture(scope="module")
def server(built_index: BuildResult) -> Iterator[RunningServer]:
    # The build's point throughout (these tests check it); recall control has its own tests.
    config = ServerConfig(
        port=0,
        index=built_index.version_dir.parent,
        max_k=500,
        recall_control=ControllerConfig(enabled=False),
    )
    running = create_server(config)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[RetrievalClient]:
    with RetrievalClient(f"127.0.0.1:{server.port}") as c:
        yield c


def test_recall_through_the_server(client: RetrievalClient, vector_catalog: VectorCatalog) -> None:
    _, records, xb = vector_catalog
    eligible = np.array([r.status == "active" for r in records])
    rng = np.random.default_rng(7)
    xq = xb[rng.choice(len(xb), 100, replace=False)] + 0.2 * rng.standard_normal((100, xb.shape[1]))
    xq = (xq / np.linalg.norm(xq, axis=1, keepdims=True)).astype(np.float32)
    truth = exact_search(xb, xq, 50, eligible=eligible)[1]
    row = {r.ad_id: i for i, r in enumerate(records)}
    found = [[row[c.ad_id] for c in client.retrieve(q, 50).candidates] for q in xq]
    assert all(len(f) == 50 for f in found)
    assert recall_at_k(found, truth) >= 0.9


def test_own_embedding_returns_the_ad_first(
    client: RetrievalClient, vector_catalog: VectorCatalog
) -> None:
    _, records, xb = vector_catalog
    active = [i for i, r in enumerate(records) if r.status == "active"][:200]
    firsts = [client.retrieve(xb[i], 1).candidates[0].ad_id for i in active]
    assert firsts == [records[i].ad_id for i in active]


GROUP = 4  # concurrent calls held inside their searches together


def test_openmp_threads_per_search_two_alone_one_under_concurrency(
    built_index: BuildResult, vector_catalog: VectorCatalog
) -> None:
    # omp_set_num_threads is per thread, so each worker sets its own count for every call: the
    # cores for a call that is alone, one thread each while calls overlap.
    config = ServerConfig(port=0, index=built_index.version_dir, omp_threads=1, alone_omp_threads=2)
    running = create_server(config)
    searcher = running.state.current()
    seen: list[tuple[str, int]] = []
    real_search = searcher.search
    together: threading.Barrier | None = None  # set: calls wait inside search for each other

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((threading.current_thread().name, faiss.omp_get_max_threads()))
        if together is not None:
            together.wait()  # GROUP calls are inside a search at once: they overlap for sure
        return real_search(*args, **kwargs)

    searcher.search = spy  # type: ignore[method-assign]
    xq = vector_catalog[2][:40]
    try:
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            for q in xq[:20]:
                client.retrieve(q, 10)
            alone = list(seen)
            seen.clear()
            together = threading.Barrier(GROUP, timeout=30)
            with futures.ThreadPoolExecutor(GROUP) as pool:
                list(pool.map(lambda q: client.retrieve(q, 10), xq))
        # Every worker is back to one thread between calls (set when it started, restored
        # after each search), whatever its last search ran with.
        after = [running.executor.submit(faiss.omp_get_max_threads) for _ in range(64)]
        assert {f.result() for f in after} == {1}
    finally:
        running.stop()
    assert len(alone) == 20 and all(name.startswith("retrieve") for name, _ in alone), alone
    assert {threads for _, threads in alone} == {2}
    assert len(seen) == len(xq)
    assert {threads for _, threads in seen} <= {1, 2}
    # In each group at most the first call found no other search running.
    assert sum(threads == 1 for _, threads in seen) >= len(xq) * (GROUP - 1) // GROUP, seen


def test_paused_ads_never_come_back(client: RetrievalClient, vector_catalog: VectorCatalog) -> None:
    _, records, xb = vector_catalog
    paused_ids = {r.ad_id for r in records if r.status == "paused"}
    paused_rows = [i for i, r in enumerate(records) if r.status == "paused"]
    assert len(paused_rows) >= 100
    for i in paused_rows[:100]:  # the query is the paused ad itself: the hardest case
        response = client.retrieve(xb[i], 100)
        assert len(response.candidates) == 100
        assert not paused_ids & {c.ad_id for c in response.candidates}


def test_response_names_version_and_sorted_scores(
    client: RetrievalClient, built_index: BuildResult, vector_catalog: VectorCatalog
) -> None:
    _, records, xb = vector_catalog
    response = client.retrieve(xb[0] * 7.5, 10)  # scale does not matter: the server normalises
    assert response.index_version == built_index.version_dir.name
    scores = [c.score for c in response.candidates]
    assert scores == sorted(scores, reverse=True)
    by_id = {r.ad_id: r for r in records}
    for c in response.candidates:
        assert (c.advertiser_id, c.campaign_id) == (
            by_id[c.ad_id].advertiser_id,
            by_id[c.ad_id].campaign_id,
        )


def test_index_info(client: RetrievalClient, built_index: BuildResult) -> None:
    info = client.info()
    m = built_index.manifest
    assert info.index_version == m.version
    assert info.index_factory == "IVF32,PQ16x4fs,RFlat"
    assert info.ad_count == m.counts.ads
    assert info.paused_count == m.counts.paused
    assert Manifest.loads(info.manifest_json) == m
    assert info.default_nprobe == 8 and info.max_k == 500


@pytest.mark.parametrize(
    ("embedding", "k", "nprobe", "field"),
    [
        ([], 10, 0, "user_embedding: is empty"),
        ([0.1] * 31, 10, 0, "user_embedding: has 31 values, the index dimension is 32"),
        (
            [0.1] * 5 + [float("nan")] + [0.1] * 26,
            10,
            0,
            "user_embedding: value at position 5 is not finite",
        ),
        ([0.1] * 31 + [float("inf")], 10, 0, "user_embedding: value at position 31 is not finite"),
        ([0.0] * 32, 10, 0, "user_embedding: is the zero vector"),
        ([0.1] * 32, 0, 0, r"k: must be in \[1, 500\], got 0"),
        ([0.1] * 32, -3, 0, "k: must be in"),
        ([0.1] * 32, 501, 0, r"k: must be in \[1, 500\], got 501"),
        ([0.1] * 32, 10, -1, "nprobe: must be in"),
        ([0.1] * 32, 10, 33, r"nprobe: must be in \[0, 32\]"),
    ],
)
def test_bad_input_is_invalid_argument_and_server_keeps_serving(
    client: RetrievalClient, embedding: list[float], k: int, nprobe: int, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Retrieve(
            retrieval_pb2.RetrieveRequest(user_embedding=embedding, k=k, nprobe=nprobe), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(field, err.value.details() or "")
    assert len(client.retrieve([0.1] * 32, 3).candidates) == 3


def test_oversized_message_is_refused(client: RetrievalClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.retrieve(np.ones(400_000, dtype=np.float32), 10)  # 1.6 MB > 1 MiB limit
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(client.retrieve([0.1] * 32, 3).candidates) == 3


def _health(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        return status


def test_health_and_unavailable_before_load(built_index: BuildResult, tmp_path: Path) -> None:
    running = create_server(ServerConfig(port=0, index=tmp_path))  # empty root: nothing to load yet
    try:
        assert _health(running.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (
            _health(running.port, "retrieval.v1.RetrievalService")
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        with RetrievalClient(f"127.0.0.1:{running.port}") as c:
            for call in (lambda: c.retrieve([0.1] * 32, 5), c.info):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "no index is loaded" in (err.value.details() or "")
            running.state.load(built_index.version_dir)
            assert _health(running.port) == health_pb2.HealthCheckResponse.SERVING
            assert len(c.retrieve([0.1] * 32, 5).candidates) == 5
    finally:
        running.stop()
    assert running.state.loaded


def test_reflection_lists_the_services(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"retrieval.v1.RetrievalService", "grpc.health.v1.Health"} <= names
