"""Server interceptors, outermost first: serving (metrics, drain), admin auth, errors + deadlines.

grpc's sync server runs ``intercept_service`` on its polling thread when a call arrives and
the returned handler on a worker thread, so a handler wrapper sees both moments: arrival (to
time the queue) and the worker picking the call up (to refuse a call whose deadline passed
while it waited). The bounded queue itself is grpc's ``maximum_concurrent_rpcs``: it answers
RESOURCE_EXHAUSTED on the polling thread, before any interceptor's handler runs.

A handler is not guaranteed to run at all: grpc drops a call whose request is over the message
limit, or whose deadline passed or which was cancelled while it waited for a worker, without
calling it. What drain waits for is therefore counted by the thread pool (``CountingExecutor``),
whose tasks always end, not by the handlers.
"""

from __future__ import annotations

import functools
import hmac
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
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


@dataclass(slots=True)
class _Task:
    """One task of a ``CountingExecutor``: a call, queued or running."""

    exempt: bool = False  # a long-lived stream: drain does not wait for it


class CountingExecutor(futures.ThreadPoolExecutor):
    """A thread pool that knows how many tasks (calls) are queued or running.

    grpc runs every accepted call as one task here, including calls it then drops without
    running the handler; a task's done-callback always fires (run, failed or cancelled), so
    these counts always come back down.
    """

    def __init__(
        self,
        max_workers: int,
        thread_name_prefix: str = "",
        initializer: Callable[[], object] | None = None,
    ):
        super().__init__(
            max_workers=max_workers, thread_name_prefix=thread_name_prefix, initializer=initializer
        )
        self._changed = threading.Condition()
        self._current = threading.local()
        self.active = 0  # tasks queued or running
        self._exempt = 0  # of which running long-lived streams, which drain does not wait for

    @property
    def in_flight(self) -> int:
        """Tasks queued or running that drain waits for: all but long-lived streams.

        Calls refused while draining count too, for the moment they take.
        """
        with self._changed:
            return self.active - self._exempt

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        task = _Task()
        with self._changed:
            self.active += 1
        try:
            future = super().submit(self._run, task, fn, *args, **kwargs)
        except BaseException:
            self._done(task)
            raise
        future.add_done_callback(lambda _future: self._done(task))
        return future

    def _run(self, task: _Task, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self._current.task = task
        try:
            return fn(*args, **kwargs)
        finally:
            self._current.task = None

    def _done(self, task: _Task) -> None:
        with self._changed:
            self.active -= 1
            if task.exempt:
                self._exempt -= 1
            self._changed.notify_all()

    def exempt_current(self) -> None:
        """Drain need not wait for the task running on this thread (a long-lived stream)."""
        task = getattr(self._current, "task", None)
        if task is None or task.exempt:
            return  # not one of our tasks (another pool), or already exempt
        with self._changed:
            task.exempt = True
            self._exempt += 1
            self._changed.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call drain waits for is queued or running; False if ``timeout_s`` passed."""
        with self._changed:
            return self._changed.wait_for(lambda: self.active == self._exempt, timeout_s)


_STREAM_HANDLERS = {
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _exempt_stream(handler: _Handler, executor: CountingExecutor) -> _Handler:
    """The same streaming handler, telling ``executor`` that drain need not wait for it."""
    kind = next((k for k in _STREAM_HANDLERS if getattr(handler, k) is not None), None)
    if kind is None:
        return handler
    inner: Callable[..., Any] = getattr(handler, kind)

    # wraps() keeps grpc's attributes too (health Watch's experimental_non_blocking)
    @functools.wraps(inner)
    def exempt(*args: Any) -> Any:
        executor.exempt_current()
        return inner(*args)

    made: _Handler = _STREAM_HANDLERS[kind](
        exempt,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return made


class ServingInterceptor(_Interceptor):
    """Times every unary call by method and status; refuses new calls while draining."""

    def __init__(self, metrics: Metrics, executor: CountingExecutor, max_active: int | None):
        self._metrics = metrics
        self._executor = executor
        self._max_active = max_active
        self.draining = False

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
        if handler is None:
            return handler
        if handler.unary_unary is None:
            # Streams (health Watch, reflection) are neither timed nor refused, nor waited for
            # by drain: they last as long as their client wants.
            return _exempt_stream(handler, self._executor)
        draining = self.draining and not method.startswith(HEALTH_PREFIX)
        if draining:
            self._metrics.rpc_rejected.labels("draining").inc()
            handler = _deny(
                grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry another replica"
            )
        inner, name, m = handler.unary_unary, _short(method), self._metrics
        if inner is None:  # not reached: both handlers above are unary
            return handler

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
