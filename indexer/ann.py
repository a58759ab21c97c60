"""FAISS search mechanics, defined once for the build's tuning, the server, shadow recall and the
benchmarks: vector normalisation, search parameters, OpenMP thread counts, ID selectors, exact
top-k and recall.

Every adindex index is searched by inner product over L2-normalised vectors (cosine). A search
setting is (nprobe, k_factor): lists probed, and for an index with a re-ranking stage
(``IndexRefine``: ``Refine(SQfp16)`` by default, ``RFlat``, ``Refine(SQ8)``) how many PQ candidates
per result are re-scored against the stage's stored vectors. Small requests re-rank at least
``min_rerank`` candidates (:func:`effective_k_factor`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import faiss
import numpy as np

Metric = Literal["ip", "l2"]

EXACT_CHUNK_ROWS = 65_536  # rows scored per block by exact_search (memory-mapped inputs too)


def normalize(x: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Row-wise L2 normalisation (zero rows stay zero), C-contiguous float32.

    Into a new array, or with ``inplace`` into x itself when x already is C-contiguous float32
    (a build's own catalog matrix: at 1M x 384 a copy is 1.5 GB of peak memory).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out = x if inplace and x.flags.writeable else np.zeros_like(x)
    if out is x:
        norms[norms == 0] = 1.0  # zero rows stay zero: 0 / 1
        np.divide(x, norms, out=x)
        return x
    np.divide(x, norms, out=out, where=norms > 0)
    return out


# --- Search settings ----------------------------------------------------------------------------


def effective_k_factor(k_factor: float, min_rerank: int, k: int) -> float:
    """Re-ranking depth really used: at least ``min_rerank`` candidates for a small k."""
    return max(float(k_factor), min_rerank / k)


def has_refine(index: faiss.Index) -> bool:
    """Whether the index (for ``IndexShards``, each shard) has an exact re-ranking stage."""
    index = faiss.downcast_index(index)
    shards = isinstance(index, faiss.IndexShards) and index.count() > 0  # type: ignore[attr-defined]
    if shards:  # a sharded version as served: every shard is built alike
        index = faiss.downcast_index(index.at(0))  # type: ignore[attr-defined]
    return isinstance(index, faiss.IndexRefine)


VectorStore = faiss.IndexFlat | faiss.IndexScalarQuantizer  # an index that holds the vectors


def vector_store(index: faiss.Index) -> VectorStore | None:
    """The re-ranking stage when it holds every vector exactly or as float16, else None.

    ``RFlat``'s ``IndexFlat`` and ``Refine(SQfp16)``'s ``IndexScalarQuantizer`` both store the
    vectors themselves (fp16 rounds each component by at most 2^-11 of its magnitude): serving
    reads them for exact plans, shadow recall and checks instead of a second copy.
    ``Refine(SQ8)`` and others quantise too coarsely for "exact".
    """
    outer = faiss.downcast_index(index)
    if not isinstance(outer, faiss.IndexRefine):
        return None
    stage = faiss.downcast_index(outer.refine_index)
    if stage.ntotal == 0:
        return None
    if isinstance(stage, faiss.IndexFlat):
        return stage
    fp16 = faiss.ScalarQuantizer.QT_fp16
    if isinstance(stage, faiss.IndexScalarQuantizer) and stage.sq.qtype == fp16:
        return stage
    return None


def search_params(
    index: faiss.Index,
    nprobe: int,
    k_factor: float,
    k: int,
    *,
    min_rerank: int = 0,
    sel: faiss.IDSelector | None = None,
) -> faiss.SearchParameters:
    """The parameters of one search of ``index`` at (nprobe, k_factor) for k results.

    Args:
        index: an IVF index, possibly wrapped in a re-ranking stage.
        nprobe: inverted lists to probe.
        k_factor: re-ranking depth (ignored without a re-ranking stage).
        k: results wanted (the depth is at least ``min_rerank / k``).
        min_rerank: candidates re-ranked at least.
        sel: ids the search may return (None: all).
    """
    # Keyword arguments, not attribute assignment: FAISS's Python wrapper then keeps the nested
    # objects alive (the C++ structs hold raw pointers). Its type stubs lack them.
    ivf = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)  # type: ignore[call-arg]
    if not has_refine(index):
        return ivf
    return faiss.IndexRefineSearchParameters(  # type: ignore[call-arg]
        k_factor=effective_k_factor(k_factor, min_rerank, k), base_index_params=ivf, sel=sel
    )


def use_serving_implementation(index: faiss.Index) -> None:
    """Let a lone query use several OpenMP threads (fast-scan IVF indexes; others unchanged).

    FAISS's fast-scan implementation 15 splits one query's probed lists over the calling
    thread's OpenMP threads, where the default splits only a batch's queries. On one thread it
    costs the same as the default and finds the same neighbours up to ties (docs/serving.md).
    It needs the default code block size (32).
    """
    index = faiss.downcast_index(index)
    base = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index
    if isinstance(base, faiss.IndexIVFFastScan) and base.bbs == 32:
        base.implem = 15


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """Run FAISS with n OpenMP threads on the calling thread inside the block, then restore.

    OpenMP's thread count is per calling thread: a thread that never sets it searches with the
    process default (one thread per core).
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class BitmapSelector:
    """A FAISS ``IDSelectorBitmap`` over a bool mask; holds the packed bits it points into."""

    def __init__(self, mask: np.ndarray):
        self.bits = np.packbits(mask, bitorder="little")  # bit i & 7 of byte i >> 3
        self.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(self.bits))


# --- Exact search -------------------------------------------------------------------------------


def exact_search(
    xb: np.ndarray | VectorStore,
    xq: np.ndarray,
    k: int,
    *,
    eligible: np.ndarray | None = None,
    metric: Metric = "ip",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among the eligible rows of xb, best first.

    Args:
        xb: (n, d) float32 or float16 vectors (may be memory-mapped: scored block by block),
            or a :func:`vector_store` holding them (searched in place with a selector, no
            copy; an fp16 store is scored as its decoded vectors).
        xq: (nq, d) float32 queries (unit rows for cosine).
        k: neighbours per query.
        eligible: (n,) bool; None means every row.
        metric: "ip" (largest inner product first) or "l2" (smallest distance first).

    Returns:
        (D, I), each (nq, k): scores float32 and row ids int64, padded with -1 ids where
        fewer than k rows are eligible.
    """
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if isinstance(xb, VectorStore):
        sel = BitmapSelector(eligible) if eligible is not None else None
        params = faiss.SearchParameters(sel=sel.sel) if sel else None  # type: ignore[call-arg]
        D, I = xb.search(xq, k, params=params)
        return np.asarray(D), np.asarray(I)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    heap = faiss.ResultHeap(len(xq), k, keep_max=metric == "ip")
    for start in range(0, len(xb), EXACT_CHUNK_ROWS):
        stop = min(start + EXACT_CHUNK_ROWS, len(xb))
        rows = None if eligible is None else np.flatnonzero(eligible[start:stop]) + start
        if rows is not None and len(rows) == stop - start:
            rows = None  # the whole block is eligible: score the slice, no gather copy
        if rows is None:
            block = xb[start:stop]
        elif len(rows):
            block = xb[rows]
        else:
            continue
        block = np.ascontiguousarray(block, dtype=np.float32)
        D, I = faiss.knn(xq, block, min(k, len(block)), faiss_metric)
        ids = np.where(I < 0, -1, I + start if rows is None else rows[np.maximum(I, 0)])
        heap.add_result(D, ids)
    heap.finalize()
    return heap.D, heap.I


def merge_topk(
    D: Sequence[np.ndarray], I: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-source results of one query (largest scores first) into one top k.

    Args:
        D, I: per source, (m_i,) scores and ids; ids < 0 are padding and dropped.
        k: results kept.
    """
    ids = np.concatenate(I)
    scores = np.concatenate(D)
    keep = ids >= 0
    ids, scores = ids[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order].astype(np.float32), ids[order].astype(np.int64)


# --- Recall -------------------------------------------------------------------------------------


Found = Sequence[Sequence[int] | np.ndarray] | np.ndarray  # per query, ids best first


def pad_ids(found: Found, width: int | None = None) -> np.ndarray:
    """Ragged per-query id lists as one (nq, width) int64 array padded with -1."""
    if isinstance(found, np.ndarray) and found.ndim == 2:
        return found.astype(np.int64, copy=False)
    width = width if width is not None else max((len(f) for f in found), default=0)
    out = np.full((len(found), width), -1, dtype=np.int64)
    for i, f in enumerate(found):
        f = np.asarray(f, dtype=np.int64)[:width]
        out[i, : len(f)] = f
    return out


def recall_per_query(
    found: Found,
    truth: np.ndarray,
    *,
    tied: np.ndarray | None = None,
) -> np.ndarray:
    """Per query: the share of its exact top-k that its results contain.

    Args:
        found: per query, the ids returned, best first; (nq, m) padded with -1, or ragged.
            Padding (-1) and repeated ids never count.
        truth: (nq, k) exact top-k ids, padded with -1 where fewer than k rows exist; a
            query's denominator is its number of true ids.
        tied: optional (nq, m) bool: found entries whose exact score reaches the k-th exact
            score (an equally good row where exact search picked another among ties); they
            count as found.

    Returns:
        (nq,) float64; 1.0 for a query with no true ids.
    """
    truth = np.asarray(truth, dtype=np.int64)
    f = pad_ids(found)
    nq = len(truth)
    span = int(max(f.max(initial=0), truth.max(initial=0))) + 1
    rows = np.arange(nq, dtype=np.int64)[:, None]
    want = np.sort((truth + rows * span)[truth >= 0])  # rows are disjoint key ranges
    hit = np.zeros(f.shape, dtype=bool)
    if want.size and f.size:
        keys = f + rows * span
        pos = np.minimum(np.searchsorted(want, keys), want.size - 1)
        hit = want[pos] == keys
    hit &= f >= 0
    if tied is not None:
        hit |= np.asarray(tied, dtype=bool) & (f >= 0)
    # repeated ids count once: keep the first occurrence of each (row, id) key
    keys = np.where(f >= 0, f + rows * span, -1 - np.arange(f.size).reshape(f.shape))
    _, first = np.unique(keys.ravel(), return_index=True)
    once = np.zeros(f.size, dtype=bool)
    once[first] = True
    hits = (hit & once.reshape(f.shape)).sum(axis=1)
    denom = (truth >= 0).sum(axis=1)
    return np.where(denom > 0, np.minimum(hits, denom) / np.maximum(denom, 1), 1.0)


def recall_at_k(found: Found, truth: np.ndarray) -> float:
    """Mean recall over queries (:func:`recall_per_query`): found (nq, m) or ragged, truth (nq, k)."""
    if len(truth) == 0:
        return 1.0
    return float(recall_per_query(found, truth).mean())


RECALL_CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def recall_interval(
    per_query: np.ndarray, *, confidence: float = RECALL_CONFIDENCE, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of mean recall over queries.

    Per-query recall is bounded and skewed towards 1 (most queries find everything, a few find
    much less), where a normal interval can pass 1; resampling the queries keeps the interval
    inside what the queries can give.

    Args:
        per_query: (nq,) recalls from :func:`recall_per_query`.
        confidence: coverage of the interval.
        seed: resampling seed (the same input gives the same interval).

    Returns:
        (low, high): the interval of the mean; (1.0, 1.0) for no queries.
    """
    r = np.asarray(per_query, dtype=np.float64)
    if r.size == 0:
        return 1.0, 1.0
    rng = np.random.default_rng(seed)
    means = np.empty(BOOTSTRAP_RESAMPLES)
    for start in range(0, BOOTSTRAP_RESAMPLES, 256):  # bounded memory for large nq
        stop = min(BOOTSTRAP_RESAMPLES, start + 256)
        means[start:stop] = r[rng.integers(0, r.size, (stop - start, r.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
