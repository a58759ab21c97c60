"""The recall controller's policy: keep a version's default operating point at its target recall.

The build picks the default (nprobe, k_factor) on held-out queries; live traffic can be harder
(or easier). Shadow recall (``retrieval.shadow``) measures sampled live calls against exact
search; this policy turns those measurements into moves of the default point. It is pure: no
FAISS, no I/O, no clock, fed ``(point, recall)`` samples and asked for a move.

What it is fed, per sampled live call that searched at the default point without a filter:
recall@k (k = the manifest's ``recall_k``) of the served answer, and of the same query
searched again at a few neighbouring points (:meth:`PointPolicy.probes`: one and two rungs
down and up the nprobe ladder, one step of k_factor each way when there is a re-ranking
stage), with the measured cost of each probe in ms per query. Every sample is tagged with
the point it was measured at, so a sample queued before a move never counts for the new point.

Rules (statistics since the current point became current, decayed over ``window`` samples;
``z``-sided normal bounds of the mean, the standard deviation floored at ``sd_floor``). The
controller aims at target + ``headroom``:

- **Minimum sample**: nothing moves before ``min_samples`` samples at the current point.
- **Raise** when the upper bound at the current point is below the aim, or when after
  ``hold_samples`` its lower bound has still not reached the target: to the cheapest probed
  point above it whose mean reaches the aim, else to the probed point with the best mean (if
  better than the current one), else (probes off) one rung up. Only points within the bounds
  (``max_nprobe``, ``max_k_factor``, ``max_search_ms``) qualify. *Cheapest*: a point that
  searches more than another candidate in both settings never wins; between the others
  (nprobe up against k_factor up) the measured ms decides.
- **Lower** only after ``settle_samples`` at the current point with its lower bound at or above
  the aim, to the cheapest probed point below it whose own lower bound, over at least
  ``settle_samples`` samples, is at or above the aim too (measured to hold, not predicted).
  That bound counts at most ``hold_samples`` samples: a long window would narrow it enough to
  lower to a point that, current again, could not show the target within ``hold_samples``
  fresh samples and would be raised from (flapping). Back to a point it was raised from only
  after ``window`` samples at the current point.
- **Settled** (shadow back at its steady rate) once ``settle_samples`` samples at the current
  point put its lower bound at or above the target, or when no allowed point measures better.
  Until then, and again whenever later samples put it in doubt, shadow samples more. A move
  resets the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

# nprobe ladder: powers of two and 1.5x powers of two (the build's sweep uses the same steps)
_NPROBE_LADDER_MAX = 1 << 20


class SearchPoint(NamedTuple):
    """A default search setting: lists probed, re-ranking depth (immutable: swapped whole)."""

    nprobe: int
    k_factor: int

    def __str__(self) -> str:
        return f"nprobe {self.nprobe}, k_factor {self.k_factor}"


@dataclass(frozen=True)
class ControllerConfig:
    """Bounds and hysteresis of the recall controller (one per server, applied per version)."""

    enabled: bool = True  # off: serve each version's build point, never move it
    max_nprobe: int = 0  # largest nprobe it may choose; 0 = nlist
    # Smallest nprobe it may choose (the server raises it to the lists holding recall_k ads on
    # average: below that most searches come up short and widen, costing more, not less).
    min_nprobe: int = 1
    max_k_factor: int = 16
    # Largest cost of a point it may move to, in ms per query as measured by the probes (one
    # thread, on the shadow thread); 0 = no budget.
    max_search_ms: float = 10.0
    min_samples: int = 24  # samples at the current point before any move
    settle_samples: int = 96  # ... before lowering, and before shadow samples at its steady rate
    hold_samples: int = 128  # a point not shown to hold the target after this many is raised
    headroom: float = 0.005  # a raise aims at target + headroom; a lower needs it held
    z: float = 1.645  # one-sided 95% normal bound
    sd_floor: float = 0.02  # per-query recall spread assumed at least (all-1.0 samples)
    window: int = 400  # samples per point weighted by exponential decay (drifting traffic)
    probe: bool = True  # also search sampled queries at neighbouring points

    def __post_init__(self) -> None:
        if self.max_nprobe < 0 or self.min_nprobe < 1:
            raise ValueError(
                f"max_nprobe must be >= 0 and min_nprobe >= 1; got {self.max_nprobe}, {self.min_nprobe}"
            )
        if self.max_k_factor < 1:
            raise ValueError(f"max_k_factor must be >= 1; got {self.max_k_factor}")
        if self.max_search_ms < 0:
            raise ValueError(f"max_search_ms must be >= 0; got {self.max_search_ms}")
        if not 1 <= self.min_samples <= self.settle_samples:
            raise ValueError(
                "need 1 <= min_samples <= settle_samples; "
                f"got {self.min_samples}, {self.settle_samples}"
            )
        if not 0 <= self.headroom < 1 or self.z <= 0 or self.sd_floor < 0:
            raise ValueError(
                f"need headroom in [0, 1), z > 0, sd_floor >= 0; "
                f"got {self.headroom}, {self.z}, {self.sd_floor}"
            )
        if not self.settle_samples <= self.hold_samples <= self.window:
            raise ValueError(
                "need settle_samples <= hold_samples <= window; "
                f"got {self.settle_samples}, {self.hold_samples}, {self.window}"
            )


class RecallStats:
    """Exponentially decayed mean and spread of per-query recalls, with normal bounds."""

    def __init__(self, window: int):
        self._decay = 1.0 - 1.0 / window
        self.count = 0  # raw samples
        self._w = self._wx = self._wxx = self._ww = 0.0

    def add(self, recall: float) -> None:
        d = self._decay
        self.count += 1
        self._w = self._w * d + 1.0
        self._wx = self._wx * d + recall
        self._wxx = self._wxx * d + recall * recall
        self._ww = self._ww * d * d + 1.0

    @property
    def mean(self) -> float:
        return self._wx / self._w if self._w else math.nan

    @property
    def n_eff(self) -> float:
        """Effective sample size of the decayed weights (Kish)."""
        return self._w * self._w / self._ww if self._ww else 0.0

    def half_width(self, z: float, sd_floor: float, *, max_n: float = math.inf) -> float:
        """z standard errors of the mean, counting at most ``max_n`` samples."""
        n = min(self.n_eff, max_n)
        if n <= 0:
            return math.inf
        var = max(self._wxx / self._w - self.mean**2, 0.0)
        return z * max(math.sqrt(var), sd_floor) / math.sqrt(n)


@dataclass(frozen=True)
class Estimate:
    """Recall at one point: mean and its bounds over ``count`` samples."""

    mean: float
    lower: float
    upper: float
    count: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lower:.3f}, {self.upper:.3f}] over {self.count} samples"


@dataclass(frozen=True)
class Move:
    """A change of the default point and the evidence behind it."""

    old: SearchPoint
    new: SearchPoint
    direction: Literal["raise", "lower"]
    at_old: Estimate  # recall at the old point
    at_new: Estimate | None  # recall measured at the new point by probes (None: a blind step)
    target: float


def ladder(lo: int, hi: int, *, extra: int | None = None) -> list[int]:
    """nprobe rungs in [lo, hi]: powers of two and 1.5x powers of two, hi, and ``extra``."""
    rungs = {hi}
    p = 1
    while p <= min(hi, _NPROBE_LADDER_MAX):
        rungs.update(r for r in (p, p * 3 // 2) if lo <= r <= hi)
        p *= 2
    if extra is not None and lo <= extra <= hi:
        rungs.add(extra)
    return sorted(rungs)


def _k_ladder(hi: int, *, extra: int) -> list[int]:
    rungs = {1 << i for i in range(hi.bit_length()) if 1 << i <= hi}
    return sorted(rungs | {extra})


class PointPolicy:
    """One served version's controller. Not thread-safe: one caller feeds and asks it.

    Args:
        config: bounds and hysteresis.
        target: the version's target recall@recall_k (manifest ``quality.target_recall``).
        start: the point to serve first (the build's, or one learned before a restart).
        nlist: inverted lists of the index (the hard bound on nprobe).
        refine: whether the index has a re-ranking stage (else k_factor is never moved).
    """

    def __init__(
        self,
        config: ControllerConfig,
        *,
        target: float,
        start: SearchPoint,
        nlist: int,
        refine: bool,
    ):
        self.config = config
        self.target = target
        self.refine = refine
        hi = min(config.max_nprobe or nlist, nlist)
        self.point = SearchPoint(max(min(start.nprobe, hi), 1), max(start.k_factor, 1))
        lo = min(config.min_nprobe, self.point.nprobe)  # a start below the floor may stay
        self._nprobes = ladder(lo, hi, extra=self.point.nprobe)
        k_hi = max(config.max_k_factor, self.point.k_factor)
        self._k_factors = _k_ladder(k_hi, extra=self.point.k_factor) if refine else []
        self._stats: dict[SearchPoint, RecallStats] = {}  # since the current point became current
        self._cost_ms: dict[SearchPoint, float] = {}  # measured probe cost, moving average
        self._raised_from: set[SearchPoint] = set()  # points that fell short since the start
        self.moves = 0
        self.at_bound = False  # a raise was due and no allowed point could help

    # --- What the caller asks ------------------------------------------------------------------

    @property
    def aim(self) -> float:
        """The recall the controller holds: the target plus ``headroom``."""
        return self.target + self.config.headroom

    @property
    def samples(self) -> int:
        """Samples seen at the current point since it became current."""
        stats = self._stats.get(self.point)
        return stats.count if stats is not None else 0

    @property
    def settled(self) -> bool:
        """The current point is shown to hold (or cannot be bettered): shadow may sample less."""
        if self.at_bound:
            return True
        at = self.estimate()
        return at is not None and at.count >= self.config.settle_samples and at.lower >= self.target

    def estimate(
        self, point: SearchPoint | None = None, *, max_n: float = math.inf
    ) -> Estimate | None:
        """Recall measured at ``point`` (default: the current one) since the last move; bounds
        as if from at most ``max_n`` samples."""
        stats = self._stats.get(point or self.point)
        if stats is None or not stats.count:
            return None
        h = stats.half_width(self.config.z, self.config.sd_floor, max_n=max_n)
        return Estimate(stats.mean, stats.mean - h, stats.mean + h, stats.count)

    def probes(self) -> tuple[SearchPoint, ...]:
        """Points the sampled queries should also be searched at (the current one's neighbours)."""
        if not self.config.probe:
            return ()
        n, f = self.point
        i = self._nprobes.index(n)
        out = [SearchPoint(self._nprobes[j], f) for j in (i - 2, i - 1, i + 1, i + 2)
               if 0 <= j < len(self._nprobes)]  # fmt: skip
        if self.refine:
            j = self._k_factors.index(f)
            out += [SearchPoint(n, self._k_factors[j2]) for j2 in (j - 1, j + 1)
                    if 0 <= j2 < len(self._k_factors)]  # fmt: skip
        return tuple(out)

    # --- What the caller feeds -----------------------------------------------------------------

    def observe(self, point: SearchPoint, recall: float) -> None:
        """One query's recall@k measured at ``point``."""
        stats = self._stats.get(point)
        if stats is None:
            stats = self._stats[point] = RecallStats(self.config.window)
        stats.add(recall)

    def observe_cost(self, point: SearchPoint, ms_per_query: float) -> None:
        """The measured cost of searching at ``point`` (averaged: timings are noisy)."""
        old = self._cost_ms.get(point)
        self._cost_ms[point] = ms_per_query if old is None else 0.8 * old + 0.2 * ms_per_query

    def decide(self) -> Move | None:
        """A move if the evidence calls for one (then applied here: ``point`` is the new one)."""
        at = self.estimate()
        if at is None or at.count < self.config.min_samples:
            return None
        move: Move | None = None
        self.at_bound = False
        unproven = at.count >= self.config.hold_samples and at.lower < self.target
        if at.upper < self.aim or unproven:
            move = self._raise(at)
            self.at_bound = move is None
        elif at.count >= self.config.settle_samples and at.lower >= self.aim:
            move = self._lower(at)
        if move is not None:
            if move.direction == "raise":
                self._raised_from.add(move.old)
            self._raised_from.discard(move.new)
            self.point = move.new
            self._stats.clear()
            self.moves += 1
        return move

    # --- Rules ---------------------------------------------------------------------------------

    def _allowed(self, p: SearchPoint) -> bool:
        budget = self.config.max_search_ms
        cost = self._cost_ms.get(p)
        return not budget or cost is None or cost <= budget

    def _cheapest(self, found: list[tuple[SearchPoint, Estimate]]) -> tuple[SearchPoint, Estimate]:
        """The cheapest candidate. More lists or more depth always cost more, so a candidate
        above another never wins; measured ms decides between the others (nprobe against
        k_factor)."""
        below = [(p, e) for p, e in found
                 if not any(_above(p, q) for q, _ in found)]  # fmt: skip
        return min(below, key=lambda pe: (self._cost_ms.get(pe[0], math.inf), pe[0]))

    def _measured(
        self, *, above: bool, samples: int, max_n: float = math.inf
    ) -> list[tuple[SearchPoint, Estimate]]:
        """Probed points above (or below) the current one with at least ``samples`` samples."""
        out = []
        for p in self._stats:
            est = self.estimate(p, max_n=max_n)
            side = _above(p, self.point) if above else _above(self.point, p)
            if side and est is not None and est.count >= samples:
                out.append((p, est))
        return out

    def _raise(self, at: Estimate) -> Move | None:
        measured = [(p, e) for p, e in self._measured(above=True, samples=self.config.min_samples)
                    if self._allowed(p)]  # fmt: skip
        holding = [(p, e) for p, e in measured if e.mean >= self.aim]
        if holding:
            p, e = self._cheapest(holding)
            return Move(self.point, p, "raise", at, e, self.target)
        if measured:
            p, e = max(measured, key=lambda pe: (pe[1].mean, -pe[0].nprobe, -pe[0].k_factor))
            return Move(self.point, p, "raise", at, e, self.target) if e.mean > at.mean else None
        blind = self._step_up()  # nothing probed (probes off): one rung, if allowed
        if blind is None or blind in self._stats or not self._allowed(blind):
            return None
        return Move(self.point, blind, "raise", at, None, self.target)

    def _step_up(self) -> SearchPoint | None:
        """One rung up without probes: nprobe first, then k_factor."""
        n, f = self.point
        i = self._nprobes.index(n)
        if i + 1 < len(self._nprobes):
            return SearchPoint(self._nprobes[i + 1], f)
        if self.refine:
            j = self._k_factors.index(f)
            if j + 1 < len(self._k_factors):
                return SearchPoint(n, self._k_factors[j + 1])
        return None

    def _lower(self, at: Estimate) -> Move | None:
        # The cheaper point's bound counts at most hold_samples samples: once current, it must
        # show the target within that many (fresh) samples, so a point that only passes on a
        # long window would be raised from again (flapping).
        # Back to a point it was raised from only after a whole window at the current one.
        c = self.config
        cheaper = [(p, e) for p, e in self._measured(above=False, samples=c.settle_samples,
                                                     max_n=c.hold_samples)
                   if e.lower >= self.aim
                   and (p not in self._raised_from or at.count >= c.window)]  # fmt: skip
        if not cheaper:
            return None
        p, e = self._cheapest(cheaper)
        return Move(self.point, p, "lower", at, e, self.target)


def _above(p: SearchPoint, q: SearchPoint) -> bool:
    """p searches at least as much as q in both settings, and is another point."""
    return p != q and p.nprobe >= q.nprobe and p.k_factor >= q.k_factor
