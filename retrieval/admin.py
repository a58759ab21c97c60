"""AdminService: pause, resume, upsert and delete ads without a rebuild; reload the index.

Every call is validated completely before anything changes (unknown ids, malformed ads and
wrong dimensions change nothing), then appended to the durable change log (fsynced), then
applied by swapping in a new eligibility view, and only then answered. So once a call returns
OK, every Retrieve that starts afterwards sees it, and a crash after the reply loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from indexer.artifact import AdMeta, ArtifactError, resolve
from indexer.catalog import Targeting
from indexer.embedding import DEFAULT_MODEL_NAME, Embedder, SentenceTransformerEmbedder, normalize
from retrieval.changelog import Change, Op, decode_vector, encode_vector
from retrieval.eligibility import Overlay
from retrieval.errors import InvalidArgument, NotFound, RetrievalError
from retrieval.searcher import Searcher
from retrieval.state import IndexState
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

logger = logging.getLogger(__name__)

MAX_ADS_PER_UPSERT = 1000


class FailedPrecondition(RetrievalError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


def _change_fn(change: Change) -> Callable[[Overlay], None]:
    """How a logged change modifies the overlay (the same for a live call and a replay)."""

    def run(overlay: Overlay) -> None:
        if change.op in ("pause", "resume"):
            status = "paused" if change.op == "pause" else "active"
            overlay.set_status(status, change.ad_ids, change.campaign_ids, change.advertiser_ids)
        elif change.op == "delete":
            overlay.delete(change.ad_ids)
        else:
            for ad in change.ads:
                meta = AdMeta.from_json(ad)
                overlay.upsert(meta, decode_vector(ad["embedding"]))

    return run


def replay(searcher: Searcher, changes: Sequence[Change]) -> None:
    """Apply logged changes to a freshly loaded searcher (ids unknown to it are skipped)."""
    for change in changes:
        searcher.apply(_change_fn(change))


class AdminService(retrieval_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        state: IndexState,
        index_root: Path | None,
        *,
        embedder: Embedder | None = None,
        model: Path | None = None,
    ):
        self._state = state
        self._root = index_root
        self._embedder = embedder
        self._model = model

    # -- eligibility -------------------------------------------------------------------------
    def _unknown(self, request: retrieval_pb2.EligibilityRequest, overlay: Overlay) -> None:
        checks: list[tuple[str, Sequence[str], Callable[[str], bool]]] = [
            ("ad_ids", request.ad_ids, overlay.has_ad),
            ("campaign_ids", request.campaign_ids, overlay.has_campaign),
            ("advertiser_ids", request.advertiser_ids, overlay.has_advertiser),
        ]
        for field, ids, exists in checks:
            missing = [i for i in ids if not exists(i)]
            if missing:
                shown = ", ".join(repr(i) for i in missing[:10])
                more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                raise NotFound(f"{field}: unknown {shown}{more}; nothing was changed")

    def _commit(self, op: Op, **fields: Any) -> tuple[Change, int, str]:
        """Log (fsync) then apply; returns the change, ads whose eligibility flipped, version."""
        searcher = self._state.current()
        log = self._state.changelog
        if log is None:
            raise FailedPrecondition("no change log is open")
        before = searcher.view
        change = log.append(op, **fields)
        after = searcher.apply(_change_fn(change))
        flipped = int(np.count_nonzero(before.eligible != after.eligible))
        flipped += (
            abs(after.delta.eligible.sum() - before.delta.eligible.sum()) if op != "upsert" else 0
        )
        logger.info("%s #%d: %d ads changed eligibility", op, change.seq, flipped)
        return change, flipped, searcher.version

    def _eligibility(
        self, op: Op, request: retrieval_pb2.EligibilityRequest
    ) -> retrieval_pb2.EligibilityResponse:
        if not (request.ad_ids or request.campaign_ids or request.advertiser_ids):
            raise InvalidArgument("ad_ids", "name at least one ad, campaign or advertiser")
        with self._state.admin_lock:
            self._unknown(request, self._state.current().overlay)
            change, flipped, version = self._commit(
                op,
                ad_ids=list(request.ad_ids),
                campaign_ids=list(request.campaign_ids),
                advertiser_ids=list(request.advertiser_ids),
            )
        return retrieval_pb2.EligibilityResponse(
            ads_changed=flipped, sequence=change.seq, index_version=version
        )

    def Pause(
        self, request: retrieval_pb2.EligibilityRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.EligibilityResponse:
        return self._eligibility("pause", request)

    def Resume(
        self, request: retrieval_pb2.EligibilityRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.EligibilityResponse:
        return self._eligibility("resume", request)

    def Delete(
        self, request: retrieval_pb2.DeleteRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.EligibilityResponse:
        if not request.ad_ids:
            raise InvalidArgument("ad_ids", "name at least one ad")
        with self._state.admin_lock:
            overlay = self._state.current().overlay
            missing = [i for i in request.ad_ids if not overlay.has_ad(i)]
            if missing:
                raise NotFound(
                    f"ad_ids: unknown {', '.join(repr(i) for i in missing[:10])}; nothing was changed"
                )
            change, flipped, version = self._commit("delete", ad_ids=list(request.ad_ids))
        return retrieval_pb2.EligibilityResponse(
            ads_changed=flipped, sequence=change.seq, index_version=version
        )

    # -- upsert ------------------------------------------------------------------------------
    def _embedder_for(self, searcher: Searcher) -> Embedder:
        model = searcher.artifact.manifest["model"]
        if self._embedder is None:
            if self._model is None and model["name"] != DEFAULT_MODEL_NAME:
                raise InvalidArgument(
                    "ads.embedding",
                    f"this index was built with model {model['name']!r}, which this server cannot "
                    "embed with; send embeddings, or start the server with --model",
                )
            self._embedder = SentenceTransformerEmbedder(self._model)
        if self._embedder.dimension != searcher.dimension:
            raise FailedPrecondition(
                f"the server's model gives {self._embedder.dimension}-d vectors, the index is {searcher.dimension}-d"
            )
        return self._embedder

    def _vectors(self, ads: Sequence[retrieval_pb2.Ad], searcher: Searcher) -> np.ndarray:
        d = searcher.dimension
        xb = np.zeros((len(ads), d), dtype=np.float32)
        to_embed: list[int] = []
        for i, ad in enumerate(ads):
            if len(ad.embedding) == 0:
                to_embed.append(i)
                continue
            x = np.asarray(ad.embedding, dtype=np.float32)
            if len(x) != d:
                raise InvalidArgument(
                    f"ads[{i}].embedding", f"has {len(x)} values, the index dimension is {d}"
                )
            if not np.isfinite(x).all() or not np.any(x):
                raise InvalidArgument(f"ads[{i}].embedding", "must be finite and not all zero")
            xb[i] = x
        if to_embed:
            texts = [_text(ads[i]) for i in to_embed]
            for i, text in zip(to_embed, texts, strict=True):
                if not text:
                    raise InvalidArgument(
                        f"ads[{i}]", "needs title, description or creative_text, or an embedding"
                    )
            xb[to_embed] = self._embedder_for(searcher).encode(texts)
        return normalize(xb)

    def Upsert(
        self, request: retrieval_pb2.UpsertRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.UpsertResponse:
        if not request.ads:
            raise InvalidArgument("ads", "send at least one ad")
        if len(request.ads) > MAX_ADS_PER_UPSERT:
            raise InvalidArgument(
                "ads", f"at most {MAX_ADS_PER_UPSERT} ads per call, got {len(request.ads)}"
            )
        metas = [_meta(i, ad) for i, ad in enumerate(request.ads)]
        seen: set[str] = set()
        for i, meta in enumerate(metas):
            if meta.ad_id in seen:
                raise InvalidArgument(
                    f"ads[{i}].ad_id", f"{meta.ad_id!r} appears twice in this call"
                )
            seen.add(meta.ad_id)
        searcher = self._state.current()
        xb = self._vectors(request.ads, searcher)  # embed outside the lock: it is the slow part
        with self._state.admin_lock:
            overlay = self._state.current().overlay
            updated = sum(overlay.has_ad(m.ad_id) for m in metas)
            ads_json = [
                {**m.to_json(), "embedding": encode_vector(x)}
                for m, x in zip(metas, xb, strict=True)
            ]
            change, _, version = self._commit("upsert", ads=ads_json)
        return retrieval_pb2.UpsertResponse(
            inserted=len(metas) - updated,
            updated=updated,
            sequence=change.seq,
            index_version=version,
        )

    # -- reload ------------------------------------------------------------------------------
    def Reload(
        self, request: retrieval_pb2.ReloadRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.ReloadResponse:
        if self._root is None:
            raise FailedPrecondition("the server was not started with an index root to reload from")
        current = self._state.current().version if self._state.loaded else None
        try:
            latest = resolve(self._root)
        except ArtifactError as exc:
            raise FailedPrecondition(f"nothing to reload: {exc}") from exc
        if latest.name == current:
            return retrieval_pb2.ReloadResponse(index_version=current, changed=False)
        try:
            searcher = self._state.load(latest)
        except ArtifactError as exc:  # corrupted or refused: the served version stays
            raise FailedPrecondition(f"version {latest.name} refused: {exc}") from exc
        return retrieval_pb2.ReloadResponse(index_version=searcher.version, changed=True)


def _text(ad: retrieval_pb2.Ad) -> str:
    return ". ".join(t.strip() for t in (ad.title, ad.description, ad.creative_text) if t.strip())


def _meta(i: int, ad: retrieval_pb2.Ad) -> AdMeta:
    for name in ("ad_id", "advertiser_id", "campaign_id"):
        if not getattr(ad, name).strip():
            raise InvalidArgument(f"ads[{i}].{name}", "is required")
    status = ad.status.strip().lower() or "active"
    if status not in ("active", "paused"):
        raise InvalidArgument(
            f"ads[{i}].status", f"must be 'active' or 'paused', got {ad.status!r}"
        )
    try:
        targeting = Targeting.from_json(
            {
                "countries": list(ad.targeting.countries),
                "locales": list(ad.targeting.locales),
                "devices": list(ad.targeting.devices),
            }
        )
    except ValueError as exc:
        raise InvalidArgument(
            f"ads[{i}].{str(exc).split(':', 1)[0]}", str(exc).split(": ", 1)[-1]
        ) from exc
    return AdMeta(
        ad.ad_id.strip(),
        ad.advertiser_id.strip(),
        ad.campaign_id.strip(),
        status,
        targeting,
        ad.title,
    )
