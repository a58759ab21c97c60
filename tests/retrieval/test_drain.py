"""Draining after calls gRPC drops before their handler runs: SIGTERM must not wait on them.

gRPC never runs the handler of a call it drops first: a request over the message limit, a call
whose deadline passes or that is cancelled while it waits for a worker. Each of these once
stayed counted as in flight, so every later SIGTERM waited the whole ``--grace-s``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from indexer.build import BuildResult
from retrieval.interceptors import CountingExecutor
from retrieval.server import ServerConfig, create_server
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from support import ServerProcess, metric_value, scrape_metrics

REQUEST = retrieval_pb2.RetrieveRequest(user_embedding=[0.1] * 32, k=5)
OVERSIZED = retrieval_pb2.RetrieveRequest(user_embedding=[0.1] * 300_000, k=5)  # 1.2 MB > 1 MiB
DROPS = ("oversized", "expired_in_queue", "cancelled_in_queue")
GRACE_S = 20
EXIT_WITHIN_S = 8  # the 1 s linger plus slack for a busy machine; far below GRACE_S
LINGER_S = ServerConfig().drain_linger_s


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Poll a condition nothing signals (a server's own counters)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"


@contextlib.contextmanager
def _worker_held(channel: grpc.Channel) -> Iterator[None]:
    """Keep a one-worker server's worker busy: a reflection stream waits there for a request."""
    requests: queue.SimpleQueue[reflection_pb2.ServerReflectionRequest | None] = queue.SimpleQueue()
    requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    stream = stub.ServerReflectionInfo(iter(requests.get, None))
    assert next(stream).list_services_response.service  # answered: its handler holds the worker
    try:
        yield
    finally:
        requests.put(None)  # the stream ends and frees the worker
        assert list(stream) == []


def _drop(kind: str, channel: grpc.Channel, active: Callable[[], float]) -> None:
    """Have a one-worker server drop one call of ``kind`` before its handler runs.

    Args:
        kind: one of ``DROPS``.
        channel: to the server.
        active: the server's count of calls queued or running (all kinds).
    """
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)  # type: ignore[no-untyped-call]
    if kind == "oversized":  # refused by gRPC while reading the request
        with pytest.raises(grpc.RpcError) as err:
            stub.Retrieve(OVERSIZED, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        with _worker_held(channel):
            if kind == "expired_in_queue":
                call = stub.Retrieve.future(REQUEST, timeout=0.5)
                assert call.exception(timeout=10).code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert active() == 2  # it still waits at the server, behind the held worker
            else:
                call = stub.Retrieve.future(REQUEST, timeout=30)
                _wait_until(lambda: active() == 2)  # it waits at the server
                assert call.cancel()
    _wait_until(lambda: active() == 0)  # gRPC dropped it without running our handler


@pytest.mark.parametrize("kind", DROPS)
def test_sigterm_after_a_dropped_call_drains_in_the_linger_time(
    kind: str, built_index: BuildResult, serve_process: Callable[..., ServerProcess]
) -> None:
    server = serve_process(
        built_index.version_dir.parent,
        "--workers", "1", "--grace-s", str(GRACE_S), "--metrics-port", "0",
    )  # fmt: skip
    metrics_port = server.metrics_port
    assert metrics_port is not None
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        _drop(
            kind, channel, lambda: metric_value(scrape_metrics(metrics_port), "adindex_rpc_active")
        )
        health = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(health).status == health_pb2.HealthCheckResponse.SERVING
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert next(health).status == health_pb2.HealthCheckResponse.NOT_SERVING  # draining
        health.cancel()  # an open stream would hold the port open for the rest of the grace
        with pytest.raises(grpc.RpcError) as err:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)  # type: ignore[no-untyped-call]
            stub.Retrieve(REQUEST, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (err.value.details() or "")
        assert server.proc.wait(timeout=EXIT_WITHIN_S) == 0
        took_s = time.monotonic() - sent
    assert took_s >= LINGER_S  # it kept refusing for the linger before closing the port
    messages = [json.loads(line)["message"] for line in server.lines if line.startswith("{")]
    assert messages[-1] == "Stopped"


def test_dropped_calls_leave_nothing_in_flight_and_streams_are_not_waited_for(
    built_index: BuildResult,
) -> None:
    running = create_server(ServerConfig(port=0, index=built_index.version_dir.parent, workers=1))
    executor = running.executor
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for kind in DROPS:
                _drop(kind, channel, lambda: executor.active)
                assert executor.in_flight == 0, kind
            with _worker_held(channel):  # a long-lived stream runs, but drain need not wait
                assert (executor.active, executor.in_flight) == (1, 0)
                assert executor.wait_idle(0)
    finally:
        running.stop()


def test_counting_executor_counts_a_task_until_it_ends_whether_it_ran_or_not() -> None:
    executor = CountingExecutor(1)
    started, release = threading.Event(), threading.Event()

    def long_lived() -> None:
        executor.exempt_current()
        started.set()
        release.wait(10)

    try:
        held = executor.submit(long_lived)
        assert started.wait(10)
        assert (executor.active, executor.in_flight) == (1, 0)
        queued = executor.submit(lambda: None)
        assert (executor.active, executor.in_flight) == (2, 1)
        assert not executor.wait_idle(0)
        assert queued.cancel()  # dropped before it ran, like a call cancelled in the queue
        assert (executor.active, executor.in_flight) == (1, 0)
        assert executor.wait_idle(0)
        release.set()
        held.result(timeout=10)
        assert executor.active == 0
    finally:
        release.set()
        executor.shutdown()
