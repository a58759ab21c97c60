"""The recall controller in the server: shadow samples in, default-point moves out.

One :class:`~retrieval.controller.PointPolicy` per served version (the policy itself is pure,
``retrieval.controller``). This module is the loop around it:

- **Attach** (``IndexState`` calls :meth:`RecallControl.attach` on each version it loads,
  before it serves): resume the point learned for that version
  (``retrieval.operating_points``), else the build's; a version without a recall target in its
  manifest, or a server started with ``--recall-control off``, keeps its build point.
- **Sample** (a ``ShadowListener``): only calls served at the default point without a filter,
  an explicit nprobe or an advertiser cap drive the point (filtered calls scale nprobe from it
  by their selectivity; explicit ones chose their own point). While a version is unsettled,
  shadow samples those calls at its higher rate and duty.
- **Measure**: with each wanted call's exact answer, score the served answer and the same query
  re-searched at the policy's probe points, recall@``recall_k``, timing each probe (one OpenMP
  thread, on the shadow thread). Every sample carries the point it was measured at.
- **Move**: apply the policy's move to the searcher (one tuple swap), log it, count it, export
  the point, and record it in ``operating_points.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from prometheus_client import Gauge

from indexer.ann import has_refine, omp_threads
from retrieval.controller import ControllerConfig, Move, PointPolicy, SearchPoint
from retrieval.metrics import Metrics
from retrieval.operating_points import LearnedPoint, OperatingPointStore
from retrieval.searcher import Hits, Searcher
from retrieval.shadow import Measured

logger = logging.getLogger(__name__)


@dataclass
class _Version:
    searcher: Searcher
    store: OperatingPointStore
    policy: PointPolicy | None  # None: served at a fixed point
    target: float
    recall_k: int
    moves_before: int  # moves learned by earlier runs (kept in the store)
    # Read by request threads (which never touch the policy, owned by the shadow thread).
    unsettled: bool = False
    warned_at_bound: bool = False


class RecallControl:
    """Keeps each served version's default point at its target recall (thread-safe)."""

    def __init__(self, config: ControllerConfig, metrics: Metrics):
        self.config = config
        self._metrics = metrics
        self._lock = threading.Lock()  # guards _versions and every policy
        self._versions: dict[str, _Version] = {}

    # --- Versions ------------------------------------------------------------------------------

    def attach(self, searcher: Searcher) -> None:
        """A version about to serve: set its default point; earlier versions are forgotten."""
        store = OperatingPointStore(searcher.artifact.path.parent)
        quality = searcher.artifact.manifest.quality
        policy, learned = None, None
        if self.config.enabled and quality is None:
            logger.info(
                "Recall control off for %s: its manifest has no recall target", searcher.version
            )
        elif self.config.enabled and quality is not None:
            learned = store.get(searcher.version)
            start = searcher.build_point
            if learned is not None and 1 <= learned.nprobe <= searcher.nlist:
                start = learned.point
                logger.info(
                    "Resuming the learned operating point of %s: %s (build: %s, %d moves, last %s)",
                    searcher.version, start, searcher.build_point, learned.moves, learned.last_move,
                )  # fmt: skip
            # Fewer lists than hold recall_k ads on average come up short and widen (x4).
            floor = math.ceil(quality.recall_k * searcher.nlist / max(searcher.ntotal, 1))
            config = dataclasses.replace(
                self.config, min_nprobe=max(self.config.min_nprobe, min(floor, searcher.nlist))
            )
            policy = PointPolicy(
                config,
                target=quality.target_recall,
                start=start,
                nlist=searcher.nlist,
                refine=has_refine(searcher.artifact.index),
            )
            searcher.set_point(policy.point)  # start, within the configured bounds
        entry = _Version(
            searcher,
            store,
            policy,
            target=quality.target_recall if quality else 0.0,
            recall_k=quality.recall_k if quality else 0,
            moves_before=learned.moves if learned else 0,
            unsettled=policy is not None,
        )
        with self._lock:
            for old in list(self._versions):
                if old != searcher.version:
                    self._forget(old)
            self._versions[searcher.version] = entry
            self._export(entry)

    def _forget(self, version: str) -> None:
        del self._versions[version]
        m = self._metrics
        for param in ("nprobe", "k_factor"):
            _remove(m.operating_point, version, param)
        for stat in ("mean", "lower", "upper"):
            _remove(m.recall_control_recall, version, stat)
        _remove(m.recall_control_settled, version)

    def controlled(self, version: str) -> bool:
        entry = self._versions.get(version)
        return entry is not None and entry.policy is not None

    # --- ShadowListener ------------------------------------------------------------------------

    def wants(self, searcher: Searcher, hits: Hits) -> int | None:
        """recall_k for an unfiltered call searched at the default point of a controlled version."""
        entry = self._versions.get(searcher.version)
        if entry is None or entry.policy is None or entry.searcher is not searcher:
            return None
        unfiltered = hits.mask is hits.view.eligible and hits.delta_mask is hits.view.delta.eligible
        if hits.plan != "ivf" or hits.default is None or not unfiltered:
            return None
        return entry.recall_k

    def unsettled(self, version: str) -> bool:
        entry = self._versions.get(version)
        return entry is not None and entry.unsettled

    def measured(self, samples: Sequence[Measured]) -> None:
        """Score the served answers and the probe points' answers; move if the policy says so."""
        searcher = samples[0].searcher
        with self._lock:
            entry = self._versions.get(searcher.version)
            if entry is None or entry.policy is None or entry.searcher is not searcher:
                return  # a version no longer served
            self._observe(entry, entry.policy, samples)
            move = entry.policy.decide()
            if move is not None:
                self._apply(entry, move)
            elif entry.policy.at_bound and not entry.warned_at_bound:
                entry.warned_at_bound = True
                logger.warning(
                    "Recall control of %s: recall@%d %s is below the target %.3f and no point "
                    "within the bounds (nprobe <= %s, k_factor <= %d, %s ms) measures better",
                    searcher.version, entry.recall_k, entry.policy.estimate(), entry.target,
                    self.config.max_nprobe or "nlist", self.config.max_k_factor,
                    self.config.max_search_ms or "no budget",
                )  # fmt: skip
            entry.unsettled = not entry.policy.settled
            self._export(entry)

    def _observe(self, entry: _Version, policy: PointPolicy, samples: Sequence[Measured]) -> None:
        k = entry.recall_k
        probes = set(policy.probes())
        todo: dict[SearchPoint, list[int]] = {p: [] for p in probes}
        for i, m in enumerate(samples):
            served = m.hits.default or SearchPoint(m.hits.nprobe, m.hits.k_factor)
            if m.k == k:
                policy.observe(served, m.recall(m.hits.ids, k))
            else:  # recall@k of a call for another k: search its query again at k
                todo.setdefault(served, []).append(i)
            for p in probes - {served}:
                todo[p].append(i)
        view = samples[0].hits.view
        with omp_threads(1):  # as a served search runs beside others; and leave the cores be
            for p, rows in todo.items():
                if not rows:
                    continue
                xq = np.stack([samples[i].xq for i in rows])
                started = time.perf_counter()
                found = entry.searcher.search_batch(xq, k, point=p, view=view)
                policy.observe_cost(p, (time.perf_counter() - started) * 1e3 / len(rows))
                for i, hits in zip(rows, found, strict=True):
                    policy.observe(p, samples[i].recall(hits.ids, k))
        self._metrics.recall_control_samples.labels(entry.searcher.version).inc(len(samples))

    def _apply(self, entry: _Version, move: Move) -> None:
        searcher = entry.searcher
        searcher.set_point(move.new)
        policy = entry.policy
        assert policy is not None
        self._metrics.operating_point_moves.labels(searcher.version, move.direction).inc()
        entry.warned_at_bound = False
        why = (
            f"{move.direction}: recall@{entry.recall_k} {move.at_old} at {move.old}, "
            f"{move.at_new or 'not probed'} at {move.new}, target {move.target:.3f}"
        )
        logger.info(
            "Operating point of %s: %s -> %s (%s)",
            searcher.version, move.old, move.new, why,
            extra={"event": "operating_point", "version": searcher.version,
                   "direction": move.direction, "nprobe": move.new.nprobe,
                   "k_factor": move.new.k_factor, "old_nprobe": move.old.nprobe,
                   "old_k_factor": move.old.k_factor},
        )  # fmt: skip
        learned = LearnedPoint(
            nprobe=move.new.nprobe,
            k_factor=move.new.k_factor,
            build_nprobe=searcher.build_point.nprobe,
            build_k_factor=searcher.build_point.k_factor,
            target_recall=entry.target,
            recall_k=entry.recall_k,
            moves=entry.moves_before + policy.moves,
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            last_move=why,
        )
        try:
            entry.store.put(searcher.version, learned)
        except OSError as exc:  # the move stands; it is only not remembered across a restart
            logger.error("Could not record the operating point in %s: %s", entry.store.path, exc)

    def _export(self, entry: _Version) -> None:
        m, version = self._metrics, entry.searcher.version
        point = entry.searcher.point
        m.operating_point.labels(version, "nprobe").set(point.nprobe)
        m.operating_point.labels(version, "k_factor").set(point.k_factor)
        policy = entry.policy
        if policy is None:
            return
        m.recall_control_settled.labels(version).set(1 if policy.settled else 0)
        est = policy.estimate()
        for stat in ("mean", "lower", "upper"):
            value = getattr(est, stat) if est is not None else float("nan")
            m.recall_control_recall.labels(version, stat).set(value)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never exported for this version
        gauge.remove(*labels)
