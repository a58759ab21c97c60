"""The RetrievalService servicer: request validation, search, response assembly."""

from __future__ import annotations

import json
import logging

import grpc
import numpy as np

from retrieval.eligibility import RequestFilter
from retrieval.state import IndexState
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

logger = logging.getLogger(__name__)


class RetrievalService(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, state: IndexState):
        self._state = state

    def Retrieve(
        self, request: retrieval_pb2.RetrieveRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.RetrieveResponse:
        searcher = self._state.current()  # one searcher for the whole call, even across a swap
        flt = RequestFilter(
            country=request.context.country,
            locale=request.context.locale,
            device=request.context.device,
            exclude_ad_ids=frozenset(request.exclude_ad_ids),
            exclude_advertiser_ids=frozenset(request.exclude_advertiser_ids),
            max_per_advertiser=request.max_per_advertiser,
        )
        xq = np.asarray(request.user_embedding, dtype=np.float32)
        hits = searcher.search(xq, request.k, request.nprobe, flt)
        candidates = []
        for row, score in zip(hits.ids.tolist(), hits.scores.tolist(), strict=True):
            ad = searcher.meta(row, hits.view)
            candidates.append(
                retrieval_pb2.Candidate(
                    ad_id=ad.ad_id,
                    advertiser_id=ad.advertiser_id,
                    campaign_id=ad.campaign_id,
                    score=score,
                )
            )
        return retrieval_pb2.RetrieveResponse(
            candidates=candidates,
            index_version=searcher.version,
            nprobe=hits.nprobe,
            plan=hits.plan,
        )

    def GetIndexInfo(
        self, request: retrieval_pb2.GetIndexInfoRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.IndexInfo:
        searcher = self._state.current()
        m = searcher.artifact.manifest
        view = searcher.view
        return retrieval_pb2.IndexInfo(
            index_version=searcher.version,
            created_at=m["created_at"],
            dimension=searcher.dimension,
            metric=m["metric"],
            index_factory=m["index"]["factory"],
            model=m["model"]["name"],
            ad_count=view.ad_count,
            active_count=view.active_count,
            paused_count=view.ad_count - view.active_count,
            default_nprobe=searcher.default_nprobe,
            max_k=searcher.max_k,
            manifest_json=json.dumps(m, sort_keys=True),
        )
