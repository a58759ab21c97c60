"""A user's engaged pins -> a few weighted interests (PinnerSage, Pinterest KDD 2020).

1. Engagements are grouped by pin: a pin's importance is the sum over its engagements of
   ``weight * 0.5 ** (age / half_life)``, age counted from the newest engagement of the request
   (only relative ages matter: the shares are normalised). An engagement without a time counts
   as the newest.
2. The pins are clustered by Ward's agglomerative method over their unit embeddings, merging
   while the cheapest merge costs at most ``merge_cost``. Ward's cost of merging clusters A and
   B is ``|A||B| / (|A|+|B|) * ||mean(A) - mean(B)||^2``: for two pins ``1 - cos``, and for two
   samples of one interest about ``1 - (their mean pairwise cosine)`` whatever their sizes,
   while samples of two interests cost more the larger they are. So one threshold separates
   interests of any size (the default is measured in docs/interests.md).
3. Each cluster's importance is the sum of its pins'; the ``max_interests`` most important
   clusters become interests, weighted by importance. Each is searched with its medoid (the
   pin closest, by importance-weighted cosine, to the cluster's other pins: PinnerSage's
   choice, an actual pin, robust to an outlier) or with its importance-weighted mean
   (``vector``; the default, measured in docs/interests.md, is on ``InterestConfig``).

Pure numpy; n is at most the request's pin limit (a few hundred), so the O(n^2) memory and
O(n^3) worst-case time of the plain algorithm stay in the milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from indexer.ann import normalize

__all__ = ["PinInterest", "PinVector", "pin_importance", "pin_interests", "ward_clusters"]


PinVector = Literal["medoid", "mean"]


@dataclass(frozen=True)
class PinInterest:
    """One interest made from pins: which pins, what searches, how much it weighs."""

    rows: tuple[int, ...]  # indexes into the pins given, medoid first
    medoid: int  # index of the cluster's most central pin
    weight: float  # share of the kept clusters' importance (the interests' weights sum to 1)
    vector: np.ndarray  # (d,) float32 unit query: the medoid's embedding or the cluster mean


def pin_importance(
    engaged_at_unix_s: np.ndarray, weights: np.ndarray, half_life_s: float
) -> np.ndarray:
    """Recency-decayed weight of each engagement.

    Args:
        engaged_at_unix_s: (n,) int64 engagement times; 0 = unknown (counted as the newest).
        weights: (n,) float engagement weights, > 0.
        half_life_s: an engagement this much older than the newest weighs half as much.
    """
    t = np.asarray(engaged_at_unix_s, dtype=np.float64)
    known = t > 0
    newest = t[known].max() if known.any() else 0.0
    age = np.where(known, newest - t, 0.0)
    return np.asarray(weights, dtype=np.float64) * np.exp2(-age / half_life_s)


def ward_clusters(xp: np.ndarray, merge_cost: float) -> np.ndarray:
    """Ward agglomerative clustering, stopped before the first merge costing more than
    ``merge_cost``.

    Args:
        xp: (n, d) float32 unit rows.
        merge_cost: largest Ward merge cost allowed (for two single pins: 1 - cosine).

    Returns:
        (n,) int64 cluster labels 0..c-1, numbered by each cluster's first pin.
    """
    n = len(xp)
    labels = np.arange(n)
    if n < 2:
        return labels.astype(np.int64)
    x = np.asarray(xp, dtype=np.float64)
    # Ward cost between singletons: 1/2 * squared distance = 1 - cos for unit rows.
    cost = np.maximum(1.0 - x @ x.T, 0.0)
    np.fill_diagonal(cost, np.inf)
    size = np.ones(n)
    alive = np.ones(n, dtype=bool)
    for _ in range(n - 1):
        flat = int(np.argmin(cost))
        i, j = divmod(flat, n)
        if cost[i, j] > merge_cost:
            break
        # Lance-Williams update for Ward: the cost from every other cluster to i + j.
        ni, nj, nk = size[i], size[j], size
        merged = ((ni + nk) * cost[i] + (nj + nk) * cost[j] - nk * cost[i, j]) / (ni + nj + nk)
        cost[i], cost[:, i] = merged, merged
        cost[i, i] = np.inf
        cost[j], cost[:, j] = np.inf, np.inf
        size[i] += size[j]
        alive[j] = False
        labels[labels == j] = i
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber clusters by their first pin
    return np.asarray(order[inverse], dtype=np.int64)


def _medoid(x: np.ndarray, importance: np.ndarray) -> int:
    """Index (into x) of the row with the largest importance-weighted cosine to the others."""
    if len(x) <= 2:
        return int(np.argmax(importance))  # for two pins every row is as central: the heavier
    similarity = x @ x.T
    np.fill_diagonal(similarity, 0.0)
    return int(np.argmax(similarity @ importance))


def pin_interests(
    xp: np.ndarray,
    importance: np.ndarray,
    *,
    max_interests: int,
    merge_cost: float,
    vector: PinVector,
) -> list[PinInterest]:
    """Cluster pins and keep the most important clusters as interests.

    Args:
        xp: (n, d) float32 unit embeddings of distinct pins, n >= 1.
        importance: (n,) float64 > 0, each pin's summed decayed engagement weight.
        max_interests: clusters kept, >= 1.
        merge_cost: Ward merge cost threshold (see :func:`ward_clusters`).
        vector: what searches for a cluster: its medoid's embedding or its weighted mean.

    Returns:
        Interests, most important first; their weights sum to 1.
    """
    if max_interests < 1:
        raise ValueError(f"max_interests must be >= 1; got {max_interests}")
    labels = ward_clusters(xp, merge_cost)
    clusters = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    mass = np.array([importance[rows].sum() for rows in clusters])
    kept = np.argsort(-mass, kind="stable")[:max_interests]
    total = float(mass[kept].sum())
    out = []
    for c in kept.tolist():
        rows = clusters[c]
        medoid = int(rows[_medoid(np.asarray(xp[rows], dtype=np.float64), importance[rows])])
        others = sorted((r for r in rows.tolist() if r != medoid), key=lambda r: -importance[r])
        weight = float(mass[c]) / total if total > 0 and math.isfinite(total) else 1 / len(kept)
        if vector == "medoid" or len(rows) == 1:
            x = np.asarray(xp[medoid], dtype=np.float32)
        else:
            mean = importance[rows] @ np.asarray(xp[rows], dtype=np.float64)
            x = normalize(mean.reshape(1, -1))[0]
        out.append(PinInterest((medoid, *others), medoid, weight, x))
    return out
