"""Choosing the FAISS index: factory string, nlist, PQ size, re-ranking stage, memory.

The rules, from corpus size n, dimension d and an optional RAM budget; an explicit factory
string always wins (over budget: built anyway, with a warning). Measured on the calibrated
synthetic set (``benchmarks/datasets.py``: 384-d, neighbour statistics of all-MiniLM-L6-v2 on
real product titles), 200,000 vectors, its own 500 queries, recall@100 against exact search,
one thread per query; commands and full tables in docs/index-parameters.md.

- n < 1,000: ``IVF{nlist},Flat``. PQ would save a few hundred KB and cost recall.
- nlist ~ 4 * sqrt(n), a power of two, capped so every list gets >= 39 training points
  (FAISS's k-means warns below that). Build-time tuning then picks nprobe for the target.
- Codes: 4-bit fast-scan PQ with d/2 sub-quantizers (``PQ{d/2}x4fs``: 2 dimensions per
  4-bit code, d/4 bytes, 96 B at 384-d). Re-ranking only recovers what the PQ candidates
  hold: fewer bytes need more lists and deeper re-ranking for 0.95, or never get there; 8-bit
  PQ of the same bytes (``PQ{m}np``) scans slower (no SIMD lookup tables) and trains longer
  (docs/index-parameters.md, section 3.2).
- Re-ranking, the best that fits the budget (estimate = PQ codes + re-ranking codes + 8-byte
  ids + coarse centroids, ``estimate_memory_bytes``, within 2% of the serialised index):
  ``Refine(SQfp16)`` (+2d B/vector: ``RFlat``'s recall and CPU per query at half its memory,
  and the one copy of the vectors the server keeps for exact plans and shadow recall; section
  3.9), ``Refine(SQ8)`` (+d: a little best recall, nothing at 0.95), then
  ``PQ{d/4}x4fs,Refine(SQ8)``, then no re-ranking with d/2, d/4, d/8 sub-quantizers. PQ alone
  caps recall@100 well below 0.95: the gate refuses those at a 0.95 target (section 3.2).
  ``RFlat`` (+4d, float32 scores) is built only when asked for.
- OPQ: never chosen. Without re-ranking its rotation buys less recall than more bytes of plain
  PQ, for a far longer training; with re-ranking PQ error matters even less (section 3.4).
- default nprobe / k_factor: measured at build time (``indexer.tuning``): the cheapest
  operating point reaching the target recall. ``default_nprobe`` is only the fallback.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MIN_POINTS_PER_LIST = 39  # FAISS k-means warns below 39 training points per centroid
# Coarse k-means training points per list: more give better lists at proportionally more
# k-means time; 64 keeps a 1M build within 3 minutes, and a slightly higher nprobe makes up the
# recall (docs/index-parameters.md, section 3.6).
TRAIN_POINTS_PER_LIST = 64
DEFAULT_K_FACTOR = 4
DEFAULT_MIN_RERANK = 64
MIN_PQ_TRAIN = 65_536
SMALL_CORPUS = 1_000  # below this, IVF-Flat: PQ would save a few KB and cost recall
ID_BYTES = 8  # IVF lists store an int64 id per vector
# Re-ranking stages, most exact first: factory suffix -> bytes per vector per dimension.
REFINES: tuple[tuple[str, float], ...] = (
    ("Refine(SQfp16)", 2.0),
    ("Refine(SQ8)", 1.0),
)
_CODE_BYTES_PER_DIM = {"Flat": 4.0, "SQfp16": 2.0, "SQ8": 1.0, "SQ6": 0.75, "SQ4": 0.5}


@dataclass(frozen=True)
class IndexParams:
    """What to build and how to search it by default."""

    index_factory: str
    nlist: int
    nprobe: int
    k_factor: int
    train_size: int
    memory_bytes: int | None = None  # estimate of the index's RAM (None: unknown components)

    def __post_init__(self) -> None:
        if self.nlist < 1:
            raise ValueError(f"nlist must be >= 1; got {self.nlist}")
        if not 1 <= self.nprobe <= self.nlist:
            raise ValueError(f"nprobe must be in [1, nlist={self.nlist}]; got {self.nprobe}")
        if self.k_factor < 1:
            raise ValueError(f"k_factor must be >= 1; got {self.k_factor}")
        if self.train_size < 1:
            raise ValueError(f"train_size must be >= 1; got {self.train_size}")


def _pow2_floor(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(x, 1.0))))


def choose_nlist(n: int) -> int:
    """Inverted lists for n vectors: ~4*sqrt(n), power of two, >= 39 training points each."""
    target = _pow2_floor(4 * math.sqrt(n))
    cap = max(1, n // MIN_POINTS_PER_LIST)
    return max(1, min(target, _pow2_floor(cap)))


def choose_pq_m(d: int, dims_per_code: int = 2) -> int:
    """Sub-quantizers for 4-bit fast-scan PQ: about d / dims_per_code, an even divisor of d."""
    m = max(2, d // dims_per_code)
    while m > 2 and (d % m or m % 2):
        m -= 1
    return m


def nlist_of(factory: str) -> int:
    """The IVF list count in a factory string (``IVF1024,...`` or ``IVF1024_HNSW32,...``)."""
    match = re.search(r"IVF(\d+)", factory)
    if not match:
        raise ValueError(
            f"index factory {factory!r} is not an IVF index: adindex serves IVF indexes"
        )
    return int(match.group(1))


def default_nprobe(nlist: int) -> int:
    return min(nlist, max(8, nlist // 4))


def _refine_split(factory: str) -> tuple[str, str | None]:
    """(base, refine codes) of a factory: ``...,RFlat`` -> Flat, ``...,Refine(SQ8)`` -> SQ8."""
    if factory.endswith(",RFlat"):
        return factory[: -len(",RFlat")], "Flat"
    match = re.fullmatch(r"(.+),Refine\((\w+)\)", factory)
    if match:
        return match.group(1), match.group(2)
    return factory, None


def _pq_bytes(component: str, n: int, d: int, nlist: int) -> int | None:
    match = re.fullmatch(r"PQ(\d+)(?:x(\d+))?(fs|np)?", component)
    if not match:
        return None
    m, bits = int(match.group(1)), int(match.group(2) or 8)
    codebooks = (1 << bits) * d * 4
    code_bytes = math.ceil(m * bits / 8)
    if match.group(3) == "fs":  # fast-scan packs codes in blocks of 32 vectors per list
        return codebooks + n * code_bytes + nlist * 16 * code_bytes
    return codebooks + n * code_bytes


def estimate_memory_bytes(factory: str, n: int, d: int) -> int | None:
    """RAM an index of n d-dimensional vectors takes: codes + refine + ids + coarse centroids.

    Understands ``[OPQ{m}[_{d'}],]IVF{nlist}[_HNSW{M}],{Flat|SQ8|SQfp16|PQ{m}[x{b}][fs|np]}``
    with an optional ``RFlat`` / ``Refine({Flat|SQfp16|SQ8})``; None for anything else.
    (The artifact's embeddings.npy, 4*d bytes per vector, is on disk and memory-mapped.)
    """
    base, refine = _refine_split(factory)
    parts = base.split(",")
    total, d_in = 0, d
    opq = re.fullmatch(r"OPQ(\d+)(?:_(\d+))?", parts[0])
    if opq:
        d_in = int(opq.group(2) or d)
        total += d * d_in * 4
        parts = parts[1:]
    ivf = re.fullmatch(r"IVF(\d+)(?:_HNSW(\d+))?", parts[0]) if parts else None
    if ivf is None or len(parts) != 2:
        return None
    nlist = int(ivf.group(1))
    total += nlist * d_in * 4 + n * ID_BYTES
    if ivf.group(2):  # HNSW over the centroids: 2*M links on level 0, a few more above
        total += nlist * int(ivf.group(2)) * 2 * 4 * 9 // 8
    codes = parts[1]
    if codes in _CODE_BYTES_PER_DIM:
        total += math.ceil(n * d_in * _CODE_BYTES_PER_DIM[codes])
    else:
        pq = _pq_bytes(codes, n, d_in, nlist)
        if pq is None:
            return None
        total += pq
    if refine is not None:
        if refine not in _CODE_BYTES_PER_DIM:
            return None
        total += math.ceil(n * d * _CODE_BYTES_PER_DIM[refine])
    return total


def candidate_factories(n: int, d: int) -> list[str]:
    """Factory strings for n vectors of dimension d, best recall/latency first, smallest last."""
    nlist = choose_nlist(n)
    if n < SMALL_CORPUS:
        return [f"IVF{nlist},Flat"]
    pq = f"IVF{nlist},PQ{choose_pq_m(d)}x4fs"
    out = [f"{pq},{refine}" for refine, _ in REFINES]
    # Under the SQ8 stage: fewer PQ bytes before giving up re-ranking (still reaches 0.95).
    out.append(f"IVF{nlist},PQ{choose_pq_m(d, 4)}x4fs,Refine(SQ8)")
    # Without re-ranking PQ alone sets the recall (recall@100 ~0.8 at d/4 bytes, 384-d).
    for dims_per_code in (2, 4, 8):
        out.append(f"IVF{nlist},PQ{choose_pq_m(d, dims_per_code)}x4fs")
    return list(dict.fromkeys(out))


def choose_factory(n: int, d: int, max_memory_bytes: int | None = None) -> str:
    """The first candidate (``candidate_factories``) whose estimated RAM fits the budget.

    Raises:
        ValueError: not even the smallest candidate fits.
    """
    candidates = candidate_factories(n, d)
    if max_memory_bytes is None:
        return candidates[0]
    for factory in candidates:
        need = estimate_memory_bytes(factory, n, d)
        if need is not None and need <= max_memory_bytes:
            return factory
    smallest = candidates[-1]
    need_mb = (estimate_memory_bytes(smallest, n, d) or 0) / 2**20
    raise ValueError(
        f"no index of {n} x {d} vectors fits {max_memory_bytes / 2**20:.1f} MB: the smallest "
        f"candidate, {smallest!r}, needs about {need_mb:.1f} MB"
    )


def choose_params(
    n: int,
    d: int,
    *,
    index_factory: str | None = None,
    nprobe: int | None = None,
    k_factor: int | None = None,
    max_memory_mb: float | None = None,
) -> IndexParams:
    """Index parameters for n vectors of dimension d; explicit arguments win.

    Args:
        n: number of vectors to index (>= 1).
        d: dimension.
        index_factory: a FAISS factory string; must contain ``IVF<nlist>``. Wins over the
            memory budget (a factory over budget is built, with a warning).
        nprobe: default lists to probe per query (build-time tuning chooses it otherwise).
        k_factor: re-ranking depth (candidates re-scored = k * k_factor).
        max_memory_mb: RAM budget for the index (codes, re-ranking stage, ids, centroids).

    Raises:
        ValueError: bad explicit values, or nothing fits the budget.
    """
    if n < 1:
        raise ValueError(f"cannot index {n} vectors")
    if max_memory_mb is not None and max_memory_mb <= 0:
        raise ValueError(f"max_memory_mb must be > 0; got {max_memory_mb}")
    budget = None if max_memory_mb is None else int(max_memory_mb * 2**20)
    if index_factory is None:
        index_factory = choose_factory(n, d, budget)
    nlist = nlist_of(index_factory)
    if nlist > n:
        raise ValueError(f"index factory {index_factory!r} has {nlist} lists for only {n} vectors")
    memory = estimate_memory_bytes(index_factory, n, d)
    if budget is not None and memory is not None and memory > budget:
        logger.warning(
            "%s needs about %.1f MB, over the %.1f MB budget (explicit factory wins)",
            index_factory,
            memory / 2**20,
            max_memory_mb,
        )
    return IndexParams(
        index_factory=index_factory,
        nlist=nlist,
        nprobe=nprobe if nprobe is not None else default_nprobe(nlist),
        k_factor=k_factor if k_factor is not None else DEFAULT_K_FACTOR,
        # PQ codebooks keep improving up to ~64k points, whatever nlist.
        train_size=min(n, max(nlist * TRAIN_POINTS_PER_LIST, MIN_PQ_TRAIN)),
        memory_bytes=memory,
    )
