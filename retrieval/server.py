"""The gRPC server: RetrievalService plus the standard health and reflection services.

Threading model: a synchronous gRPC server with a small worker pool. Each Retrieve is one
single-query FAISS search, which FAISS runs on the calling thread, so OpenMP is limited to one
thread here: extra OpenMP threads would only fight the gRPC workers for the two cores.
"""

from __future__ import annotations

import hmac
import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from threadpoolctl import threadpool_limits

from indexer.artifact import MANIFEST, ArtifactError, resolve
from indexer.embedding import Embedder
from retrieval.admin import AdminService
from retrieval.errors import RetrievalError
from retrieval.searcher import DEFAULT_EXACT_MAX_ROWS
from retrieval.service import RetrievalService
from retrieval.state import SERVICE_NAME, IndexState
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

logger = logging.getLogger(__name__)

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and what it accepts."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = DEFAULT_PORT  # 0 picks a free port
    index: Path | None = None  # artifact root (with LATEST) or a version directory
    max_k: int = 1000
    workers: int = 4
    omp_threads: int = 1
    max_message_bytes: int = 1 << 20  # a 384-d request is ~1.6 KB; 1 MiB leaves room for batches
    index_poll_s: float = 2.0  # while no index exists yet, look for one this often
    grace_s: float = 5.0
    admin_token: str | None = None  # when set, AdminService calls must carry it as a bearer token
    exact_max_rows: int = (
        DEFAULT_EXACT_MAX_ROWS  # filters leaving at most this many ads scan exactly
    )
    model: Path | None = None  # model for embedding upserted text (default: the index's own)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535]; got {self.port}")
        if self.max_k < 1:
            raise ValueError(f"max_k must be >= 1; got {self.max_k}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1; got {self.workers}")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


if TYPE_CHECKING:  # grpc-stubs makes these generic; the runtime classes are not
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


ADMIN_PREFIX = "/retrieval.v1.AdminService/"


class AdminAuthInterceptor(_Interceptor):
    """AdminService calls need ``authorization: Bearer <token>`` when a token is configured."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        if not details.method.startswith(ADMIN_PREFIX):
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization")
        if given is None:
            return _deny(
                grpc.StatusCode.UNAUTHENTICATED, "admin calls need 'authorization: Bearer <token>'"
            )
        supplied = given.encode() if isinstance(given, str) else given
        if not hmac.compare_digest(supplied, self._expected):
            return _deny(grpc.StatusCode.PERMISSION_DENIED, "wrong admin token")
        return continuation(details)


def _deny(code: grpc.StatusCode, message: str) -> _Handler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class ErrorInterceptor(_Interceptor):
    """Maps RetrievalError to its status; anything else is logged and answered INTERNAL."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except RetrievalError as exc:
                logger.debug("%s -> %s: %s", method, exc.grpc_code.name, exc)
                context.abort(exc.grpc_code, str(exc))
            except Exception:
                logger.exception("%s failed", method)
                context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error in {method}; see server log"
                )

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    state: IndexState
    health: health.HealthServicer

    def stop(self, grace_s: float | None = 0) -> None:
        self.state.shutdown()
        self.server.stop(grace_s).wait()


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
    # Likewise BLAS (numpy's OpenBLAS spins up threads for a 2,400 x 384 product and took 16 ms
    # instead of 1 ms on two busy cores, measured): one thread per request.
    threadpool_limits(limits=1, user_api="blas")
    interceptors: list[_Interceptor] = [ErrorInterceptor()]
    if config.admin_token:
        interceptors.insert(0, AdminAuthInterceptor(config.admin_token))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="retrieve"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),  # two servers must never share a port by accident
        ],
    )
    health_servicer = health.HealthServicer()
    state = IndexState(health_servicer, max_k=config.max_k, exact_max_rows=config.exact_max_rows)
    root = None if config.index is None or (config.index / MANIFEST).is_file() else config.index
    admin = AdminService(state, root, embedder=embedder, model=config.model)
    retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(RetrievalService(state), server)  # type: ignore[no-untyped-call]
    retrieval_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name,
            retrieval_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(config.address)
    if port == 0:
        raise OSError(f"cannot listen on {config.address}")
    server.start()
    logger.info("Listening on %s:%d (%s)", config.host, port, SERVICE_NAME)
    running = RunningServer(server=server, port=port, state=state, health=health_servicer)
    if config.index is not None:
        try:
            state.load(config.index)
        except ArtifactError as exc:
            logger.warning("No index loaded yet: %s", exc)
    return running


def _wait_for_index(
    running: RunningServer, path: Path, poll_s: float, stop: threading.Event
) -> None:
    """Until a first index is loaded, keep looking for one (health stays NOT_SERVING)."""
    while not running.state.loaded and not stop.wait(poll_s):
        try:
            resolve(path)
        except ArtifactError:
            continue
        try:
            running.state.load(path)
        except ArtifactError as exc:
            logger.warning("Cannot load %s: %s", path, exc)


def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop taking calls and let in-flight ones finish."""
    running = create_server(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if config.index is not None and not running.state.loaded:
        threading.Thread(
            target=_wait_for_index,
            args=(running, config.index, config.index_poll_s, stop),
            daemon=True,
        ).start()
    stop.wait()
    running.stop(config.grace_s)
    logger.info("Stopped")
