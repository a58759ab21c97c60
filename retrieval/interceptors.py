"""Server interceptors, outermost first: serving (metrics, drain), admin auth, errors + deadlines.

grpc's sync server runs ``intercept_service`` on its polling thread when a call arrives and
the returned handler on a worker thread, so a handler wrapper sees both moments: arrival (to
time the queue) and the worker picking the call up (to refuse a call whose deadline passed
while it waited). The bounded queue itself is grpc's ``maximum_concurrent_rpcs``: it answers
RESOURCE_EXHAUSTED on the polling thread, before any interceptor's handler runs.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from retrieval.errors import DeadlineExceeded, RetrievalError
from retrieval.metrics import Metrics

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # grpc-stubs makes these generic; the runtime classes are not
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

Continuation = Callable[[grpc.HandlerCallDetails], _Handler | None]
ADMIN_PREFIX = "/retrieval.v1.AdminService/"
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _short(method: str) -> str:
    """``/retrieval.v1.RetrievalService/Retrieve`` -> ``RetrievalService/Retrieve``."""
    service, _, name = method.rpartition("/")
    return f"{service.rpartition('.')[2]}/{name}"


def _wrap(handler: _Handler, behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> _Handler:
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _deny(code: grpc.StatusCode, message: str) -> _Handler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class CountingExecutor(futures.ThreadPoolExecutor):
    """A thread pool that knows how many tasks (calls) are queued or running."""

    def __init__(
        self,
        max_workers: int,
        thread_name_prefix: str = "",
        initializer: Callable[[], object] | None = None,
    ):
        super().__init__(
            max_workers=max_workers, thread_name_prefix=thread_name_prefix, initializer=initializer
        )
        self._count_lock = threading.Lock()
        self.active = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._count_lock:
            self.active += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: futures.Future[Any]) -> None:
        with self._count_lock:
            self.active -= 1


class ServingInterceptor(_Interceptor):
    """Times every unary call by method and status; refuses new calls while draining."""

    def __init__(self, metrics: Metrics, executor: CountingExecutor, max_active: int | None):
        self._metrics = metrics
        self._executor = executor
        self._max_active = max_active
        self.draining = False
        self._lock = threading.Lock()
        self.in_flight = 0  # unary calls admitted (queued or running), not yet finished

    def _finished(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every admitted unary call finished; False if ``timeout_s`` passed first.

        A call cancelled before a worker picked it up never runs its handler and is never
        counted off: the wait then ends at ``timeout_s``.
        """
        end = time.monotonic() + timeout_s
        while self.in_flight > 0:
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True

    def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        arrived = time.perf_counter()
        method = details.method
        if self._max_active is not None and self._executor.active >= self._max_active:
            # grpc refuses this call itself (maximum_concurrent_rpcs) and never runs our handler;
            # the same test, made a moment later, counts it (a call finishing in between can
            # make this undercount slightly).
            self._metrics.rpc_rejected.labels("queue_full").inc()
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler  # streams (health Watch, reflection) are neither timed nor refused
        draining = self.draining and not method.startswith(HEALTH_PREFIX)
        if draining:
            self._metrics.rpc_rejected.labels("draining").inc()
            handler = _deny(
                grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry another replica"
            )
        inner, name, m = handler.unary_unary, _short(method), self._metrics
        if inner is None:  # not reached: both handlers above are unary
            return handler
        counted = not draining
        if counted:
            with self._lock:
                self.in_flight += 1

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            m.rpc_queue.labels(name).observe(time.perf_counter() - arrived)
            code = "OK"
            try:
                return inner(request, context)
            except BaseException:
                status = context.code()  # type: ignore[attr-defined]
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                m.rpc_duration.labels(name, code).observe(time.perf_counter() - arrived)
                if counted:
                    self._finished()

        return _wrap(handler, timed)


class AdminAuthInterceptor(_Interceptor):
    """AdminService calls need ``authorization: Bearer <token>`` when a token is configured."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
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


class ErrorInterceptor(_Interceptor):
    """Refuses calls whose deadline already passed; maps RetrievalError to its status.

    Anything else is logged and answered INTERNAL (never UNKNOWN).
    """

    def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                if context.time_remaining() <= 0:
                    raise DeadlineExceeded(
                        "the call's deadline passed while it waited for a worker; not searched"
                    )
                return inner(request, context)
            except RetrievalError as exc:
                logger.debug("%s -> %s: %s", method, exc.grpc_code.name, exc)
                context.abort(exc.grpc_code, str(exc))
            except Exception:
                logger.exception("%s failed", method)
                context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error in {method}; see server log"
                )

        return _wrap(handler, wrapped)
