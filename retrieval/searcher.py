"""Search one loaded artifact: approximate neighbours among the ads eligible for this request.

Eligibility is applied inside FAISS with an ``IDSelectorBitmap``, never by post-filtering, so
ineligible ads take no slot in the top k. The plan depends on how many ads the request's filter
leaves (its selectivity), because a fixed nprobe loses recall under selective filters (the
probed lists hold too few eligible ads; FAISS #4465):

- ``exact``: when a filter leaves at most ``exact_max_rows`` ads, score them all (a
  matrix-vector product over their embeddings). Recall 1 and cheaper than probing most lists.
- ``ivf``: otherwise, probe ``nprobe / selectivity`` lists (selectivity = eligible share of the
  ads the index would serve unfiltered), so the probed lists hold about as many eligible ads as
  an unfiltered search sees; if fewer than k come back, widen 4x and retry, up to every list.

Upserted ads (the delta) are always scored exactly and merged by score. ``max_per_advertiser``
is applied greedily over a candidate list that is deepened until k survive or the eligible ads
run out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from indexer import ann
from indexer.artifact import AdMeta, Artifact
from retrieval.controller import SearchPoint
from retrieval.eligibility import Overlay, RequestFilter, View
from retrieval.errors import DimensionMismatch, InvalidArgument
from retrieval.targeting import TargetingIndex
from retrieval.wire import CandidateTable

logger = logging.getLogger(__name__)

# Measured crossover between the exact scan of the eligible rows and widened IVF probing:
# docs/filtering.md. Up to this threshold the exact plan may trade some latency for recall 1.
DEFAULT_EXACT_MAX_ROWS = 10_000
_NO_FILTER = RequestFilter()
_MAX_CACHED_PARAMS = 256  # search parameters kept per view (points x k in use)


@dataclass(frozen=True)
class Hits:
    """Search results for one query, best first."""

    ids: np.ndarray  # (m,) int64 rows: < ntotal are artifact rows, ntotal + j is delta ad j
    scores: np.ndarray  # (m,) float32 inner products
    plan: str  # "ivf" or "exact"
    nprobe: int  # lists probed (0 for an exact plan)
    view: View  # the eligibility view the search used (to resolve ids)
    # The eligibility the search applied (artifact rows, delta ads); shadow recall re-runs
    # the query exactly over the same sets. None only for hand-made Hits.
    mask: np.ndarray | None = None
    delta_mask: np.ndarray | None = None
    k_factor: int = 0  # re-ranking depth of an ivf plan
    # The default point the search started from (None: the request chose its nprobe); nprobe
    # above may be wider (too few eligible ads reached). The recall controller counts the
    # call's recall for this point.
    default: SearchPoint | None = None

    def top(self, k: int) -> Hits:
        """The first ``k`` hits (a batch searched with the largest k of its calls)."""
        return dataclasses.replace(self, ids=self.ids[:k], scores=self.scores[:k])


@dataclass(frozen=True)
class Scope:
    """The ads one request may see, read once from the view (``Searcher.scope``)."""

    view: View
    mask: np.ndarray  # (ntotal,) bool: eligible artifact rows
    delta_mask: np.ndarray  # eligible upserted ads
    m_main: int  # eligible artifact rows
    m_total: int  # and upserted ads


class Searcher:
    """Thread-safe search over one artifact; admin changes swap in a new eligibility view."""

    def __init__(
        self, art: Artifact, *, max_k: int = 1000, exact_max_rows: int = DEFAULT_EXACT_MAX_ROWS
    ):
        self.artifact = art
        self.max_k = max_k
        self.exact_max_rows = exact_max_rows
        search = art.manifest.search
        self.build_point = SearchPoint(search.nprobe, search.k_factor)
        # The default point: one immutable tuple, read once per search and swapped whole by
        # the recall controller (retrieval.recall_control), so a search never mixes two points.
        self._point = self.build_point
        self.min_rerank = search.min_rerank
        self.nlist = art.manifest.index.nlist
        self.ntotal = int(art.index.ntotal)
        # Exact plans and shadow recall score rows where the vectors already are: the
        # re-ranking stage (RFlat's IndexFlat or SQfp16's codes), scanned with the selector (no
        # gather copy, and faster than numpy on the row counts the exact plan serves), else
        # embeddings.npy rows.
        store = ann.vector_store(art.index)
        self.exact_vectors: np.ndarray | ann.VectorStore = (
            store if store is not None else art.embeddings
        )
        ann.use_serving_implementation(art.index)
        self.targeting = TargetingIndex(art.ads)
        # Every ad's Candidate serialised once: responses are concatenated (retrieval.wire)
        self.candidates = CandidateTable(art.ads, art.shard or 0)
        self.overlay = Overlay(art)
        self._view = self.overlay.view()
        # Set once another version replaced this one (retrieval.state): in-flight calls finish
        # on it, but nothing new should hold on to it (shadow recall drops its queued calls).
        self.retired = False

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def dimension(self) -> int:
        return self.artifact.dimension

    @property
    def view(self) -> View:
        return self._view

    @property
    def point(self) -> SearchPoint:
        """The default (nprobe, k_factor) of requests that choose no nprobe."""
        return self._point

    @property
    def default_nprobe(self) -> int:
        return self._point.nprobe

    @property
    def k_factor(self) -> int:
        return self._point.k_factor

    def set_point(self, point: SearchPoint) -> None:
        """Serve ``point`` by default from the next search on (one reference assignment)."""
        if not 1 <= point.nprobe <= self.nlist or point.k_factor < 1:
            raise ValueError(f"point {point} outside nprobe [1, {self.nlist}], k_factor >= 1")
        self._point = point

    @property
    def active_count(self) -> int:
        return self._view.active_count

    def apply(self, change: Callable[[Overlay], None]) -> View:
        """Run ``change`` on the overlay and publish the resulting view (callers serialise changes)."""
        change(self.overlay)
        self._view = self.overlay.view()  # one reference assignment: searches see all or nothing
        return self._view

    def meta(self, row: int, view: View) -> AdMeta:
        return self.artifact.ads[row] if row < self.ntotal else view.delta.ads[row - self.ntotal]

    def check_query(self, user_embedding: np.ndarray, field: str = "user_embedding") -> np.ndarray:
        """Validate and L2-normalise one query; returns shape (1, d) float32.

        ``field`` names the request field in errors (e.g. ``interests[1].embedding``).
        """
        x = np.asarray(user_embedding, dtype=np.float32).reshape(1, -1)
        if x.shape[1] == 0:
            raise InvalidArgument(field, "is empty")
        if x.shape[1] != self.dimension:
            raise DimensionMismatch(
                field,
                f"has {x.shape[1]} values, the index dimension is {self.dimension}",
            )
        bad = ~np.isfinite(x[0])
        if bad.any():
            raise InvalidArgument(field, f"value at position {int(np.argmax(bad))} is not finite")
        norm = float(np.linalg.norm(x))
        if norm == 0.0:
            raise InvalidArgument(field, "is the zero vector, which has no direction to search")
        return x / norm

    def _mask(self, view: View, flt: RequestFilter) -> np.ndarray:
        """Artifact rows eligible for this request."""
        if not flt.narrows:
            return view.eligible
        mask = (
            view.eligible & self.targeting.admits(flt.context)
            if any(flt.context)
            else view.eligible.copy()
        )
        for ad_id in flt.exclude_ad_ids:
            row = self.overlay.row_of.get(ad_id)
            if row is not None:
                mask[row] = False
        for advertiser_id in flt.exclude_advertiser_ids:
            mask[self.overlay.advertiser_rows(advertiser_id)] = False
        return mask

    def _delta_mask(self, view: View, flt: RequestFilter) -> np.ndarray:
        delta = view.delta
        if not flt.narrows or not delta.ads:
            return delta.eligible
        ok = [
            e
            and a.targeting.admits(*flt.context)
            and a.ad_id not in flt.exclude_ad_ids
            and a.advertiser_id not in flt.exclude_advertiser_ids
            for e, a in zip(delta.eligible.tolist(), delta.ads, strict=True)
        ]
        return np.array(ok, dtype=bool)

    def check_limits(self, k: int, nprobe: int) -> None:
        if not 1 <= k <= self.max_k:
            raise InvalidArgument("k", f"must be in [1, {self.max_k}], got {k}")
        if not 0 <= nprobe <= self.nlist:
            raise InvalidArgument(
                "nprobe", f"must be in [0, {self.nlist}] (0 = default), got {nprobe}"
            )

    def search(
        self, user_embedding: np.ndarray, k: int, nprobe: int = 0, flt: RequestFilter = _NO_FILTER
    ) -> Hits:
        """Top-k ads eligible for this request.

        Args:
            user_embedding: shape (d,) or (1, d), any scale; it is normalised here.
            k: candidates wanted, in [1, max_k].
            nprobe: lists to probe for an unfiltered request, in [0, nlist]; 0 = the tuned default.
            flt: user context, exclusions and the per-advertiser cap.

        Returns:
            k hits whenever at least k eligible ads exist (fewer only when they do not).
        """
        self.check_limits(k, nprobe)
        xq = self.check_query(user_embedding)
        view = self._view  # read once: the whole search sees one state
        mask, delta_mask = self._mask(view, flt), self._delta_mask(view, flt)
        m_main = view.main_count if mask is view.eligible else int(mask.sum())
        m_total = m_main + int(delta_mask.sum())
        point = self._point if not nprobe else self._point._replace(nprobe=nprobe)
        fetch = min(k, m_total) if not flt.max_per_advertiser else min(m_total, k * 4)
        while True:
            ids, scores, plan, used = self._search_main(xq, fetch, point, mask, m_main, view)
            ids, scores = self._merge_delta(xq, ids, scores, fetch, view, delta_mask)
            if flt.max_per_advertiser:
                ids, scores = self._cap(ids, scores, k, flt.max_per_advertiser, view)
            if len(ids) >= k or fetch >= m_total:
                kf = point.k_factor if plan == "ivf" else 0
                default = None if nprobe else point
                return Hits(ids[:k], scores[:k], plan, used, view, mask, delta_mask, kf, default)
            fetch = min(m_total, fetch * 4)  # the cap discarded too many: look deeper

    def search_batch(
        self,
        xq: np.ndarray,
        k: int,
        nprobe: int = 0,
        *,
        point: SearchPoint | None = None,
        view: View | None = None,
    ) -> list[Hits]:
        """Unfiltered top-k for several queries in one FAISS call (micro-batching).

        Each row gets what ``search(row, k, nprobe)`` without a filter returns: the same view
        (read once for the whole batch), the same widening when too few eligible ads were
        reached, the same merge of upserted ads.

        Args:
            xq: shape (nq, d), float32, rows already checked and normalised (``check_query``).
            k: candidates per query, in [1, max_k] (``check_limits``).
            nprobe: lists to probe, in [0, nlist]; 0 = the tuned default.
            point: search at this (nprobe, k_factor) instead (shadow recall's probes).
            view: the eligibility to search (default: the current one).

        Returns:
            One Hits per row of ``xq``.
        """
        view = view or self._view
        delta_mask = view.delta.eligible
        fetch = min(k, view.main_count + int(delta_mask.sum()))
        current = self._point  # read once: the whole batch searches one point
        default = current if point is None and not nprobe else None
        if point is None:
            point = current if not nprobe else current._replace(nprobe=nprobe)
        k_main = min(fetch, view.main_count)
        if k_main > 0:
            params = self._params_over(point, k_main, view.selector, view)
            D, I = self.artifact.index.search(np.ascontiguousarray(xq), k_main, params=params)
        out = []
        for i in range(len(xq)):
            q = xq[i : i + 1]
            plan, used = ("ivf", point.nprobe) if k_main else ("exact", 0)
            if k_main == 0:
                ids, scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
            elif (I[i] >= 0).sum() < k_main and point.nprobe < self.nlist:  # rare: widen alone
                ids, scores, plan, used = self._search_main(
                    q, fetch, point, view.eligible, view.main_count, view
                )
            else:
                keep = I[i] >= 0
                ids, scores = I[i][keep], D[i][keep]
            ids, scores = self._merge_delta(q, ids, scores, fetch, view, delta_mask)
            kf = point.k_factor if plan == "ivf" else 0
            out.append(Hits(ids, scores, plan, used, view, view.eligible, delta_mask, kf, default))
        return out

    def scope(self, flt: RequestFilter = _NO_FILTER) -> Scope:
        """The ads a request with this filter may see, in the current view."""
        view = self._view  # read once: every search of the request sees one state
        mask, delta_mask = self._mask(view, flt), self._delta_mask(view, flt)
        m_main = view.main_count if mask is view.eligible else int(mask.sum())
        return Scope(view, mask, delta_mask, m_main, m_main + int(delta_mask.sum()))

    def search_scope(self, xq: np.ndarray, k: int, nprobe: int, scope: Scope) -> list[Hits]:
        """Top-k of each query among the scope's ads, in one FAISS call (several interests).

        Each row gets what ``search`` finds for it without an advertiser cap: the same plan
        (exact scan of a narrow filter's rows, or IVF with nprobe widened by the filter's
        selectivity, and again for a row that reached fewer than k eligible ads), the same
        merge of upserted ads.

        Args:
            xq: (nq, d) float32 unit rows (``check_query``).
            k: candidates per query, >= 1.
            nprobe: lists to probe for an unfiltered request; 0 = the tuned default.
            scope: the request's eligible ads (``scope``).

        Returns:
            One Hits per row of ``xq``, best first.
        """
        view, mask, m_main = scope.view, scope.mask, scope.m_main
        fetch = min(k, scope.m_total)
        k_main = min(fetch, m_main)
        point = self._point if not nprobe else self._point._replace(nprobe=nprobe)
        default = None if nprobe else point
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        plan, used = "ivf", point.nprobe
        if k_main == 0:
            plan, used = "exact", 0
            D = np.zeros((len(xq), 0), np.float32)
            I = np.zeros((len(xq), 0), np.int64)
        elif mask is not view.eligible and m_main <= self.exact_max_rows:
            plan, used = "exact", 0
            D, I = ann.exact_search(self.exact_vectors, xq, k_main, eligible=mask)
        else:
            selector = view.selector if mask is view.eligible else ann.BitmapSelector(mask)
            if mask is not view.eligible:
                used = min(self.nlist, math.ceil(point.nprobe * view.main_count / max(m_main, 1)))
            params = self._params_over(point._replace(nprobe=used), k_main, selector, view)
            D, I = self.artifact.index.search(xq, k_main, params=params)
        out = []
        for i in range(len(xq)):
            q = xq[i : i + 1]
            row_plan, row_used = plan, used
            keep = I[i] >= 0
            ids, scores = I[i][keep], D[i][keep]
            if plan == "ivf" and len(ids) < k_main and used < self.nlist:  # rare: widen alone
                ids, scores, row_plan, row_used = self._search_main(
                    q, fetch, point, mask, m_main, view
                )
            ids, scores = self._merge_delta(q, ids, scores, fetch, view, scope.delta_mask)
            kf = point.k_factor if row_plan == "ivf" else 0
            hits = Hits(ids, scores, row_plan, row_used, view, mask, scope.delta_mask, kf, default)
            out.append(hits)
        return out

    def _search_main(
        self, xq: np.ndarray, k: int, point: SearchPoint, mask: np.ndarray, m: int, view: View
    ) -> tuple[np.ndarray, np.ndarray, str, int]:
        nprobe = point.nprobe
        k = min(k, m)
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), "exact", 0
        if mask is view.eligible:
            selector = view.selector
        else:
            if m <= self.exact_max_rows:
                D, I = ann.exact_search(self.exact_vectors, xq, k, eligible=mask)
                keep = I[0] >= 0
                return I[0][keep], D[0][keep], "exact", 0
            selector = ann.BitmapSelector(mask)
            nprobe = min(self.nlist, math.ceil(nprobe * view.main_count / max(m, 1)))
        while True:
            params = self._params_over(point._replace(nprobe=nprobe), k, selector, view)
            D, I = self.artifact.index.search(xq, k, params=params)
            keep = I[0] >= 0  # FAISS pads with -1 when fewer than k eligible ads were reached
            if keep.sum() >= k or nprobe >= self.nlist:
                return I[0][keep], D[0][keep], "ivf", nprobe
            nprobe = min(self.nlist, nprobe * 4)

    def _merge_delta(
        self,
        xq: np.ndarray,
        ids: np.ndarray,
        scores: np.ndarray,
        k: int,
        view: View,
        delta_mask: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        if not delta_mask.any():
            return ids, scores
        rows = np.flatnonzero(delta_mask)
        delta_scores = np.asarray(view.delta.xb[rows] @ xq[0], dtype=np.float32)
        D, I = ann.merge_topk([scores, delta_scores], [ids, rows + self.ntotal], k)
        return I, D

    def _cap(
        self, ids: np.ndarray, scores: np.ndarray, k: int, cap: int, view: View
    ) -> tuple[np.ndarray, np.ndarray]:
        counts: dict[str, int] = {}
        keep = []
        for j, row in enumerate(ids.tolist()):
            advertiser = self.meta(row, view).advertiser_id
            if counts.get(advertiser, 0) < cap:
                counts[advertiser] = counts.get(advertiser, 0) + 1
                keep.append(j)
                if len(keep) == k:
                    break
        return ids[keep], scores[keep]

    def _params(self, point: SearchPoint, k: int, sel: faiss.IDSelector) -> faiss.SearchParameters:
        return ann.search_params(
            self.artifact.index,
            point.nprobe,
            point.k_factor,
            k,
            min_rerank=self.min_rerank,
            sel=sel,
        )

    def _params_over(
        self, point: SearchPoint, k: int, selector: ann.BitmapSelector, view: View
    ) -> faiss.SearchParameters:
        """``_params`` over ``selector``; over the view's own selector (every unfiltered call)
        made once per (point, k) and view: FAISS only reads them, and building them makes SWIG
        objects on every call (docs/serving.md, "The server's own cost per call")."""
        if selector is not view.selector:
            return self._params(point, k, selector.sel)
        key = (point.nprobe, point.k_factor, k)
        params = view.params.get(key)
        if params is None:
            params = self._params(point, k, selector.sel)
            if len(view.params) < _MAX_CACHED_PARAMS:  # a racing call may add the same: harmless
                view.params[key] = params
        return params
