"""Which ads may be served right now: catalog status plus admin changes, as immutable views.

An artifact is immutable; pauses, resumes, upserts and deletes made since its catalog snapshot
live in an :class:`Overlay` (mutable, guarded by the index's admin lock). After every change the
overlay produces a new :class:`View` (eligibility mask over the artifact's rows, the FAISS
selector over it, and the *delta*: upserted ads with their vectors, searched exactly). A search
reads the current view once and uses it throughout, so it sees a change entirely or not at all,
and the reference swap is the moment a change takes effect.

Eligible (artifact row or delta ad) = not deleted, not replaced by an upsert, status active
(the catalog's, overridden by pause/resume by ad id or by an upsert), and neither its campaign
nor its advertiser paused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexer.ann import BitmapSelector
from indexer.artifact import AdMeta, Artifact
from indexer.records import parse_targeting
from retrieval.errors import InvalidArgument

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestFilter:
    """Per-request restrictions: user context, exclusions, advertiser diversity."""

    country: str = ""
    locale: str = ""
    device: str = ""
    exclude_ad_ids: frozenset[str] = frozenset()
    exclude_advertiser_ids: frozenset[str] = frozenset()
    max_per_advertiser: int = 0

    def __post_init__(self) -> None:
        if self.max_per_advertiser < 0:
            raise InvalidArgument(
                "max_per_advertiser", f"must be >= 0, got {self.max_per_advertiser}"
            )
        for name, key in (("country", "countries"), ("locale", "locales"), ("device", "devices")):
            value = getattr(self, name)
            if value:
                _, problems = parse_targeting({key: [value]})  # the catalog's own rules
                if problems:
                    raise InvalidArgument(f"context.{name}", problems[0][1])

    @property
    def context(self) -> tuple[str, str, str]:
        return (self.country, self.locale, self.device)

    @property
    def narrows(self) -> bool:
        """Whether it restricts the eligible set beyond the view's own eligibility."""
        return any(self.context) or bool(self.exclude_ad_ids or self.exclude_advertiser_ids)


@dataclass(frozen=True)
class Delta:
    """Ads upserted since the snapshot: searched exactly, next to the IVF index."""

    ads: tuple[AdMeta, ...] = ()
    xb: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    eligible: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass(frozen=True)
class View:
    """One immutable state of eligibility; searches read it once, admin changes replace it."""

    generation: int
    eligible: np.ndarray  # (n,) bool over artifact rows
    selector: BitmapSelector  # FAISS's view of ``eligible``
    main_count: int  # eligible artifact rows
    delta: Delta
    ad_count: int  # ads that exist: artifact rows not deleted or superseded, plus the delta
    # FAISS search parameters over ``selector`` by (nprobe, k_factor, k), made on first use
    # (``Searcher._params_over``); they point into ``selector``, so they live and die with it
    params: dict[tuple[int, int, int], Any] = field(default_factory=dict, compare=False)

    @classmethod
    def make(cls, generation: int, eligible: np.ndarray, delta: Delta, ad_count: int) -> View:
        eligible.setflags(write=False)
        selector = BitmapSelector(eligible)
        return cls(generation, eligible, selector, int(eligible.sum()), delta, ad_count)

    @property
    def active_count(self) -> int:
        """Eligible ads in all: artifact rows and upserted ones."""
        return self.main_count + int(self.delta.eligible.sum())


class Overlay:
    """Admin changes over one artifact. Not thread-safe: the caller serialises changes."""

    def __init__(self, art: Artifact):
        self._art = art
        ads = art.ads
        self.row_of: dict[str, int] = {a.ad_id: i for i, a in enumerate(ads)}
        self._catalog_active = np.fromiter(
            (a.status == "active" for a in ads), dtype=bool, count=len(ads)
        )
        self._campaign_rows = _group_rows([a.campaign_id for a in ads])
        self._advertiser_rows = _group_rows([a.advertiser_id for a in ads])
        self.status_override: dict[str, str] = {}
        self.paused_campaigns: set[str] = set()
        self.paused_advertisers: set[str] = set()
        self.deleted: set[str] = set()
        self.upserted: dict[str, tuple[AdMeta, np.ndarray]] = {}
        self.generation = 0

    # -- what exists -------------------------------------------------------------------------
    def has_ad(self, ad_id: str) -> bool:
        return ad_id not in self.deleted and (ad_id in self.row_of or ad_id in self.upserted)

    def has_campaign(self, campaign_id: str) -> bool:
        return campaign_id in self._campaign_rows or any(
            m.campaign_id == campaign_id for m, _ in self.upserted.values()
        )

    def has_advertiser(self, advertiser_id: str) -> bool:
        return advertiser_id in self._advertiser_rows or any(
            m.advertiser_id == advertiser_id for m, _ in self.upserted.values()
        )

    def advertiser_rows(self, advertiser_id: str) -> np.ndarray:
        return self._advertiser_rows.get(advertiser_id, _NO_ROWS)

    # -- changes -----------------------------------------------------------------------------
    def set_status(
        self,
        status: str,
        ad_ids: Sequence[str],
        campaign_ids: Sequence[str],
        advertiser_ids: Sequence[str],
    ) -> None:
        for ad_id in ad_ids:
            self.status_override[ad_id] = status
        group_campaigns, group_advertisers = (
            (self.paused_campaigns.add, self.paused_advertisers.add)
            if status == "paused"
            else (self.paused_campaigns.discard, self.paused_advertisers.discard)
        )
        for campaign_id in campaign_ids:
            group_campaigns(campaign_id)
        for advertiser_id in advertiser_ids:
            group_advertisers(advertiser_id)

    def upsert(self, meta: AdMeta, vector: np.ndarray) -> bool:
        """Add or replace an ad; returns True when it replaced an existing one."""
        existed = self.has_ad(meta.ad_id)
        self.deleted.discard(meta.ad_id)
        self.status_override.pop(meta.ad_id, None)  # the upserted record's status wins
        self.upserted[meta.ad_id] = (meta, np.asarray(vector, dtype=np.float32))
        return existed

    def delete(self, ad_ids: Sequence[str]) -> None:
        for ad_id in ad_ids:
            self.deleted.add(ad_id)
            self.upserted.pop(ad_id, None)
            self.status_override.pop(ad_id, None)

    # -- the resulting view ------------------------------------------------------------------
    def _status_active(self, ad_id: str, catalog_active: bool) -> bool:
        override = self.status_override.get(ad_id)
        return catalog_active if override is None else override == "active"

    def _group_ok(self, meta: AdMeta) -> bool:
        return (
            meta.campaign_id not in self.paused_campaigns
            and meta.advertiser_id not in self.paused_advertisers
        )

    def view(self) -> View:
        """A new immutable view reflecting every change so far."""
        self.generation += 1
        eligible = self._catalog_active.copy()
        for ad_id, status in self.status_override.items():
            row = self.row_of.get(ad_id)
            if row is not None:
                eligible[row] = status == "active"
        for group, rows in (
            (self.paused_campaigns, self._campaign_rows),
            (self.paused_advertisers, self._advertiser_rows),
        ):
            for key in group:
                eligible[rows.get(key, _NO_ROWS)] = False
        gone = 0
        for ad_id in (*self.deleted, *self.upserted):
            row = self.row_of.get(ad_id)
            if row is not None:
                eligible[row] = False  # deleted, or superseded by its delta copy
                gone += 1
        delta = self._delta()
        return View.make(self.generation, eligible, delta, len(eligible) - gone + len(delta.ads))

    def _delta(self) -> Delta:
        if not self.upserted:
            return Delta(xb=np.zeros((0, self._art.dimension), dtype=np.float32))
        metas = tuple(m for m, _ in self.upserted.values())
        xb = np.stack([x for _, x in self.upserted.values()]).astype(np.float32)
        ok = np.array(
            [
                self._status_active(m.ad_id, m.status == "active") and self._group_ok(m)
                for m in metas
            ]
        )
        return Delta(ads=metas, xb=xb, eligible=ok)


_NO_ROWS = np.zeros(0, dtype=np.int64)


def _group_rows(keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Rows of each distinct key, as int64 arrays."""
    if not keys:
        return {}
    uniq, inverse = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    return {str(u): order[bounds[i] : bounds[i + 1]].astype(np.int64) for i, u in enumerate(uniq)}
