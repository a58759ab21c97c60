"""The RetrievalService servicer: request validation, search, response assembly."""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext

import grpc
import numpy as np

from indexer.artifact import read_manifest
from retrieval.batching import MicroBatcher
from retrieval.interest_requests import InterestRetrieval, query_kind, request_filter
from retrieval.leaf import LeafState
from retrieval.metrics import Metrics
from retrieval.recall_control import RecallControl
from retrieval.searcher import Hits, Searcher
from retrieval.shadow import ShadowRecall
from retrieval.state import IndexState
from retrieval.threads import SearchThreads
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from retrieval.wire import scalar_fields

logger = logging.getLogger(__name__)


class RetrievalService(retrieval_pb2_grpc.RetrievalServiceServicer):
    """Answers Retrieve and GetIndexInfo from the state's current searcher.

    Unfiltered calls go through the micro-batcher when there is one; calls with a filter or an
    advertiser cap always take the single-query path. Calls with several interests, engaged
    pins or a context pin go to ``retrieval.interest_requests``.
    """

    def __init__(
        self,
        state: IndexState,
        *,
        batcher: MicroBatcher | None = None,
        shadow: ShadowRecall | None = None,
        metrics: Metrics | None = None,
        threads: SearchThreads | None = None,
        control: RecallControl | None = None,
        interests: InterestRetrieval | None = None,
    ):
        self._state = state
        self._batcher = batcher
        self._shadow = shadow
        self._metrics = metrics
        self._threads = threads
        self._control = control
        self._interests = interests or InterestRetrieval(state, threads=threads, shadow=shadow)

    def _search(
        self, request: retrieval_pb2.RetrieveRequest, context: grpc.ServicerContext
    ) -> tuple[Searcher, Hits, np.ndarray]:
        ticket = self._batcher.arrive() if self._batcher is not None else None
        try:
            # one searcher for the whole call, even across a swap; a pinned call gets its version
            searcher = self._state.searcher_for(request.index_version)
            flt = request_filter(request)
            xq = np.asarray(request.user_embedding, dtype=np.float32)
            if ticket is not None and not flt.narrows and not flt.max_per_advertiser:
                deadline = time.monotonic() + context.time_remaining()
                return (
                    searcher,
                    ticket.search(searcher, xq, request.k, request.nprobe, deadline),
                    xq,
                )
            if ticket is not None:
                ticket.leave()  # not batchable: let a waiting leader go without us
            with self._threads.search() if self._threads is not None else nullcontext():
                hits = searcher.search(xq, request.k, request.nprobe, flt)
            if self._metrics is not None:
                self._metrics.batch_size.observe(1)
            return searcher, hits, xq
        finally:
            if ticket is not None:
                ticket.leave()

    def Retrieve(
        self, request: retrieval_pb2.RetrieveRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.RetrieveResponse:
        """The servicer method as generated code declares it; the server answers
        ``retrieve_bytes`` instead (the same message, serialised)."""
        return retrieval_pb2.RetrieveResponse.FromString(self.retrieve_bytes(request, context))

    def retrieve_bytes(
        self, request: retrieval_pb2.RetrieveRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Retrieve, answered as the serialised RetrieveResponse (``add_to_server``)."""
        kind = query_kind(request)
        if kind != "user_embedding":
            return self._interests.retrieve(request, kind).SerializeToString()
        searcher, hits, xq = self._search(request, context)
        if self._shadow is not None:
            if request.max_per_advertiser:
                self._shadow.skip()
            else:
                self._shadow.offer(searcher, xq, request.k, hits)
        return response_bytes(searcher, hits)

    def GetIndexInfo(
        self, request: retrieval_pb2.GetIndexInfoRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.IndexInfo:
        searcher = self._state.current()
        m = searcher.artifact.manifest
        view = searcher.view
        return retrieval_pb2.IndexInfo(
            index_version=searcher.version,
            created_at=m.created_at,
            dimension=searcher.dimension,
            metric=m.metric,
            index_factory=m.index.factory,
            model=m.model.name,
            ad_count=view.ad_count,
            active_count=view.active_count,
            paused_count=view.ad_count - view.active_count,
            default_nprobe=searcher.default_nprobe,
            default_k_factor=searcher.k_factor,
            recall_control=self._control is not None and self._control.controlled(searcher.version),
            max_k=searcher.max_k,
            manifest_json=json.dumps(m.to_json(), sort_keys=True),
            pin_count=len(searcher.artifact.pins or ()),
            max_interests=self._interests.config.max_interests,
            max_engaged_pins=self._interests.config.max_engaged_pins,
            leaf=self._state.status() if isinstance(self._state, LeafState) else None,
            version_manifest_json=_version_manifest(searcher),
        )


def _shards(searcher: Searcher) -> tuple[list[int], int]:
    """A leaf names the shard that answered, for the root's merge: (shards_answered, count)."""
    shards = searcher.artifact.manifest.shards
    if shards is None:
        return [], 0
    return [searcher.artifact.shard or 0], shards.count


def response_message(searcher: Searcher, hits: Hits) -> retrieval_pb2.RetrieveResponse:
    """The RetrieveResponse of one search, one Python object per candidate."""
    answered, count = _shards(searcher)
    response = retrieval_pb2.RetrieveResponse(
        index_version=searcher.version,
        nprobe=hits.nprobe,
        plan=hits.plan,
        k_factor=hits.k_factor,
        shards_answered=answered,
        shard_count=count,
    )
    shard = searcher.artifact.shard or 0
    add = response.candidates.add  # in place: ~40% cheaper than building a list to copy in
    for row, score in zip(hits.ids.tolist(), hits.scores.tolist(), strict=True):
        ad = searcher.meta(row, hits.view)
        add(
            ad_id=ad.ad_id,
            advertiser_id=ad.advertiser_id,
            campaign_id=ad.campaign_id,
            score=score,
            shard=shard,
        )
    return response


def response_bytes(searcher: Searcher, hits: Hits) -> bytes:
    """``response_message(searcher, hits).SerializeToString()``, concatenated from the
    version's pre-serialised candidates (``retrieval.wire``) when they can express it."""
    candidates = searcher.candidates.encode(hits.ids, hits.scores)
    if candidates is None:  # an upserted ad, or another case the table leaves out
        return response_message(searcher, hits).SerializeToString()
    answered, count = _shards(searcher)
    return candidates + scalar_fields(
        index_version=searcher.version,
        nprobe=hits.nprobe,
        plan=hits.plan,
        shards_answered=answered,
        shard_count=count,
        k_factor=hits.k_factor,
    )


def add_to_server(service: RetrievalService, server: grpc.Server) -> None:
    """Register RetrievalService as ``add_RetrievalServiceServicer_to_server`` does, except
    that Retrieve answers bytes already serialised (``retrieve_bytes``; no serializer)."""
    handlers = {
        "Retrieve": grpc.unary_unary_rpc_method_handler(
            service.retrieve_bytes,
            request_deserializer=retrieval_pb2.RetrieveRequest.FromString,
            response_serializer=None,  # grpc sends the handler's bytes as they are
        ),
        "GetIndexInfo": grpc.unary_unary_rpc_method_handler(
            service.GetIndexInfo,
            request_deserializer=retrieval_pb2.GetIndexInfoRequest.FromString,
            response_serializer=retrieval_pb2.IndexInfo.SerializeToString,
        ),
    }
    name = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)  # type: ignore[attr-defined]


def _version_manifest(searcher: Searcher) -> str:
    """A shard's whole version's manifest (the root describes the version with it), else ""."""
    art = searcher.artifact
    if art.shard is None or art.manifest.shards is None or art.manifest.shards.index is None:
        return ""
    version = read_manifest(art.path.parent)  # shard-I/ lives in the version's directory
    return json.dumps(version.to_json(), sort_keys=True)
