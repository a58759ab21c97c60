"""``adindex root``: one ``RetrievalService`` in front of N leaves, one per shard.

A Retrieve call to the root:

1. **Pins** a version: the one every leaf holds (``retrieval.root_leaves``). No call is
   answered from two versions, even while leaves swap to a new one.
2. **Fans out** the caller's request *whole* (so fields this root does not know, added by a
   later client, still reach the leaves), with ``index_version`` set to the pin, serialized
   once and sent to every leaf at once over ``grpc.aio``. Each leaf call gets
   ``leaf_deadline_share`` of the caller's remaining time (the rest is for the merge and the
   reply, so an answer from the others still arrives in time), or ``default_timeout_s`` when
   the caller set no deadline.
3. **Merges** the candidates of every leaf that answered on the pinned version by score (ties
   in shard order), re-applies ``max_per_advertiser``, keeps the first k.
4. **Degrades**: a leaf that fails, misses its deadline or holds another version is left out;
   the response is marked ``partial`` with the shards that answered, and counted
   (``adindex_root_partial_total``). The call fails only when no leaf answers: with the
   leaves' status when they refused the request itself (``INVALID_ARGUMENT``), else
   ``DEADLINE_EXCEEDED`` or ``UNAVAILABLE``.

**Why each leaf is asked for k, and the merge is exact relative to the leaves.** Each leaf
returns its best k with the advertiser cap applied to its own ads (greedily, in score order).
Call the root's greedy pass over the union of the leaves' complete rankings the full pass: it
is what one index holding the same candidates would answer. Suppose the full pass takes an ad
``a`` of shard s that s did not return. Either s already had ``cap`` ads of a's advertiser
above ``a``; they are above ``a`` in the union too, so the full pass reached the cap for that
advertiser before ``a`` and skipped it. Or s returned k ads above ``a``; the full pass takes
each of them unless its advertiser already had ``cap`` taken ads above it, so an advertiser
with m of them (m <= cap) has at least m taken ads above ``a``: at least k ads are taken above
``a``, and the pass ended before it. Both contradict, so the root's pass over the leaves' top k
lists equals the full pass; asking a leaf for more than k would change nothing. Without a cap
the second case alone applies. (Approximation is per leaf: each leaf's ranking is its IVF
search, at the version's nprobe, over the same lists one index would probe.)
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import _async as health_aio  # health.aio, which the stubs lack
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from retrieval.client import DEFAULT_PORT
from retrieval.errors import IndexNotReady, RetrievalError
from retrieval.interceptors import ADMIN_PREFIX, _short
from retrieval.root_leaves import Leaf, LeafSet, Tls
from retrieval.root_metrics import RootMetrics
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

if TYPE_CHECKING:  # grpc-stubs makes it generic; the runtime class is not
    _AioInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _AioInterceptor = grpc.aio.ServerInterceptor

logger = logging.getLogger(__name__)

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
# The leaves' answer to the request itself: every leaf would say the same, so say it.
REQUEST_ERRORS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})


@dataclass(frozen=True)
class RootConfig:
    """How the root listens, where its leaves are, and how long it waits for them."""

    leaves: tuple[str, ...]  # host:port of shard 0, 1, ... N-1
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = DEFAULT_PORT  # 0 picks a free port
    quorum: int | None = None  # leaves answering for health SERVING; None: a majority
    default_timeout_s: float = 1.0  # per leaf call when the caller sets no deadline
    leaf_deadline_share: float = 0.8  # of the caller's remaining time, for the leaf calls
    poll_s: float = 0.5  # how often each leaf's status is read
    admin_token: str | None = None  # required on admin calls, and sent to the leaves
    max_message_bytes: int = 1 << 20
    grace_s: float = 5.0  # on SIGTERM, how long in-flight calls may take
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    drain_timeout_s: float = 30.0  # longest a switch waits for calls pinned to the old version
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, serve TLS only
    tls_key: Path | None = None
    leaf_root_cert: Path | None = None  # PEM to trust for the leaves: TLS to them (None: plain)
    leaf_server_name: str | None = None  # name the leaves' certificate carries, if not the host

    def __post_init__(self) -> None:
        if not self.leaves:
            raise ValueError("leaves must name at least one host:port")
        if len(set(self.leaves)) != len(self.leaves):
            raise ValueError(f"leaves must be distinct; got {', '.join(self.leaves)}")
        if not 1 <= self.effective_quorum <= len(self.leaves):
            raise ValueError(f"quorum must be in [1, {len(self.leaves)}]; got {self.quorum}")
        if self.default_timeout_s <= 0 or self.poll_s <= 0:
            raise ValueError(
                f"default_timeout_s and poll_s must be > 0; got {self.default_timeout_s}, "
                f"{self.poll_s}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                f"TLS needs both a certificate and a key; got cert={self.tls_cert}, key={self.tls_key}"
            )
        if not 0 < self.leaf_deadline_share <= 1:
            raise ValueError(
                f"leaf_deadline_share must be in (0, 1]; got {self.leaf_deadline_share}"
            )

    @property
    def effective_quorum(self) -> int:
        return self.quorum if self.quorum is not None else len(self.leaves) // 2 + 1


@dataclass(frozen=True)
class LeafAnswer:
    """One leaf's answer to a fanned-out call: a response, or the status it failed with."""

    shard: int
    response: retrieval_pb2.RetrieveResponse | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""


class LeafError(RetrievalError):
    """A call through the root failed because of its leaves: their status, or the root's."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.grpc_code = code


def merge(
    request: retrieval_pb2.RetrieveRequest,
    version: str,
    answers: Sequence[LeafAnswer],
    shard_count: int,
) -> retrieval_pb2.RetrieveResponse:
    """The root's answer from its leaves' answers (module docstring: why it is exact).

    Raises:
        LeafError: no leaf answered on ``version``.
    """
    ok = [
        (a.shard, a.response)
        for a in answers
        if a.response is not None and a.response.index_version == version
    ]
    if not ok:
        raise _no_answer(answers, version)
    candidates = [c for _, r in ok for c in r.candidates]
    candidates.sort(key=lambda c: -c.score)  # stable: ties keep shard order
    cap = request.max_per_advertiser
    if cap:
        taken: dict[str, int] = {}
        kept = []
        for c in candidates:
            n = taken.get(c.advertiser_id, 0)
            if n < cap:
                taken[c.advertiser_id] = n + 1
                kept.append(c)
                if len(kept) == request.k:
                    break
        candidates = kept
    plans = {r.plan for _, r in ok}
    response = retrieval_pb2.RetrieveResponse(
        index_version=version,
        nprobe=max(r.nprobe for _, r in ok),
        plan=plans.pop() if len(plans) == 1 else "mixed",
        shards_answered=[shard for shard, _ in ok],
        shard_count=shard_count,
        partial=len(ok) < shard_count,
    )
    response.candidates.extend(candidates[: request.k])
    return response


def _no_answer(answers: Sequence[LeafAnswer], version: str) -> LeafError:
    refused = [a for a in answers if a.code in REQUEST_ERRORS]
    if refused:  # the request itself is bad: the leaf's message names the field
        return LeafError(refused[0].code, refused[0].details)
    why = "; ".join(
        f"shard {a.shard}: "
        + (
            f"{a.code.name}: {a.details}"
            if a.response is None
            else f"answered from {a.response.index_version}"
        )
        for a in answers
    )
    if all(a.code == grpc.StatusCode.DEADLINE_EXCEEDED for a in answers):
        return LeafError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no shard answered in time: {why}")
    return LeafError(grpc.StatusCode.UNAVAILABLE, f"no shard answered on {version}: {why}")


def _outcome(code: grpc.StatusCode) -> str:
    if code == grpc.StatusCode.OK:
        return "ok"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "deadline_exceeded"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return "other_version"
    if code in REQUEST_ERRORS:
        return "refused"
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return "unavailable"
    return "error"


class RootService(retrieval_pb2_grpc.RetrievalServiceServicer):
    """Retrieve and GetIndexInfo over the leaves."""

    def __init__(self, leaves: LeafSet, config: RootConfig, metrics: RootMetrics):
        self._leaves = leaves
        self._config = config
        self._metrics = metrics

    def _leaf_timeout(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self._config.default_timeout_s
        return max(remaining * self._config.leaf_deadline_share, 1e-3)

    async def _call(self, leaf: Leaf, data: bytes, timeout: float) -> LeafAnswer:
        started = time.perf_counter()
        try:
            response = await leaf.retrieve(data, timeout=timeout)
            answer = LeafAnswer(leaf.shard, response)
        except grpc.aio.AioRpcError as exc:
            answer = LeafAnswer(leaf.shard, code=exc.code(), details=exc.details() or "")
        shard = str(leaf.shard)
        self._metrics.leaf_seconds.labels(shard).observe(time.perf_counter() - started)
        self._metrics.leaf_calls.labels(shard, _outcome(answer.code)).inc()
        return answer

    async def Retrieve(
        self,
        request: retrieval_pb2.RetrieveRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> retrieval_pb2.RetrieveResponse:
        timeout = self._leaf_timeout(context)
        leaves = self._leaves.leaves
        with self._leaves.pin() as version:
            request.index_version = version  # the whole request goes on, unknown fields too
            data = request.SerializeToString()
            answers = await asyncio.gather(*(self._call(leaf, data, timeout) for leaf in leaves))
        for a in answers:
            if a.response is not None and a.response.index_version != version:
                self._metrics.leaf_calls.labels(str(a.shard), "other_version").inc()
        response = merge(request, version, answers, len(leaves))
        if response.partial:
            self._metrics.partial.inc()
            logger.debug("Partial answer from shards %s", list(response.shards_answered))
        return response

    async def GetIndexInfo(
        self,
        request: retrieval_pb2.GetIndexInfoRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> retrieval_pb2.IndexInfo:
        """The pinned version, as the first answering leaf describes it (its manifest: the
        whole version's), with the ad counts summed over the leaves that answer and each
        leaf's status."""
        version = self._leaves.pinned
        if version is None:
            raise IndexNotReady("no index version is held by every answering leaf yet")

        async def ask(leaf: Leaf) -> retrieval_pb2.IndexInfo | None:
            try:
                info: retrieval_pb2.IndexInfo = await leaf.search.GetIndexInfo(request, timeout=5)
            except grpc.aio.AioRpcError:
                return None
            return info

        infos = [i for i in await asyncio.gather(*(ask(leaf) for leaf in self._leaves.leaves)) if i]
        if not infos:
            raise IndexNotReady("no leaf answered GetIndexInfo")
        out = retrieval_pb2.IndexInfo()
        out.CopyFrom(infos[0])
        out.index_version = version
        out.manifest_json = infos[0].version_manifest_json or infos[0].manifest_json
        out.ClearField("leaf")
        out.ClearField("version_manifest_json")
        out.ad_count = sum(i.ad_count for i in infos)
        out.active_count = sum(i.active_count for i in infos)
        out.paused_count = sum(i.paused_count for i in infos)
        out.leaves.extend(leaf.report() for leaf in self._leaves.leaves)
        return out


# --- Serving --------------------------------------------------------------------------------


class RootInterceptor(_AioInterceptor):
    """Admin token, error -> status, and the duration of every unary call, for the aio root."""

    def __init__(self, metrics: RootMetrics, admin_token: str | None):
        self._metrics = metrics
        self._expected = f"Bearer {admin_token}" if admin_token else None

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method
        if self._expected is not None and method.startswith(ADMIN_PREFIX):
            given = dict(details.invocation_metadata or ()).get("authorization")
            if given != self._expected:
                code = (
                    grpc.StatusCode.UNAUTHENTICATED
                    if given is None
                    else grpc.StatusCode.PERMISSION_DENIED
                )
                return _deny(
                    code,
                    "admin calls need 'authorization: Bearer <token>'"
                    if given is None
                    else "wrong admin token",
                )
        inner, name, metrics = handler.unary_unary, _short(method), self._metrics

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started, code = time.perf_counter(), "OK"
            try:
                return await inner(request, context)
            except RetrievalError as exc:
                code = exc.grpc_code.name
                await context.abort(exc.grpc_code, str(exc))
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = "ABORTED"
                raise
            except Exception:
                code = "INTERNAL"
                logger.exception("%s failed", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the root's log")
            finally:
                metrics.rpc_duration.labels(name, code).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _deny(code: grpc.StatusCode, message: str) -> Any:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


@dataclass
class RunningRoot:
    server: grpc.aio.Server
    port: int
    leaves: LeafSet
    metrics: RootMetrics
    health: Any  # grpc_health's aio HealthServicer
    metrics_port: int | None = None
    _stoppers: list[Any] = field(default_factory=list)

    async def stop(self, grace_s: float | None = 0) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight ones finish (up to grace_s)."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        await self.leaves.close()
        for stop in self._stoppers:
            stop()


async def create_root(config: RootConfig) -> RunningRoot:
    """Start a root on the running event loop; it polls its leaves at once and then every
    ``poll_s`` (calls get UNAVAILABLE until every answering leaf holds one version)."""
    from retrieval.root_admin import RootAdmin  # admin routing: its own module

    metrics = RootMetrics(len(config.leaves))
    health_servicer = health_aio.HealthServicer()

    async def on_health(serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, status)

    await on_health(False)
    metadata = (("authorization", f"Bearer {config.admin_token}"),) if config.admin_token else ()
    leaves = LeafSet(
        config.leaves,
        quorum=config.effective_quorum,
        poll_s=config.poll_s,
        metrics=metrics,
        on_health=on_health,
        admin_metadata=metadata,
        drain_timeout_s=config.drain_timeout_s,
        tls=_leaf_tls(config),
    )
    server = grpc.aio.server(
        interceptors=[RootInterceptor(metrics, config.admin_token)],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(
        RootService(leaves, config, metrics), server
    )  # type: ignore[no-untyped-call]
    retrieval_pb2_grpc.add_AdminServiceServicer_to_server(RootAdmin(leaves, metadata), server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            retrieval_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    host = f"[{config.host}]" if ":" in config.host else config.host
    address = f"{host}:{config.port}"
    if config.tls_cert is not None and config.tls_key is not None:
        pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
        port = server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    logger.info(
        "Listening on %s:%d (root over %d leaves: %s; %s, %s to the leaves)",
        config.host,
        port,
        len(config.leaves),
        ", ".join(config.leaves),
        "TLS" if config.tls_cert else "plaintext",
        "TLS" if config.leaf_root_cert else "plaintext",
    )
    running = RunningRoot(server, port, leaves, metrics, health_servicer)
    if config.metrics_port is not None:
        http, _thread = start_http_server(
            config.metrics_port, addr=config.metrics_host, registry=metrics.registry
        )
        running.metrics_port = int(http.server_port)
        running._stoppers.append(http.shutdown)
        logger.info("Metrics on http://%s:%d/metrics", config.metrics_host, running.metrics_port)
    await leaves.refresh()
    leaves.start()
    return running


def _leaf_tls(config: RootConfig) -> Tls | None:
    if config.leaf_root_cert is None:
        return None
    pem = config.leaf_root_cert.read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=pem), config.leaf_server_name


def serve_root(config: RootConfig) -> None:
    """Run a root until SIGTERM or SIGINT, then drain."""

    async def main() -> None:
        running = await create_root(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("Shutting down: refusing new calls, waiting up to %s s", config.grace_s)
        await running.stop(config.grace_s)
        logger.info("Stopped")

    asyncio.run(main())
