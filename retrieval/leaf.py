"""A leaf of a sharded deployment (``adindex serve --shard I``): one shard, versions switched by
the root.

A leaf serves shard I of the newest version with the ordinary :class:`RetrievalService`
(filters, eligibility, exclusions, diversity cap), with three differences that let a root
(``retrieval.root``) fan out to it without ever mixing versions:

- **Prepared, not swapped.** A newly published version is loaded and validated in the
  background as usual, then held *beside* the served one instead of replacing it. Calls pinned
  to either (``RetrieveRequest.index_version``) are answered from it; unpinned calls get the
  served one. The root pins its calls to the new version once every leaf holds it, waits for
  its calls pinned to the old one, then tells each leaf to switch (``AdminService.
  SwitchVersion``). The old one is released ``release_after_s`` later (5 s by default), so
  that other roots over the same leaves, which move their pin at their own next poll, never
  find it gone. At most two versions are held: preparing another releases all but the served
  one.
- **Admin changes apply to every version held**, so a pause is honoured by calls pinned to
  either side of a swap.
- **Ownership.** Upserts of ads that hash to another shard are refused (``indexer.shards``);
  campaign and advertiser ids are not checked against this shard's ads, since their ads are
  spread over the shards and the root checks them against every leaf (``LookupIds``).

The first version loaded at start is served at once (the root pins whatever every leaf holds).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

import grpc

from retrieval.errors import VersionNotHeld
from retrieval.metrics import Metrics
from retrieval.searcher import DEFAULT_EXACT_MAX_ROWS, Searcher
from retrieval.state import IndexState
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from retrieval.validation import ValidationConfig

logger = logging.getLogger(__name__)

MAX_HELD = 2  # the served version and the next one


class LeafState(IndexState):
    """An :class:`IndexState` that holds the served version and a prepared one."""

    def __init__(
        self,
        on_serving: Callable[[bool], None],
        *,
        shard: int,
        max_k: int,
        exact_max_rows: int = DEFAULT_EXACT_MAX_ROWS,
        metrics: Metrics | None = None,
        validation: ValidationConfig | None = None,
        release_after_s: float = 0.0,
        on_load: Callable[[Searcher], None] | None = None,
    ):
        self.shard = shard
        self._release_after_s = release_after_s
        self._held: dict[str, Searcher] = {}  # in load order; replaced whole, never mutated
        super().__init__(
            on_serving,
            max_k=max_k,
            exact_max_rows=exact_max_rows,
            metrics=metrics,
            validation=validation,
            on_load=on_load,
            shard=shard,
        )

    def searcher_for(self, version: str) -> Searcher:
        if not version:
            return self.current()
        searcher = self._held.get(version)
        if searcher is None:
            raise VersionNotHeld(
                f"index_version: {version!r} is not loaded on shard {self.shard} "
                f"(holds {', '.join(self._held) or 'nothing'})"
            )
        return searcher

    def searchers(self) -> list[Searcher]:
        current = self.current()
        return [current, *(s for s in self._held.values() if s is not current)]

    def holds(self, version: str) -> bool:
        return version in self._held

    @property
    def held_versions(self) -> list[str]:
        return list(self._held)

    def _install(self, searcher: Searcher) -> Searcher | None:
        """Hold ``searcher`` beside the served version (serve it if nothing is served yet)."""
        current = self._searcher
        keep = {v: s for v, s in self._held.items() if s is current}
        for version, dropped in self._held.items():
            if version not in keep:
                logger.info("Releasing prepared index %s for %s", version, searcher.version)
                self._release(dropped)
        self._held = {**keep, searcher.version: searcher}
        if current is None:
            self._searcher = searcher
            self._set_health(serving=True)
        return None

    def switch(self, version: str) -> Searcher:
        """Serve ``version`` to unpinned calls; release the versions loaded before it after
        ``release_after_s`` (at once when 0).

        Raises:
            VersionNotHeld: ``version`` is not loaded here.
        """
        with self.admin_lock:
            searcher = self._held.get(version)
            if searcher is None:
                raise VersionNotHeld(
                    f"index_version: {version!r} is not loaded on shard {self.shard} "
                    f"(holds {', '.join(self._held) or 'nothing'})"
                )
            previous, self._searcher = self._searcher, searcher
        if previous is not searcher:
            m = searcher.artifact.manifest
            self._metrics.set_index(searcher.version, m.model.name, m.index.factory)
            self._metrics.index_events.labels("swapped").inc()
            logger.info("Switched shard %d to index %s", self.shard, version)
        if self._release_after_s > 0:
            timer = threading.Timer(self._release_after_s, self._release_older)
            timer.daemon = True
            timer.start()
        else:
            self._release_older()
        return searcher

    def _release_older(self) -> None:
        """Release every version loaded before the one served now."""
        with self.admin_lock:
            current = self._searcher
            order = list(self._held)
            if current is None or current.version not in self._held:
                return
            older = order[: order.index(current.version)]
            released = [self._held[v] for v in older]
            self._held = {v: self._held[v] for v in order if v not in older}
        for old in released:
            logger.info("Releasing index %s", old.version)
            self._release(old)

    def _release(self, searcher: Searcher) -> None:
        weakref.finalize(searcher, self._freed, searcher.version)

    def status(self) -> retrieval_pb2.LeafStatus:
        current = self._searcher
        shards = current.artifact.manifest.shards if current is not None else None
        return retrieval_pb2.LeafStatus(
            shard=self.shard,
            shard_count=shards.count if shards is not None else 0,
            serving_version=current.version if current is not None else "",
            loaded_versions=list(self._held),
        )


class LeafService(retrieval_pb2_grpc.LeafServiceServicer):
    """What a root asks a leaf besides Retrieve: its status, and which ids it knows."""

    def __init__(self, state: LeafState):
        self._state = state

    def GetLeafStatus(
        self, request: retrieval_pb2.LeafStatusRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.LeafStatus:
        return self._state.status()

    def LookupIds(
        self, request: retrieval_pb2.EligibilityRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.LookupIdsResponse:
        overlay = self._state.current().overlay
        return retrieval_pb2.LookupIdsResponse(
            unknown_ad_ids=[i for i in request.ad_ids if not overlay.has_ad(i)],
            unknown_campaign_ids=[i for i in request.campaign_ids if not overlay.has_campaign(i)],
            unknown_advertiser_ids=[
                i for i in request.advertiser_ids if not overlay.has_advertiser(i)
            ],
        )
