"""Retrieve for several interests of one user at once: quotas, one batched search, merge.

A user is rarely one taste; one averaged embedding lands between the tastes and retrieves for
none (PinnerSage, Pinterest KDD 2020). So a request may carry several weighted interests:

1. **Quotas.** Each interest gets its share of k by weight, but at least a floor
   (``min_share`` of k, at least 1, at most k / interests) so a small interest still gets
   candidates; the others share what is left by weight. Rounded by largest remainder, the
   quotas sum to k.
2. **One search.** All interests are searched in one FAISS call (a batch of queries through the
   request's one eligibility selector: targeting and exclusions hold for every interest), each
   ``depth`` deep: its quota, times ``overfetch`` when there are several interests (dedup will
   take some), times 4 with an advertiser cap (as the single path does).
3. **Merge.** Interests take turns in proportion to their quotas (interest i's r-th candidate
   comes at (r + 1) / quota_i), each walking its own list best first until it has contributed
   its quota. An ad already taken is skipped and credited to the later interest too (a
   candidate lists every interest that reached it, and keeps its best score); an ad whose
   advertiser already has ``max_per_advertiser`` candidates is skipped. Candidates come in
   this order, so every prefix keeps the shares.
4. **Deepen.** If an interest ran out of candidates before its quota while deeper ones exist,
   every interest is searched 4x deeper and merged again, as the single path deepens for the
   cap. So k come back whenever k ads are eligible.

With one interest this is exactly the single-embedding path (same FAISS calls, same order).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from retrieval.eligibility import RequestFilter
from retrieval.pin_interests import PinVector
from retrieval.searcher import Hits, Searcher

__all__ = ["InterestConfig", "InterestHits", "quotas", "search_interests"]

DEEPEN = 4  # the single path's factor too


@dataclass(frozen=True)
class InterestConfig:
    """Multi-interest retrieval: request-size limits, quotas, pin clustering (server side)."""

    max_interests: int = 8  # interests per request (and clusters kept from engaged pins)
    max_engaged_pins: int = 500  # engaged pins per request
    min_share: float = 0.1  # each interest gets at least this share of k (>= 1 candidate)
    overfetch: float = 2.0  # first search depth per interest = its quota x this (dedup)
    pin_interests: int = 4  # interests kept from engaged pins when a request does not say
    half_life_s: float = 30 * 86_400.0  # engagement recency half-life when a request does not say
    # Ward merge cost threshold for clustering engaged pins, and what searches for a cluster
    # (retrieval.pin_interests); measured on the sample users' pins with all-MiniLM-L6-v2
    # (docs/interests.md).
    merge_cost: float = 0.65
    pin_vector: PinVector = "mean"

    def __post_init__(self) -> None:
        if self.max_interests < 1 or self.max_engaged_pins < 1:
            raise ValueError(
                f"max_interests and max_engaged_pins must be >= 1; got {self.max_interests}, "
                f"{self.max_engaged_pins}"
            )
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError(f"min_share must be in [0, 1]; got {self.min_share}")
        if self.overfetch < 1.0:
            raise ValueError(f"overfetch must be >= 1; got {self.overfetch}")
        if not 1 <= self.pin_interests <= self.max_interests:
            raise ValueError(
                f"pin_interests must be in [1, max_interests={self.max_interests}]; "
                f"got {self.pin_interests}"
            )
        if not self.half_life_s > 0 or not self.merge_cost >= 0:
            raise ValueError(
                f"half_life_s must be > 0 and merge_cost >= 0; got {self.half_life_s}, "
                f"{self.merge_cost}"
            )


@dataclass(frozen=True)
class InterestHits:
    """Merged candidates of several interests, in merge order."""

    ids: np.ndarray  # (m,) int64 rows (as Hits.ids: >= ntotal are upserted ads)
    scores: np.ndarray  # (m,) float32 best score over the interests that reached the ad
    found_by: list[tuple[int, ...]]  # per candidate: interests that reached it, best first
    quotas: np.ndarray  # (n_interests,) int64, summing to k
    contributed: np.ndarray  # (n_interests,) int64 candidates each interest added
    hits: list[Hits]  # the last search, one per interest (plan, nprobe, view)
    depth: int  # candidates searched per interest in the last search


def quotas(weights: np.ndarray, k: int, min_share: float) -> np.ndarray:
    """Each interest's share of k by weight, but at least a floor (largest remainder rounding).

    Args:
        weights: (m,) float > 0.
        k: candidates wanted, >= 1.
        min_share: floor as a share of k (at least 1 candidate, at most k // m).

    Returns:
        (m,) int64 summing to k: ``max(floor, k * w_i / sum(w))`` rounded, the interests above
        the floor sharing what the floored ones leave.
    """
    w = np.asarray(weights, dtype=np.float64)
    m = len(w)
    floor = min(k // m, max(1, math.ceil(min_share * k)))
    floored = np.zeros(m, dtype=bool)
    while True:  # water-filling: the heaviest interest is never floored, as floor * m <= k
        share = (k - floor * floored.sum()) * np.where(floored, 0.0, w) / w[~floored].sum()
        below = ~floored & (share < floor - 1e-9)  # (exact shares must not flip by rounding)
        if not below.any():
            break
        floored |= below
    out: np.ndarray = np.where(floored, floor, np.floor(share)).astype(np.int64)
    remainder = np.where(floored, -1.0, share - np.floor(share))
    # Leftover candidates go by largest remainder; ties to the heavier, then the first.
    order = np.lexsort((np.arange(m), -w, -remainder))
    out[order[: k - int(out.sum())]] += 1
    return out


def search_interests(
    searcher: Searcher,
    xq: np.ndarray,
    weights: np.ndarray,
    k: int,
    nprobe: int = 0,
    flt: RequestFilter | None = None,
    *,
    config: InterestConfig | None = None,
) -> InterestHits:
    """Top-k candidates for several interests of one user (see the module docstring).

    Args:
        searcher: the version to search.
        xq: (m, d) float32 unit rows, one per interest (``Searcher.check_query``).
        weights: (m,) float > 0, relative.
        k: candidates wanted, in [1, max_k].
        nprobe: lists to probe, in [0, nlist]; 0 = the version's default.
        flt: user context, exclusions and the per-advertiser cap (for the merged list).
        config: quotas and over-fetching (default: ``InterestConfig()``).

    Returns:
        k candidates whenever at least k eligible ads exist (fewer only when they do not).
    """
    config = config or InterestConfig()
    flt = flt or RequestFilter()
    searcher.check_limits(k, nprobe)
    scope = searcher.scope(flt)
    q = quotas(weights, k, config.min_share)
    depth = int(q.max()) if len(q) == 1 else math.ceil(int(q.max()) * config.overfetch)
    depth = min(scope.m_total, depth * (DEEPEN if flt.max_per_advertiser else 1))
    while True:
        hits = searcher.search_scope(xq, depth, nprobe, scope)
        merged, starved = _merge(searcher, hits, q, flt.max_per_advertiser, depth)
        if not starved or depth >= scope.m_total:
            return merged
        depth = min(scope.m_total, depth * DEEPEN)


def _merge(
    searcher: Searcher, hits: list[Hits], q: np.ndarray, cap: int, depth: int
) -> tuple[InterestHits, bool]:
    """Walk the interests' lists by quota (module docstring, step 3).

    Returns:
        The merged candidates, and whether an interest ran short while its list was cut at
        ``depth`` (deeper candidates exist: search deeper).
    """
    ids = [h.ids.tolist() for h in hits]
    scores_of = [h.scores.tolist() for h in hits]
    # Interest i's r-th candidate comes at (r + 1) / q_i; ties: heavier quota, then first.
    turns = [(1 / int(q[i]), -int(q[i]), i) for i in range(len(hits)) if q[i] > 0 and ids[i]]
    heapq.heapify(turns)
    pos = [0] * len(hits)
    taken: dict[int, int] = {}  # row -> position in the result
    rows: list[int] = []
    scores: list[float] = []
    found: list[dict[int, float]] = []  # per candidate: interest -> its score
    per_advertiser: dict[str, int] = {}
    contributed = np.zeros(len(hits), dtype=np.int64)
    view = hits[0].view if hits else searcher.view
    while turns:
        _, neg_quota, i = heapq.heappop(turns)
        r = pos[i]
        pos[i] += 1
        if pos[i] < len(ids[i]):
            heapq.heappush(turns, ((pos[i] + 1) / -neg_quota, neg_quota, i))
        row, score = ids[i][r], scores_of[i][r]
        at = taken.get(row)
        if at is not None:  # found again: credit this interest too
            found[at][i] = score
            scores[at] = max(scores[at], score)
            continue
        if cap:
            advertiser = searcher.meta(row, view).advertiser_id
            if per_advertiser.get(advertiser, 0) >= cap:
                continue
            per_advertiser[advertiser] = per_advertiser.get(advertiser, 0) + 1
        taken[row] = len(rows)
        rows.append(row)
        scores.append(score)
        found.append({i: score})
        contributed[i] += 1
        if contributed[i] >= q[i]:  # its quota is filled: it walks no further
            turns = [t for t in turns if t[2] != i]
            heapq.heapify(turns)
    starved = any(contributed[i] < q[i] and len(h.ids) >= depth for i, h in enumerate(hits))
    merged = InterestHits(
        ids=np.array(rows, dtype=np.int64),
        scores=np.array(scores, dtype=np.float32),
        found_by=[tuple(sorted(f, key=lambda i: (-f[i], i))) for f in found],
        quotas=q,
        contributed=contributed,
        hits=hits,
        depth=depth,
    )
    return merged, starved
