"""The root's view of its leaves: channels, status polls, the pinned version, quorum health.

**Pinning.** Every call the root fans out carries one version (``RetrieveRequest.
index_version``), the *pinned* one, so no merged answer mixes versions. Leaves prepare a new
version in the background and keep serving the old one (``retrieval.leaf``). Every ``poll_s``
the root reads each leaf's status (``LeafService.GetLeafStatus``); when every answering leaf
(at least a quorum) has most recently loaded the same version V, the root pins new calls to V,
waits until its calls pinned to the old version have returned (a leaf still holds it for
them), then tells each leaf to switch to V (``AdminService.SwitchVersion``). A leaf releases
the old one a few seconds later (``--release-after-s``), once other roots over the same leaves
have moved their pin too. A leaf that misses the switch (down, slow) is told again at the next
poll; one that restarts loads the newest published version, which is the pinned one or the
next.

**Quorum.** Health is SERVING while at least ``quorum`` leaves (default: a majority) answer
their status poll and hold the pinned version. Below it the root still answers calls with what
the answering leaves hold (marked partial), but tells load balancers to prefer another root.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

import grpc

from retrieval.errors import IndexNotReady
from retrieval.root_metrics import RootMetrics
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

logger = logging.getLogger(__name__)

RETRIEVE = "/retrieval.v1.RetrievalService/Retrieve"
# A restarted leaf must rejoin within a poll or two: gRPC's default reconnect backoff grows
# to 120 s, which would keep a healthy leaf out for minutes.
Tls = tuple[grpc.ChannelCredentials, str | None]  # credentials, name the leaves' certificate carry
CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 16 << 20),  # 1,000 candidates are ~60 KB
)


class Leaf:
    """One leaf (shard ``shard`` at ``address``) and what the root last learnt about it."""

    def __init__(self, shard: int, address: str, tls: Tls | None = None):
        self.shard = shard
        self.address = address
        if tls is None:
            self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            credentials, server_name = tls
            options = CHANNEL_OPTIONS
            if server_name:
                options += (("grpc.ssl_target_name_override", server_name),)
            self.channel = grpc.aio.secure_channel(address, credentials, options=options)
        # Requests are serialized once per call and sent to every leaf as bytes.
        self.retrieve = self.channel.unary_unary(
            RETRIEVE,
            request_serializer=None,
            response_deserializer=retrieval_pb2.RetrieveResponse.FromString,
        )
        self.search = retrieval_pb2_grpc.RetrievalServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.leaf = retrieval_pb2_grpc.LeafServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.admin = retrieval_pb2_grpc.AdminServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.status: retrieval_pb2.LeafStatus | None = None  # last answered status poll
        self.answering = False
        self.error = "not polled yet"

    def holds(self, version: str | None) -> bool:
        return self.answering and self.status is not None and version in self.status.loaded_versions

    def report(self) -> retrieval_pb2.LeafStatus:
        """What GetIndexInfo on the root says about this leaf."""
        out = retrieval_pb2.LeafStatus(
            shard=self.shard, address=self.address, answering=self.answering, error=self.error
        )
        if self.status is not None:
            out.shard_count = self.status.shard_count
            out.serving_version = self.status.serving_version
            out.loaded_versions.extend(self.status.loaded_versions)
        return out


class LeafSet:
    """The leaves in shard order, the pinned version and the calls in flight on each version.

    Args:
        addresses: ``host:port`` of shard 0, 1, ... N-1.
        quorum: leaves that must answer for health SERVING.
        poll_s: seconds between status polls.
        metrics: the root's metrics.
        on_health: awaited with True/False whenever health changes.
        admin_metadata: sent with SwitchVersion (the leaves' admin token).
        drain_timeout_s: longest a switch waits for calls pinned to the old version.
        tls: credentials to the leaves and the name their certificates carry (None: plaintext).
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        quorum: int,
        poll_s: float,
        metrics: RootMetrics,
        on_health: Callable[[bool], Awaitable[None]],
        admin_metadata: tuple[tuple[str, str], ...] = (),
        drain_timeout_s: float = 30.0,
        tls: Tls | None = None,
    ):
        self.leaves = [Leaf(s, a, tls) for s, a in enumerate(addresses)]
        self.quorum = quorum
        self.poll_s = poll_s
        self.pinned: str | None = None
        self._metrics = metrics
        self._on_health = on_health
        self._healthy: bool | None = None
        self._admin_metadata = admin_metadata
        self._drain_timeout_s = drain_timeout_s
        self._inflight: Counter[str] = Counter()
        self._draining: str | None = None  # the old version a switch waits for
        self._drained = asyncio.Event()
        self._disagreement = ""  # last logged, to log a disagreement once
        self.polls = 0  # completed polls (tests wait on it)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one poll-and-switch at a time (loop, Reload)

    @property
    def count(self) -> int:
        return len(self.leaves)

    @contextmanager
    def pin(self) -> Iterator[str]:
        """The version this call is pinned to, counted in flight until the block ends."""
        version = self.pinned
        if version is None:
            raise IndexNotReady(
                "no index version is held by every answering leaf yet: "
                + "; ".join(
                    f"shard {leaf.shard} ({leaf.address}): {leaf.error or 'ok'}"
                    for leaf in self.leaves
                )
            )
        self._inflight[version] += 1
        try:
            yield version
        finally:  # (one event loop thread: no lock needed)
            left = self._inflight[version] - 1
            if left:
                self._inflight[version] = left
            else:
                del self._inflight[version]
                if version == self._draining:
                    self._drained.set()

    # -- polling -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leaf-poller")

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # keep polling whatever one round did
                logger.exception("Leaf poll failed")
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for leaf in self.leaves:
            await leaf.channel.close(None)

    async def refresh(self) -> None:
        """Poll every leaf, move the pin forward when they agree, switch leaves, set health."""
        async with self._lock:
            await asyncio.gather(*(self._poll(leaf) for leaf in self.leaves))
            answering = [leaf for leaf in self.leaves if leaf.answering]
            self._metrics.leaves_answering.set(len(answering))
            target = self._agreed(answering)
            if target is not None and target != self.pinned:
                await self._repin(target)
            if self.pinned is not None:
                await self._switch(answering, self.pinned)
            holding = sum(leaf.holds(self.pinned) for leaf in self.leaves)
            await self._set_health(self.pinned is not None and holding >= self.quorum)
            self.polls += 1

    async def _poll(self, leaf: Leaf) -> None:
        try:
            status: retrieval_pb2.LeafStatus = await leaf.leaf.GetLeafStatus(
                retrieval_pb2.LeafStatusRequest(), timeout=max(self.poll_s, 0.5)
            )
        except grpc.aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
            if leaf.answering or leaf.error != error:
                logger.warning("Shard %d (%s) does not answer: %s", leaf.shard, leaf.address, error)
            leaf.answering, leaf.error = False, error
            return
        if (status.shard, status.shard_count) != (leaf.shard, self.count):
            error = (
                f"serves shard {status.shard} of {status.shard_count}, expected shard "
                f"{leaf.shard} of {self.count} (--leaves lists shard 0, 1, ... in order)"
            )
            if leaf.error != error:
                logger.error("%s %s", leaf.address, error)
            leaf.answering, leaf.error, leaf.status = False, error, None
            return
        if not leaf.answering:
            logger.info(
                "Shard %d (%s) answers, holding %s",
                leaf.shard,
                leaf.address,
                ", ".join(status.loaded_versions),
            )
        leaf.answering, leaf.error, leaf.status = True, "", status

    def _agreed(self, answering: Sequence[Leaf]) -> str | None:
        """The version every answering leaf loaded last, if they agree and are a quorum."""
        if len(answering) < self.quorum:
            return None
        last = {
            leaf.status.loaded_versions[-1] if leaf.status and leaf.status.loaded_versions else ""
            for leaf in answering
        }
        if len(last) == 1 and "" not in last:
            self._disagreement = ""
            return last.pop()
        text = ", ".join(sorted(v or "nothing" for v in last))
        if text != self._disagreement:
            logger.info(
                "Leaves have loaded different versions last (%s); keeping %s", text, self.pinned
            )
            self._disagreement = text
        return None

    async def _repin(self, version: str) -> None:
        """Pin new calls to ``version``, then wait for the calls pinned to the old one."""
        old, self.pinned = self.pinned, version
        self._metrics.set_version(version)
        logger.info("Pinned calls to index %s (was %s)", version, old)
        if old is None:
            return
        self._metrics.version_switches.inc()
        started = time.monotonic()
        if self._inflight.get(old):
            self._draining = old
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), self._drain_timeout_s)
            except TimeoutError:
                logger.warning(
                    "Calls pinned to %s still running after %.0f s; switching leaves anyway",
                    old,
                    self._drain_timeout_s,
                )
            finally:
                self._draining = None
        logger.info("Calls pinned to %s done after %.3f s", old, time.monotonic() - started)

    async def _switch(self, answering: Sequence[Leaf], version: str) -> None:
        """Tell every answering leaf that holds ``version`` but serves another to switch."""
        stale = [
            leaf
            for leaf in answering
            if leaf.status is not None
            and version in leaf.status.loaded_versions
            and leaf.status.serving_version != version
        ]

        async def switch(leaf: Leaf) -> None:
            try:
                leaf.status = await leaf.admin.SwitchVersion(
                    retrieval_pb2.SwitchVersionRequest(index_version=version),
                    timeout=5.0,
                    metadata=self._admin_metadata,
                )
                logger.info("Shard %d switched to %s", leaf.shard, version)
            except grpc.aio.AioRpcError as exc:
                logger.warning(
                    "Shard %d (%s) did not switch to %s: %s: %s",
                    leaf.shard,
                    leaf.address,
                    version,
                    exc.code().name,
                    exc.details(),
                )

        await asyncio.gather(*(switch(leaf) for leaf in stale))

    async def _set_health(self, healthy: bool) -> None:
        if healthy != self._healthy:
            self._healthy = healthy
            logger.info(
                "Health %s", "SERVING" if healthy else "NOT_SERVING (below quorum or no version)"
            )
            await self._on_health(healthy)
