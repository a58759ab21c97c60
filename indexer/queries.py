"""Held-out queries for build-time evaluation (``indexer.tuning``).

A query file when given (``file_queries``; ``adindex build --queries``: .npy, shape (nq, d),
float32, e.g. a sample of yesterday's Retrieve embeddings), otherwise ``catalog_queries``:
synthetic users built from the catalog itself (their recipe is in its docstring and its
constants below). Self-queries (indexed vectors) would overstate recall: their nearest
neighbour is themselves, at cosine 1. A file larger than ``max_queries`` is sampled with a
seed. How well the default queries predict recall on real queries: docs/index-parameters.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.ann import normalize
from indexer.manifest import QueriesInfo

QUERY_POOL = 16_384  # catalog vectors among which an interest's region is looked up
REGION_SHARE = 0.04  # an interest: a seed ad's nearest 4% of the pool
INTERESTS_P = (0.5, 0.3, 0.2)  # probability of 1, 2, 3 interests per user
MEMBERS = (1, 3)  # catalog vectors per interest (inclusive range)
QUERY_NOISE = 0.5  # norm of the isotropic part: a user's pins are not ads


@dataclass(frozen=True)
class QuerySet:
    """Held-out queries: xq of shape (nq, d), float32 unit rows, and where they came from."""

    xq: np.ndarray
    source: str  # "file" or "catalog-sample"
    description: str
    path: str | None = None

    def info(self) -> QueriesInfo:
        """What the manifest records about these queries."""
        return QueriesInfo(self.source, len(self.xq), self.description, self.path)


# --- Queries ------------------------------------------------------------------------------------


def catalog_queries(xb: np.ndarray, nq: int, *, seed: int) -> QuerySet:
    """Default held-out queries: synthetic users, each interested in 1-3 regions of the catalog.

    A query is the normalised sum of 1-3 catalog vectors from each of its 1-3 interests (an
    interest: a seed ad's nearest ``REGION_SHARE`` of a sample of ``QUERY_POOL`` ads), plus
    isotropic noise of norm ``QUERY_NOISE``, normalised again.

    Args:
        xb: indexed vectors, shape (n, d), float32 unit rows.
        nq: queries wanted.
        seed: the same (xb, nq, seed) gives the same queries.

    Returns:
        QuerySet with xq of shape (nq, d), float32 unit rows, none equal to an indexed vector.
    """
    n, d = xb.shape
    rng = np.random.default_rng(seed)
    pool = np.sort(rng.choice(n, size=min(n, QUERY_POOL), replace=False))
    width = max(1, round(REGION_SHARE * len(pool)))
    interests = rng.choice(len(INTERESTS_P), size=nq, p=INTERESTS_P) + 1  # (nq,) 1..3
    seeds = rng.choice(n, size=int(interests.sum()))
    scores = np.asarray(xb[seeds], dtype=np.float32) @ np.asarray(xb[pool], dtype=np.float32).T
    region = np.argpartition(-scores, width - 1, axis=1)[:, :width]  # pool slots per interest
    owner = np.repeat(np.arange(nq), interests)  # the query each interest belongs to
    xq = np.zeros((nq, d), dtype=np.float32)
    for j, i in enumerate(owner):
        g = min(int(rng.integers(MEMBERS[0], MEMBERS[1] + 1)), width)
        xq[i] += np.asarray(xb[pool[rng.choice(region[j], size=g, replace=False)]]).sum(axis=0)
    noise = rng.standard_normal((nq, d), dtype=np.float32) * np.float32(QUERY_NOISE / math.sqrt(d))
    description = (
        f"{nq} synthetic users (seed {seed}): each the normalised sum of 1-3 catalog vectors "
        f"from each of 1-3 interests (a seed ad's {width} nearest among {len(pool)} sampled "
        f"ads), plus isotropic noise of norm {QUERY_NOISE}"
    )
    return QuerySet(
        xq=_unit_rows(_unit_rows(xq) + noise), source="catalog-sample", description=description
    )


def file_queries(path: Path, d: int, *, max_queries: int, seed: int) -> QuerySet:
    """Queries from a .npy file of shape (nq, d); a seeded sample of max_queries if larger.

    Raises:
        ValueError: unreadable file, wrong shape or dimension, non-finite or zero rows.
    """
    try:
        xq = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read queries: {exc}") from exc
    if xq.ndim != 2 or xq.shape[1] != d or len(xq) == 0:
        raise ValueError(f"{path}: queries must have shape (nq, {d}); got {xq.shape}")
    xq = np.asarray(xq, dtype=np.float32)
    bad = ~np.isfinite(xq).all(axis=1) | (np.linalg.norm(xq, axis=1) == 0)
    if bad.any():
        raise ValueError(f"{path}: query row {int(np.argmax(bad))} is zero or not finite")
    total = len(xq)
    if total > max_queries:
        xq = xq[np.sort(np.random.default_rng(seed).choice(total, max_queries, replace=False))]
    description = f"{len(xq)} of {total} queries from {path.name}"
    return QuerySet(xq=_unit_rows(xq), source="file", description=description, path=str(path))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(normalize(x), dtype=np.float32)
