"""AdminService: pause, resume, upsert and delete ads without a rebuild; reload the index.

Every call is validated completely before anything changes (unknown ids, malformed ads and
wrong dimensions change nothing), then appended to the durable change log (fsynced), then
applied by swapping in a new eligibility view, and only then answered. So once a call returns
OK, every Retrieve that starts afterwards sees it, and a crash after the reply loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from indexer.ann import normalize
from indexer.artifact import AdMeta, ArtifactError, resolve
from indexer.catalog_validation import validate_row
from indexer.embedding import Embedder
from indexer.manifest import ModelInfo
from indexer.records import AdRecord
from indexer.shards import shard_of
from retrieval.changelog import Change, Op, apply_change, encode_vector
from retrieval.eligibility import Overlay
from retrieval.errors import FailedPrecondition, InvalidArgument, NotFound
from retrieval.leaf import LeafState
from retrieval.searcher import Searcher
from retrieval.state import IndexState
from retrieval.text_embedder import TextEmbedder
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

logger = logging.getLogger(__name__)

MAX_ADS_PER_UPSERT = 1000


class AdminService(retrieval_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        state: IndexState,
        index_root: Path | None,
        *,
        embedder: Embedder | None = None,
        model: Path | None = None,
        text: TextEmbedder | None = None,
    ):
        self._state = state
        self._root = index_root
        self._text = text or TextEmbedder(embedder, model)  # shared with Retrieve (pin text)

    # -- eligibility -------------------------------------------------------------------------
    def _unknown(
        self, request: retrieval_pb2.EligibilityRequest, overlay: Overlay, *, leaf: bool
    ) -> None:
        checks: list[tuple[str, Sequence[str], Callable[[str], bool]]] = [
            ("ad_ids", request.ad_ids, overlay.has_ad)
        ]
        if not leaf:  # a leaf's campaigns span shards: its root checks them on every leaf
            checks += [
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
        searcher, *others = self._state.searchers()  # a leaf mid-swap holds two versions
        log = self._state.changelog
        if log is None:
            raise FailedPrecondition("no change log is open")
        before = searcher.view
        change = log.append(op, **fields)
        after = searcher.apply(partial(apply_change, change))
        for other in others:
            other.apply(partial(apply_change, change))
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
            searcher = self._state.current()
            self._unknown(request, searcher.overlay, leaf=searcher.artifact.shard is not None)
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
        return self._text.for_version(searcher, "ads.embedding")

    def _vectors(
        self, ads: Sequence[retrieval_pb2.Ad], records: Sequence[AdRecord], searcher: Searcher
    ) -> np.ndarray:
        """Each ad's own embedding, or its text embedded as the version embedded its ads."""
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
            model = searcher.artifact.manifest.model
            texts = [model.text_of(records[i]) for i in to_embed]
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
        searcher = self._state.current()
        model = searcher.artifact.manifest.model
        records = [_record(i, ad, model) for i, ad in enumerate(request.ads)]
        _check_owned(records, searcher)
        seen: set[str] = set()
        for i, record in enumerate(records):
            if record.ad_id in seen:
                raise InvalidArgument(
                    f"ads[{i}].ad_id", f"{record.ad_id!r} appears twice in this call"
                )
            seen.add(record.ad_id)
        xb = self._vectors(request.ads, records, searcher)  # outside the lock: the slow part
        metas = [AdMeta.from_record(r) for r in records]
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
        try:
            latest = resolve(self._root)
        except ArtifactError as exc:
            raise FailedPrecondition(f"nothing to reload: {exc}") from exc
        if self._state.holds(latest.name):  # a leaf may hold it prepared, not yet served
            return retrieval_pb2.ReloadResponse(index_version=latest.name, changed=False)
        try:
            searcher = self._state.load(latest)
        except ArtifactError as exc:  # corrupted or refused: the served version stays
            raise FailedPrecondition(f"version {latest.name} refused: {exc}") from exc
        return retrieval_pb2.ReloadResponse(index_version=searcher.version, changed=True)

    def SwitchVersion(
        self, request: retrieval_pb2.SwitchVersionRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.LeafStatus:
        if not isinstance(self._state, LeafState):
            raise FailedPrecondition("not a leaf: only 'adindex serve --shard' switches versions")
        self._state.switch(request.index_version)
        return self._state.status()


def _check_owned(records: Sequence[AdRecord], searcher: Searcher) -> None:
    """A leaf keeps only the ads that hash to its shard (else the root could not find them)."""
    shards = searcher.artifact.manifest.shards
    if shards is None or searcher.artifact.shard is None:
        return
    for i, record in enumerate(records):
        owner = shard_of(record.ad_id, shards.count)
        if owner != searcher.artifact.shard:
            raise InvalidArgument(
                f"ads[{i}].ad_id",
                f"{record.ad_id!r} belongs to shard {owner} of {shards.count}, this leaf serves "
                f"shard {searcher.artifact.shard}: upsert through adindex root",
            )


def _record(i: int, ad: retrieval_pb2.Ad, model: ModelInfo) -> AdRecord:
    """An upserted ad through the catalog's own row checks (ids, status, targeting, text)."""
    row: dict[str, Any] = {
        "ad_id": ad.ad_id or None,
        "advertiser_id": ad.advertiser_id or None,
        "campaign_id": ad.campaign_id or None,
        "title": ad.title,
        "description": ad.description,
        "creative_text": ad.creative_text,
        "status": ad.status or "active",
        "targeting": {
            "countries": list(ad.targeting.countries),
            "locales": list(ad.targeting.locales),
            "devices": list(ad.targeting.devices),
        },
    }
    needs_text = len(ad.embedding) == 0
    record, problems = validate_row(row, text_fields=model.text_fields, needs_text=needs_text)
    if record is None:
        first = problems[0]
        raise InvalidArgument(f"ads[{i}].{first.field}", first.message)
    return record
