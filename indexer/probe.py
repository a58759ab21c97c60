"""What deeper re-ranking would give, measured without timing it (``rerank_probes``).

Used by ``indexer.tuning`` when its sweep falls short of the target: the answer decides
whether a deeper point is worth a timed measurement, and what a refused build advises.
"""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np

from indexer.ann import recall_per_query, search_params
from indexer.manifest import RerankProbe

logger = logging.getLogger(__name__)

PROBE_MAX_K_FACTOR = 64  # the deepest re-ranking probed: k * 64 candidates


def rerank_probes(
    index: faiss.Index, xb: np.ndarray, xq: np.ndarray, truth: np.ndarray, nprobe: int
) -> list[RerankProbe]:
    """Recall at nprobe for every re-ranking depth 1, 2, 4, ... up to ``PROBE_MAX_K_FACTOR``,
    from one batched search of the index's first (PQ) stage for k * 64 candidates.

    Exact re-ranking of the first k * k_factor candidates keeps exactly the true neighbours
    among them (ties aside), so the candidates' prefixes give every depth's recall without
    timing any of them. ``coverage`` is the share of the exact top-k stored in the probed
    lists: no depth can do better.

    Args:
        index: an IVF index inside a re-ranking stage (``has_refine``).
        xb: the indexed vectors (n, d), to find the lists of the true neighbours.
        xq: queries (nq, d); truth: their exact top-k ids (nq, k), -1 padded.
        nprobe: lists probed.
    """
    k = truth.shape[1]
    refine = faiss.downcast_index(index)
    if not isinstance(refine, faiss.IndexRefine):
        raise ValueError(f"rerank_probes needs a re-ranking index; got {type(refine).__name__}")
    base = faiss.downcast_index(refine.base_index)
    depths = [kf for kf in (1 << i for i in range(7)) if kf <= PROBE_MAX_K_FACTOR]
    depths = [kf for kf in depths if kf == 1 or k * kf // 2 < base.ntotal]
    width = min(k * depths[-1], int(base.ntotal))
    t0 = time.perf_counter()
    _, cand = base.search(xq, width, params=search_params(base, nprobe, 1, width))
    quantizer = faiss.extract_index_ivf(base).quantizer
    _, probed = quantizer.search(xq, nprobe)  # (nq, nprobe) lists, nearest first
    ids = truth[truth >= 0]
    _, home = quantizer.search(np.ascontiguousarray(xb[ids], dtype=np.float32), 1)
    list_of = np.full(truth.shape, -1, dtype=np.int64)
    list_of[truth >= 0] = home[:, 0]
    inside = (list_of[:, :, None] == probed[:, None, :]).any(axis=2) & (truth >= 0)
    coverage = float(np.mean(inside.sum(axis=1) / np.maximum((truth >= 0).sum(axis=1), 1)))
    out = [
        RerankProbe(
            nprobe=nprobe,
            k_factor=kf,
            recall=round(float(recall_per_query(cand[:, : k * kf], truth).mean()), 4),
            coverage=round(coverage, 4),
        )
        for kf in depths
    ]
    logger.info(
        "Re-ranking probe at nprobe %d (%.1f s): %s; the probed lists hold %.3f of the top-%d",
        nprobe,
        time.perf_counter() - t0,
        ", ".join(f"k_factor {p.k_factor}: {p.recall:.3f}" for p in out),
        coverage,
        k,
    )
    return out
