"""Build-time evaluation: recall@k against exact search, the operating curve, the chosen point.

Every build measures its index before publishing it (``indexer.build``):

1. **Queries.** A query file (``--queries``) or a sample of the catalog: ``indexer.queries``.
   At most ``max_queries`` (500) are used.
2. **Ground truth.** Exact inner product (``IndexFlatIP``) over all n vectors. Paused ads are
   included: eligibility changes after publishing (admin pauses), the index does not, and the
   searcher's ``IDSelectorBitmap`` removes ineligible ids inside the same IVF scan.
3. **Sweep.** nprobe over powers of two and 1.5x powers of two up to nlist, and for
   re-ranking indexes the depth k_factor over ``k_factors`` (1, 2, 4, 8, 16, 32), with the
   searcher's own rule: effective k_factor = max(k_factor, min_rerank / k). An explicit
   k_factor goes first, else 4; then ``row_order``: the likeliest levers first (deeper rows
   first when the first row fell short of the target). A row runs until recall plateaus
   (gain < ``PLATEAU_GAIN`` per doubling of nprobe), reaches 0.999, or reaches the target
   (its cheapest such point). Later rows also stop once slower than the cheapest
   target-reaching point (x ``SLOWER``) or too far below the target to reach it. The whole
   sweep stops when its time budget is spent (after at least one point). Latency: up to
   200 queries, one ``search`` call each on one OpenMP thread, as the server runs (p50, p99
   ms); recall: all queries (the rest batched), with a bootstrap interval over queries
   widened by the queries' calibration margin.
   Recall is measured at k = ``recall_k`` only: the defaults are tuned for that k (smaller
   requests re-rank at least ``min_rerank`` candidates).
4. **Choice.** Points no other point beats on both recall and p50 form the Pareto frontier
   (FAISS ``OperatingPoints``). The chosen point is the one with the lowest p50 whose
   recall_low (the interval's lower end) reaches the target, among points matching an
   explicit ``--nprobe`` / ``--k-factor``.
5. **Short of the target**, ``indexer.probe.rerank_probes`` measures what deeper re-ranking
   would give (recall only) and the shallowest depth that gets there is measured as real
   points (``_rescue``); the refusal's advice says what was measured and what was not.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import faiss
import numpy as np
from tqdm import tqdm

from indexer.ann import (
    RECALL_CONFIDENCE,
    effective_k_factor,
    exact_search,
    has_refine,
    omp_threads,
    recall_interval,
    recall_per_query,
    search_params,
)
from indexer.manifest import OperatingPoint, Quality, RerankProbe
from indexer.params import DEFAULT_K_FACTOR, DEFAULT_MIN_RERANK
from indexer.probe import rerank_probes
from indexer.queries import QuerySet

logger = logging.getLogger(__name__)

PLATEAU_GAIN = 0.002  # recall gained by doubling nprobe below which a row stops
SLOWER = 1.2  # a row stops once its p50 exceeds the cheapest target-reaching p50 by this factor
MAX_RECALL = 0.999  # nothing left to gain above this
WARMUP_QUERIES = 10
TIMED_QUERIES = 200  # single-query calls timed per point (p99 = the 2nd-3rd slowest)
# A point's timing stops after this long (with at least MIN_TIMED_QUERIES calls): at 1M vectors
# with every list probed one call takes tens of ms, and 200 of them would spend the budget that
# deeper re-ranking rows need. Recall still counts every query.
POINT_TIMING_S = 2.0
MIN_TIMED_QUERIES = 30
WALK_DOWN_STEPS = 3  # smaller nprobes tried below a point the probe rescued


@dataclass(frozen=True)
class TuningConfig:
    """What recall to reach, and how much evaluation a build may spend."""

    target_recall: float = 0.95
    recall_k: int = 100
    max_queries: int = 500
    k_factors: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    min_rerank: int = DEFAULT_MIN_RERANK
    nprobe: int | None = None  # explicit --nprobe: the chosen point must use it
    k_factor: int | None = None  # explicit --k-factor: likewise
    time_budget_s: float = 40.0  # for the sweep (ground truth comes on top)
    seed: int = 1234

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in [0, 1]; got {self.target_recall}")
        if self.recall_k < 1:
            raise ValueError(f"recall_k must be >= 1; got {self.recall_k}")
        if self.max_queries < 1:
            raise ValueError(f"max_queries must be >= 1; got {self.max_queries}")
        if not self.k_factors or min(self.k_factors) < 1:
            raise ValueError(f"k_factors must be >= 1; got {self.k_factors}")
        if self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be > 0; got {self.time_budget_s}")


@dataclass(frozen=True)
class Tuning:
    """The measured curve of one index and the point chosen from it."""

    target_recall: float
    recall_k: int
    queries: QuerySet
    points: tuple[OperatingPoint, ...]
    chosen: OperatingPoint | None  # None: no allowed point reaches the target
    truncated: bool  # the sweep ran out of time budget
    seconds: float
    probes: tuple[RerankProbe, ...] = ()  # deeper re-ranking measured after a failed sweep

    @property
    def best(self) -> OperatingPoint:
        """The highest recall measured (the cheapest such point on ties)."""
        return max(self.points, key=lambda p: (p.recall, -p.p50_ms))

    @property
    def reached(self) -> bool:
        return self.chosen is not None

    def to_quality(self, *, max_memory_mb: float | None = None) -> Quality:
        """The manifest's record of this curve, with the chosen point (or the published one)."""
        return Quality(
            target_recall=self.target_recall,
            recall_k=self.recall_k,
            queries=self.queries.info(),
            ground_truth="exact inner product over all indexed vectors, paused included",
            latency=(
                f"single query, 1 OpenMP thread, {TIMED_QUERIES} timed calls per point (fewer, "
                f"at least {MIN_TIMED_QUERIES}, where they take over {POINT_TIMING_S:.0f} s)"
            ),
            curve=self.points,
            chosen=self.chosen or self.best,
            best=self.best,
            reached=self.reached,
            truncated=self.truncated,
            seconds=round(self.seconds, 2),
            below_target=not self.reached,
            max_memory_mb=max_memory_mb,
            interval=interval_method(self.queries.margin),
            probes=self.probes,
        )


# --- Measuring ----------------------------------------------------------------------------------


def measure(
    index: faiss.Index,
    xq: np.ndarray,
    truth: np.ndarray,
    *,
    nprobe: int,
    k_factor: int,
    min_rerank: int,
    margin: float = 0.0,
) -> OperatingPoint:
    """Recall over all queries with its interval (``recall_interval``, widened by ``margin``:
    the queries' known calibration error); latency of up to ``TIMED_QUERIES``, one call each."""
    nq, k = truth.shape
    params = search_params(index, nprobe, k_factor, k, min_rerank=min_rerank)
    I = np.empty((nq, k), dtype=np.int64)
    ms = np.empty(min(nq, TIMED_QUERIES))
    timed = 0
    with omp_threads(1):  # a search's CPU cost: a busy server gives each search one thread
        for i in range(min(WARMUP_QUERIES, nq)):
            index.search(xq[i : i + 1], k, params=params)
        start = time.perf_counter()
        while timed < len(ms):
            t0 = time.perf_counter()
            _, I[timed : timed + 1] = index.search(xq[timed : timed + 1], k, params=params)
            ms[timed] = (time.perf_counter() - t0) * 1e3
            timed += 1
            if timed >= MIN_TIMED_QUERIES and time.perf_counter() - start > POINT_TIMING_S:
                break
    if timed < nq:  # the rest only count for recall: one batched call, all threads
        _, I[timed:] = index.search(xq[timed:], k, params=params)
    per_query = recall_per_query(I, truth)
    low, high = recall_interval(per_query)
    return OperatingPoint(
        nprobe=nprobe,
        k_factor=k_factor,
        recall=round(float(per_query.mean()), 4),
        p50_ms=round(float(np.percentile(ms[:timed], 50)), 4),
        p99_ms=round(float(np.percentile(ms[:timed], 99)), 4),
        recall_low=round(max(0.0, low - margin), 4),
        recall_high=round(min(1.0, high + margin), 4),
    )


def gated(p: OperatingPoint) -> float:
    """The recall the gate compares with the target: the interval's lower end when known."""
    return p.recall_low if p.recall_low is not None else p.recall


def interval_method(margin: float) -> str:
    """How ``measure`` computes recall_low / recall_high (recorded in the manifest)."""
    out = (
        f"{RECALL_CONFIDENCE:.0%} percentile bootstrap over queries of mean recall "
        "(indexer.ann.recall_interval)"
    )
    if margin:
        out += (
            f", widened by {margin} on each side: the default queries' calibration error on "
            "real queries (docs/index-parameters.md)"
        )
    return out + "; the gate requires recall_low >= target"


def nprobe_grid(nlist: int, fixed: int | None = None) -> list[int]:
    """Powers of two and 1.5x powers of two up to nlist, plus nlist and an explicit nprobe.

    Half steps because latency grows about linearly with nprobe: when the target falls between
    two powers of two, the half step reaches it well below the latency of the upper one
    (docs/index-parameters.md, section 3.5).
    """
    top = int(math.log2(nlist)) + 1
    grid = {1 << i for i in range(top)} | {3 << i for i in range(top)} | {nlist}
    grid = {g for g in grid if g <= nlist}
    if fixed is not None:
        grid.add(fixed)
    return sorted(grid)


def k_factor_grid(refine: bool, config: TuningConfig, k: int) -> list[int]:
    """k_factors to sweep, without ones the min_rerank floor makes identical to a smaller one."""
    if not refine:
        return [config.k_factor or 1]
    wanted = sorted(set(config.k_factors) | ({config.k_factor} if config.k_factor else set()))
    out: list[int] = []
    seen: set[float] = set()
    for kf in wanted:
        eff = effective_k_factor(kf, config.min_rerank, k)
        if eff not in seen or kf == config.k_factor:
            out.append(kf)
            seen.add(eff)
    return out


# --- Sweeping and choosing ----------------------------------------------------------------------


def sweep(
    index: faiss.Index,
    xq: np.ndarray,
    truth: np.ndarray,
    nlist: int,
    config: TuningConfig,
    *,
    margin: float = 0.0,
) -> tuple[list[OperatingPoint], bool]:
    """Measure the grid row by row (``row_order``), nprobe ascending in each row.

    The first row finds the target region (or, when it never gets there, its best recall,
    and deeper re-ranking rows come next); later rows stop once they are slower than the
    cheapest point reaching the target, or can no longer reach it (``_row_done``). ``margin``
    widens each point's recall interval (``measure``).

    Returns:
        (points sorted by k_factor then nprobe, truncated): truncated when the time budget
        stopped the sweep.
    """
    deadline = time.perf_counter() + config.time_budget_s
    grid_k = k_factor_grid(has_refine(index), config, truth.shape[1])
    k_factors = row_order(grid_k, explicit=config.k_factor)
    grid = nprobe_grid(nlist, config.nprobe)
    points: list[OperatingPoint] = []
    truncated = False
    with tqdm(total=len(k_factors) * len(grid), desc="Recall sweep", unit="pt") as bar:
        while k_factors:
            kf = k_factors.pop(0)
            row: list[OperatingPoint] = []
            for nprobe in grid:
                if (points or row) and time.perf_counter() > deadline:
                    truncated = True  # (the first point is always measured: a curve to report)
                    break
                p = measure(
                    index,
                    xq,
                    truth,
                    nprobe=nprobe,
                    k_factor=kf,
                    min_rerank=config.min_rerank,
                    margin=margin,
                )
                logger.debug("nprobe %d k_factor %d: %s", nprobe, kf, p)
                row.append(p)
                bar.update()
                if _row_done(row, points, config):
                    break
            if not points and not any(gated(p) >= config.target_recall for p in row):
                # The first row fell short: deeper re-ranking is the likeliest lever.
                k_factors = row_order(grid_k, explicit=kf, first_reached=False)[1:]
            points += row
            bar.update(len(grid) - len(row))
            if truncated:
                logger.warning("Evaluation time budget spent after %d points", len(points))
                break
    return sorted(points, key=lambda p: (p.k_factor, p.nprobe)), truncated


def row_order(
    k_factors: Sequence[int], explicit: int | None = None, *, first_reached: bool = True
) -> list[int]:
    """An explicit depth first (only its points can be chosen: the time budget must not run
    out before it is measured), else the default depth (it usually holds the cheapest point
    reaching the target). Then, while the target is within reach of the first row, the others
    up to twice the default deepest first (later rows only have to beat what earlier rows
    found), and the deep ones (16, 32: k * 1,600+ candidates cost several times more per
    search) last. When the first row fell short (``first_reached`` False), re-ranking depth is
    what it lacked (the usual case once every list is probed): deeper rows first, shallowest
    deep one first, then the shallower ones (for the curve)."""
    if explicit is not None and explicit in k_factors:
        first = explicit
    else:
        first = DEFAULT_K_FACTOR if DEFAULT_K_FACTOR in k_factors else max(k_factors)
    rest = [kf for kf in k_factors if kf != first]
    deep = sorted(kf for kf in rest if kf > max(first, 2 * DEFAULT_K_FACTOR))
    deeper = sorted(kf for kf in rest if kf > first)
    if first_reached:
        return [first, *sorted((kf for kf in rest if kf not in deep), reverse=True), *deep]
    return [first, *deeper, *sorted((kf for kf in rest if kf < first), reverse=True)]


def _row_done(
    row: Sequence[OperatingPoint], earlier: Sequence[OperatingPoint], config: TuningConfig
) -> bool:
    """Whether probing more lists at this k_factor would only cost time.

    Yes when recall has plateaued or is ~1, when the row reached the target (more lists cost
    more, and at 1M vectors far more than linearly), and, after the first row, when the
    row is already slower than the cheapest point reaching the target, or its gains are too
    small to ever reach it.
    """
    last = row[-1]
    if config.nprobe is not None and last.nprobe < config.nprobe:
        return False  # an explicit nprobe is always measured
    gain = _doubling_gain(row)
    if gain < PLATEAU_GAIN or last.recall >= MAX_RECALL or gated(last) >= config.target_recall:
        return True
    if not earlier:
        return False  # the first row runs to its plateau: it shows the best recall
    reached = [p.p50_ms for p in [*earlier, *row] if gated(p) >= config.target_recall]
    too_slow = bool(reached) and last.p50_ms > SLOWER * min(reached)
    # Once gains shrink, each doubling of nprobe roughly halves them: the rest of the row adds
    # about one more gain. (Before that, at few lists, gains grow: nothing to conclude.)
    before = _doubling_gain(row[:-1])
    shrinking = len(row) > 2 and gain < before
    hopeless = shrinking and last.recall + 2 * gain < config.target_recall
    return too_slow or hopeless


def _doubling_gain(row: Sequence[OperatingPoint]) -> float:
    """Recall gained by the row's last point over the point at half (or less) its nprobe."""
    if not row:
        return 1.0
    last = row[-1]
    half = [p for p in row[:-1] if 2 * p.nprobe <= last.nprobe]
    return last.recall - half[-1].recall if half else 1.0


def pareto_frontier(points: Iterable[OperatingPoint]) -> list[OperatingPoint]:
    """The points with frontier=True when no other point has >= recall at <= p50 (one strict)."""
    pts = list(points)
    out = []
    for p in pts:
        dominated = any(
            q.recall >= p.recall
            and q.p50_ms <= p.p50_ms
            and (q.recall > p.recall or q.p50_ms < p.p50_ms)
            for q in pts
        )
        out.append(replace(p, frontier=not dominated))
    return out


def choose(
    points: Sequence[OperatingPoint],
    target: float,
    *,
    nprobe: int | None = None,
    k_factor: int | None = None,
) -> OperatingPoint | None:
    """The lowest-p50 point whose recall (its interval's lower end when known, ``gated``)
    reaches the target, among those matching explicit values."""
    ok = [
        p
        for p in points
        if gated(p) >= target
        and (nprobe is None or p.nprobe == nprobe)
        and (k_factor is None or p.k_factor == k_factor)
    ]
    return min(ok, key=lambda p: (p.p50_ms, -p.recall)) if ok else None


def tune(
    index: faiss.Index, xb: np.ndarray, queries: QuerySet, nlist: int, config: TuningConfig
) -> Tuning:
    """Measure an index's recall/latency curve and choose its default operating point.

    When the sweep finds no point reaching the target, a probe measures the recall deeper
    re-ranking would give at the explicit or else the largest nprobe measured
    (``rerank_probes``); the shallowest depth
    it shows reaching the target is then measured as a real, timed point, then at fewer lists
    while it still reaches it (``_rescue``), so a point that exists is found even when the
    sweep's budget ran out first.

    Args:
        index: trained and filled IVF index (possibly with a re-ranking stage), inner product.
        xb: the indexed vectors, shape (n, d), float32; row i is FAISS id i.
        queries: held-out queries (``catalog_queries`` or ``file_queries``).
        nlist: inverted lists of the index (the largest nprobe).
        config: target, k and the sweep's bounds.

    Returns:
        Tuning with every measured point (frontier flagged) and the chosen one (or None).
    """
    t0 = time.perf_counter()
    k = min(config.recall_k, len(xb))
    _, truth = exact_search(xb, queries.xq, k)
    logger.info("Exact top-%d of %d queries: %.1f s", k, len(truth), time.perf_counter() - t0)
    margin = queries.margin
    points, truncated = sweep(index, queries.xq, truth, nlist, config, margin=margin)
    chosen = choose(points, config.target_recall, nprobe=config.nprobe, k_factor=config.k_factor)
    probes: list[RerankProbe] = []
    # The probe reads one re-ranking stage's candidates (not a sharded index's merged ones).
    if chosen is None and isinstance(faiss.downcast_index(index), faiss.IndexRefine):
        # An explicit nprobe, else the most lists any row measured: rows stop where more
        # lists stopped paying off.
        widest = config.nprobe or max(p.nprobe for p in points)
        probes = rerank_probes(index, xb, queries.xq, truth, widest)
        points += _rescue(index, queries.xq, truth, probes, points, nlist, config, margin)
    points = pareto_frontier(points)
    chosen = choose(points, config.target_recall, nprobe=config.nprobe, k_factor=config.k_factor)
    return Tuning(
        target_recall=config.target_recall,
        recall_k=k,
        queries=queries,
        points=tuple(sorted(points, key=lambda p: (p.k_factor, p.nprobe))),
        chosen=chosen,
        truncated=truncated,
        seconds=time.perf_counter() - t0,
        probes=tuple(probes),
    )


def _rescue(
    index: faiss.Index,
    xq: np.ndarray,
    truth: np.ndarray,
    probes: Sequence[RerankProbe],
    points: Sequence[OperatingPoint],
    nlist: int,
    config: TuningConfig,
    margin: float,
) -> list[OperatingPoint]:
    """Measure (timed) the shallowest probed depth whose recall reaches the target and that
    was not measured at the probe's nprobe already, there and then at fewer lists while it
    still reaches it."""
    if config.k_factor is not None:
        return []  # only the explicit depth may be published: the advice names the probe
    # The probe has no interval: ask its mean for the target plus the interval's usual width.
    wanted = config.target_recall + margin
    measured = {(p.nprobe, p.k_factor) for p in points}
    # A depth already measured at the probe's nprobe failed the gate (the sweep found no
    # point): its probed mean passing is no reason to stop before the next, deeper one.
    reach = [p for p in probes if p.recall >= wanted and (p.nprobe, p.k_factor) not in measured]
    if not reach:
        return []
    kf, nprobe = reach[0].k_factor, reach[0].nprobe
    grid = [g for g in nprobe_grid(nlist, config.nprobe) if g <= nprobe]
    if config.nprobe is not None:
        grid = [config.nprobe] if config.nprobe <= nprobe else []
    out: list[OperatingPoint] = []
    for g in reversed(grid[-(WALK_DOWN_STEPS + 1) :]):
        p = measure(
            index, xq, truth, nprobe=g, k_factor=kf, min_rerank=config.min_rerank, margin=margin
        )
        logger.info("Deeper re-ranking, nprobe %d k_factor %d: %s", g, kf, p)
        out.append(p)
        if gated(p) < config.target_recall:
            break
    return out


def allowed_best(tuning: Tuning, config: TuningConfig) -> OperatingPoint:
    """The highest-recall point matching explicit nprobe / k_factor (what is published below
    target with ``--allow-below-target``); the overall best when none matches."""
    ok = [
        p
        for p in tuning.points
        if (config.nprobe is None or p.nprobe == config.nprobe)
        and (config.k_factor is None or p.k_factor == config.k_factor)
    ]
    return max(ok or tuning.points, key=lambda p: (p.recall, -p.p50_ms))
