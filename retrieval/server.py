"""The gRPC server: RetrievalService, AdminService, health and reflection; metrics over HTTP.

Threading model (docs/serving.md has the measurements behind it): a synchronous gRPC server
whose polling thread accepts calls and a pool of ``workers`` threads that run them. FAISS runs
each search on the calling worker thread (numpy with one BLAS thread): with
``alone_omp_threads`` OpenMP threads while it runs alone and searches have rarely overlapped
lately, with ``omp_threads`` (one) otherwise, since overlapping calls already keep the cores
busy and extra OpenMP threads would only fight the workers (``retrieval.threads``). FAISS releases the GIL while it searches, so two
searches do run on the two cores at once. With micro-batching on
(``retrieval.batching``) concurrent unfiltered calls share one FAISS call, led by one of them.

Limits: ``max_message_bytes`` (RESOURCE_EXHAUSTED), ``max_k`` (INVALID_ARGUMENT), deadlines
(a call whose deadline passed while it was queued is not searched: DEADLINE_EXCEEDED) and
``max_active_calls`` queued plus running (more are refused at once: RESOURCE_EXHAUSTED).
Background threads: the index watcher (``retrieval.watcher``), shadow recall
(``retrieval.shadow``, which also feeds the recall controller, ``retrieval.recall_control``)
and the metrics HTTP server.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from threadpoolctl import threadpool_limits

from indexer.artifact import MANIFEST, ArtifactError
from indexer.embedding import Embedder
from retrieval.admin import AdminService
from retrieval.batching import BatchConfig, MicroBatcher
from retrieval.client import DEFAULT_PORT
from retrieval.controller import ControllerConfig
from retrieval.interceptors import (
    AdminAuthInterceptor,
    CountingExecutor,
    ErrorInterceptor,
    ServingInterceptor,
    _Interceptor,
)
from retrieval.interest_requests import InterestRetrieval
from retrieval.interests import InterestConfig
from retrieval.leaf import LeafService, LeafState
from retrieval.metrics import Metrics, MetricsHttp
from retrieval.recall_control import RecallControl
from retrieval.searcher import DEFAULT_EXACT_MAX_ROWS
from retrieval.service import RetrievalService, add_to_server
from retrieval.shadow import ShadowConfig, ShadowRecall
from retrieval.state import IndexState
from retrieval.text_embedder import TextEmbedder
from retrieval.threads import SearchThreads, default_alone_threads
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from retrieval.validation import ValidationConfig
from retrieval.watcher import IndexWatcher

logger = logging.getLogger(__name__)

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and what it accepts."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = DEFAULT_PORT  # 0 picks a free port
    index: Path | None = None  # artifact root (with LATEST) or a version directory
    max_k: int = 1000
    workers: int = 16  # room for 16 concurrent callers (and for blocked followers with batching)
    omp_threads: int = 1  # OpenMP threads per search while searches overlap
    # ... and for a search running alone while searches have been quiet (1 = off)
    alone_omp_threads: int = field(default_factory=default_alone_threads)
    max_message_bytes: int = 1 << 20  # a 384-d request is ~1.6 KB; 1 MiB leaves room for batches
    max_active_calls: int = 256  # queued + running; more are refused with RESOURCE_EXHAUSTED
    index_poll_s: float = 1.0  # how often the watcher reads LATEST (0: never, Reload only)
    grace_s: float = 5.0  # on SIGTERM, how long in-flight calls may take to finish
    drain_linger_s: float = 1.0  # on SIGTERM, refuse (UNAVAILABLE) at least this long, then close
    admin_token: str | None = None  # when set, AdminService calls must carry it as a bearer token
    exact_max_rows: int = (
        DEFAULT_EXACT_MAX_ROWS  # filters leaving at most this many ads scan exactly
    )
    model: Path | None = None  # model for embedding upserted text (default: the index's own)
    # Several interests, engaged pins, context pins: limits, quotas, clustering (docs/interests.md)
    interests: InterestConfig = field(default_factory=InterestConfig)
    batching: BatchConfig | None = None  # None: single path (measured faster, docs/serving.md)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    # Moves each version's default (nprobe, k_factor) to hold its target recall on live
    # traffic, measured by shadow recall (retrieval.recall_control; off: the build's point).
    recall_control: ControllerConfig = field(default_factory=ControllerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no HTTP endpoint (metrics still kept in-process)
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, serve TLS only
    tls_key: Path | None = None
    # Serve this shard of a sharded version as a leaf behind ``adindex root`` (retrieval.leaf)
    shard: int | None = None
    # A leaf keeps the version it switched from this long, for calls other roots still pin to it
    release_after_s: float = 5.0

    def __post_init__(self) -> None:
        if self.shard is not None and self.shard < 0:
            raise ValueError(f"shard must be >= 0; got {self.shard}")
        if self.release_after_s < 0:
            raise ValueError(f"release_after_s must be >= 0; got {self.release_after_s}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535]; got {self.port}")
        if self.max_k < 1:
            raise ValueError(f"max_k must be >= 1; got {self.max_k}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1; got {self.workers}")
        if self.omp_threads < 1 or self.alone_omp_threads < 1:
            raise ValueError(
                f"OpenMP thread counts must be >= 1; got {self.omp_threads}, {self.alone_omp_threads}"
            )
        if self.max_active_calls < 1:
            raise ValueError(f"max_active_calls must be >= 1; got {self.max_active_calls}")
        if self.index_poll_s < 0:
            raise ValueError(f"index_poll_s must be >= 0; got {self.index_poll_s}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                f"TLS needs both a certificate and a key; got cert={self.tls_cert}, key={self.tls_key}"
            )

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    state: IndexState
    health: health.HealthServicer
    metrics: Metrics
    serving: ServingInterceptor
    executor: CountingExecutor  # the gRPC workers (calls run here)
    watcher: IndexWatcher | None = None
    shadow: ShadowRecall | None = None
    control: RecallControl | None = None
    metrics_http: MetricsHttp | None = None
    drain_linger_s: float = 0.0

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_http.port if self.metrics_http is not None else None

    def drain(self, grace_s: float | None) -> None:
        """Stop for good: health NOT_SERVING, new calls UNAVAILABLE, in-flight ones finish.

        Args:
            grace_s: how long in-flight calls may still run; then they are cancelled.
        """
        logger.info("Draining: refusing new calls, waiting up to %s s for in-flight ones", grace_s)
        started = time.monotonic()
        self.serving.draining = True  # still listening: new calls get a clean UNAVAILABLE
        self.state.shutdown()
        if self.watcher is not None:
            self.watcher.stop()
        if grace_s:
            self.executor.wait_idle(grace_s)  # queued or running calls, streams aside
            # Keep answering UNAVAILABLE a little longer: calls already on the wire when the
            # port closes would otherwise be cancelled (CANCELLED) instead of refused.
            linger_s = min(self.drain_linger_s, grace_s) - (time.monotonic() - started)
            if linger_s > 0:
                time.sleep(linger_s)
        remaining = None if grace_s is None else max(0.0, grace_s - (time.monotonic() - started))
        self.server.stop(remaining).wait()  # then close: whatever still runs is cancelled
        if self.shadow is not None:
            self.shadow.stop()
        if self.metrics_http is not None:
            self.metrics_http.stop()

    def stop(self, grace_s: float | None = 0) -> None:
        self.drain(grace_s)


def _register(
    server: grpc.Server,
    service: RetrievalService,
    admin: AdminService,
    health_servicer: health.HealthServicer,
    leaf: LeafService | None = None,
) -> None:
    add_to_server(service, server)  # Retrieve answers pre-serialised bytes
    retrieval_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        SERVICE_NAME,
        retrieval_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    if leaf is not None:
        retrieval_pb2_grpc.add_LeafServiceServicer_to_server(leaf, server)  # type: ignore[no-untyped-call]
        names.append(retrieval_pb2.DESCRIPTOR.services_by_name["LeafService"].full_name)
    reflection.enable_server_reflection(names, server)


def _listen(server: grpc.Server, config: ServerConfig) -> int:
    """Bind the port, with TLS when a certificate and key are configured."""
    if config.tls_cert is not None and config.tls_key is not None:
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(config.address, credentials)
    else:
        port = server.add_insecure_port(config.address)
    if port == 0:
        raise OSError(f"cannot listen on {config.address}")
    return port


def _grpc_server(
    config: ServerConfig, metrics: Metrics
) -> tuple[grpc.Server, ServingInterceptor, CountingExecutor]:
    # omp_set_num_threads only sets the *calling* thread's OpenMP thread count: a worker thread
    # would otherwise search with OpenMP's process default (one thread per core), so every
    # worker sets it for itself when it starts.
    executor = CountingExecutor(
        config.workers,
        thread_name_prefix="retrieve",
        initializer=lambda: faiss.omp_set_num_threads(config.omp_threads),
    )
    metrics.rpc_active.set_function(lambda: executor.active)
    serving = ServingInterceptor(metrics, executor, config.max_active_calls)
    interceptors: list[_Interceptor] = [serving, ErrorInterceptor()]
    if config.admin_token:
        interceptors.insert(1, AdminAuthInterceptor(config.admin_token))
    server = grpc.server(
        executor,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),  # two servers must never share a port by accident
        ],
        maximum_concurrent_rpcs=config.max_active_calls,
    )
    return server, serving, executor


def create_server(config: ServerConfig, *, embedder: Embedder | None = None) -> RunningServer:
    """Build and start a server; load ``config.index`` if it already holds a version.

    Args:
        config: how to listen and what to serve.
        embedder: embeds upserted ad text (default: loaded on first use from ``config.model``
            or the installed all-MiniLM-L6-v2).

    Returns:
        The running server and the port it is bound to (useful with port 0).
    """
    faiss.omp_set_num_threads(config.omp_threads)
    # Likewise BLAS (numpy's OpenBLAS spins up threads even for a small product, which on two
    # busy cores costs far more than the product itself): one thread per request.
    threadpool_limits(limits=1, user_api="blas")
    metrics = Metrics()
    server, serving, executor = _grpc_server(config, metrics)
    health_servicer = health.HealthServicer()

    def on_serving(serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, status)

    control = RecallControl(config.recall_control, metrics)
    state: IndexState
    if config.shard is None:
        state = IndexState(
            on_serving,
            max_k=config.max_k,
            exact_max_rows=config.exact_max_rows,
            metrics=metrics,
            validation=config.validation,
            on_load=control.attach,
        )
    else:  # a leaf behind adindex root (retrieval.leaf)
        state = LeafState(
            on_serving,
            shard=config.shard,
            release_after_s=config.release_after_s,
            max_k=config.max_k,
            exact_max_rows=config.exact_max_rows,
            metrics=metrics,
            validation=config.validation,
            on_load=control.attach,
        )
    root = None if config.index is None or (config.index / MANIFEST).is_file() else config.index
    batcher = MicroBatcher(config.batching, metrics) if config.batching else None
    listener = control if config.recall_control.enabled else None
    shadow = (
        ShadowRecall(config.shadow, metrics, listener) if config.shadow.sample_rate > 0 else None
    )
    if config.recall_control.enabled and shadow is None:
        logger.warning("Recall control needs shadow recall (--shadow-rate > 0): points stay put")
    threads = SearchThreads(busy=config.omp_threads, alone=config.alone_omp_threads)
    text = TextEmbedder(embedder, config.model)  # one model: upserted ads and pin text
    interests = InterestRetrieval(
        state, config.interests, text=text, threads=threads, shadow=shadow
    )
    service = RetrievalService(
        state,
        batcher=batcher,
        shadow=shadow,
        metrics=metrics,
        threads=threads,
        control=control,
        interests=interests,
    )
    admin = AdminService(state, root, text=text)
    leaf = LeafService(state) if isinstance(state, LeafState) else None
    _register(server, service, admin, health_servicer, leaf)
    port = _listen(server, config)
    server.start()
    tls = "TLS" if config.tls_cert else "plaintext"
    logger.info("Listening on %s:%d (%s, %s)", config.host, port, SERVICE_NAME, tls)
    running = RunningServer(server, port, state, health_servicer, metrics, serving, executor)
    running.shadow, running.control = shadow, control
    running.drain_linger_s = config.drain_linger_s
    if config.metrics_port is not None:
        running.metrics_http = MetricsHttp(metrics, config.metrics_host, config.metrics_port)
    if config.index is not None:
        try:
            state.load(config.index)
        except ArtifactError as exc:
            logger.warning("No index loaded yet: %s", str(exc))
    if root is not None and config.index_poll_s > 0:
        running.watcher = IndexWatcher(state, root, poll_s=config.index_poll_s)
        running.watcher.start()
    return running


def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain: refuse new calls, finish in-flight ones."""
    running = create_server(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    running.drain(config.grace_s)
    logger.info("Stopped")
