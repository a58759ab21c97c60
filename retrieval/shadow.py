"""Shadow recall: re-run a sample of live queries exactly, off the request path.

A sampled call hands its query and its answer to a bounded queue (dropped when full: the
request path never waits). One background thread takes them in small groups and scores every
ad the call was allowed to see (the same eligibility mask and upserted ads the search used)
with a blocked matrix product over the artifact's embeddings, i.e. exact inner-product search
restricted to the same eligible set. recall@k is exported per index version.

recall@k here counts a returned ad as correct when its exact score reaches the k-th best exact
score (both from the same products, so with the same rounding): the same as id-based recall
unless two ads score exactly the same, where it does not penalise an arbitrary pick among
exact duplicates. Calls with an advertiser cap are skipped
(their ideal answer is not a top k).

The exact pass over n ads costs about n * d * 2 flops per query (a 1M x 384 index: ~0.1 s
per group on one core, bandwidth-bound); ``max_duty`` bounds the share of one core it may use
by sleeping after each pass.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass

import numpy as np

from retrieval.metrics import Metrics
from retrieval.searcher import Hits, Searcher

logger = logging.getLogger(__name__)

CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class ShadowConfig:
    """How many live queries are re-run exactly, and how much CPU that may take."""

    sample_rate: float = 0.01  # share of Retrieve calls sampled; 0 turns shadow recall off
    queue_size: int = 64  # sampled calls waiting; more are dropped
    group: int = 16  # queries scored per pass over the embeddings
    max_duty: float = 0.1  # share of one core the exact passes may use
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1]; got {self.sample_rate}")
        if self.queue_size < 1 or self.group < 1:
            raise ValueError(
                f"queue_size and group must be >= 1; got {self.queue_size}, {self.group}"
            )
        if not 0.0 < self.max_duty <= 1.0:
            raise ValueError(f"max_duty must be in (0, 1]; got {self.max_duty}")


@dataclass(frozen=True)
class _Sample:
    searcher: Searcher
    xq: np.ndarray  # (d,) normalised
    k: int
    hits: Hits
    mask: np.ndarray  # eligible artifact rows the search used
    delta_mask: np.ndarray  # eligible upserted ads it used


def exact_pass(
    xb: np.ndarray, mask: np.ndarray, xq: np.ndarray, t: int, found: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Exact top-t scores among ``mask`` rows, and the exact scores of the rows each call found.

    Both come from the same products, so a found row is judged with the same rounding as the
    ideal ones.

    Args:
        xb: (n, d) float32 (may be memory-mapped); mask: (n,) bool; xq: (nq, d) float32.
        t: how many best scores to keep, >= 1.
        found: per query, the rows (< n) it returned.

    Returns:
        (nq, t) best scores, descending (-inf padded), and per query its rows' scores.
    """
    best = np.full((len(xq), t), -np.inf, dtype=np.float32)
    scores_of = [np.zeros(len(f), dtype=np.float32) for f in found]
    for start in range(0, len(xb), CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, len(xb))
        scores = np.asarray(xb[start:stop] @ xq.T, dtype=np.float32)  # (rows, nq)
        for i, rows in enumerate(found):
            here = (rows >= start) & (rows < stop)
            scores_of[i][here] = scores[rows[here] - start, i]
        m = mask[start:stop]
        if m.any():
            best = _merge_best(best, scores[m].T, t)
    return best, scores_of


def _merge_best(best: np.ndarray, scores: np.ndarray, t: int) -> np.ndarray:
    both = np.concatenate([best, scores], axis=1)
    if both.shape[1] > t:
        both = -np.partition(-both, t - 1, axis=1)[:, :t]
    out: np.ndarray = -np.sort(-both, axis=1)
    return out


class ShadowRecall:
    """Samples calls (:meth:`offer`) and measures them on a background thread."""

    def __init__(self, config: ShadowConfig, metrics: Metrics):
        self.config = config
        self._metrics = metrics
        self._queue: queue.Queue[_Sample] = queue.Queue(config.queue_size)
        self._rng = random.Random(config.seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow-recall", daemon=True)
        self._thread.start()

    def offer(self, searcher: Searcher, user_embedding: np.ndarray, k: int, hits: Hits) -> None:
        """Maybe sample this answered call; never blocks."""
        if self.config.sample_rate == 0 or self._rng.random() >= self.config.sample_rate:
            return
        if hits.mask is None or hits.delta_mask is None:
            self._metrics.shadow_queries.labels("skipped").inc()
            return
        x = np.asarray(user_embedding, dtype=np.float32).ravel()
        try:
            sample = _Sample(searcher, x / np.linalg.norm(x), k, hits, hits.mask, hits.delta_mask)
            self._queue.put_nowait(sample)
        except queue.Full:
            self._metrics.shadow_queries.labels("dropped").inc()

    def skip(self) -> None:
        """Count a call that cannot be measured (advertiser cap), if it would have been sampled."""
        if self.config.sample_rate and self._rng.random() < self.config.sample_rate:
            self._metrics.shadow_queries.labels("skipped").inc()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued sample is measured (tests, shutdown); False on timeout."""
        end = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _take(self) -> list[_Sample]:
        try:
            group = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(group) < self.config.group:
            try:
                group.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return group

    def _run(self) -> None:
        while not self._stop.is_set():
            group = self._take()
            if not group:
                continue
            started = time.perf_counter()
            try:
                self._measure(group)
            except Exception:
                logger.exception("Shadow recall pass failed")
            finally:
                for _ in group:
                    self._queue.task_done()
            spent = time.perf_counter() - started
            self._stop.wait(spent * (1.0 / self.config.max_duty - 1.0))

    def _measure(self, group: list[_Sample]) -> None:
        by_mask: dict[tuple[int, int], list[_Sample]] = {}
        for s in group:  # unfiltered calls of one view share their mask: one pass for them all
            by_mask.setdefault((id(s.mask), id(s.delta_mask)), []).append(s)
        for samples in by_mask.values():
            for s, recall in zip(samples, self._recalls(samples), strict=True):
                if recall is not None:
                    self._metrics.shadow_recall.labels(s.searcher.version).observe(recall)
                    self._metrics.shadow_queries.labels("measured").inc()

    @staticmethod
    def _recalls(samples: list[_Sample]) -> list[float | None]:
        """recall@k of calls that share one eligibility (None where nothing was eligible)."""
        first, n = samples[0], samples[0].searcher.ntotal
        xq = np.stack([s.xq for s in samples])
        eligible = int(first.mask.sum()) + int(first.delta_mask.sum())
        t = max(min(max(s.k for s in samples), eligible), 1)
        found = [s.hits.ids[s.hits.ids < n] for s in samples]
        best, found_scores = exact_pass(
            first.searcher.artifact.embeddings, first.mask, xq, t, found
        )
        delta = first.hits.view.delta.xb
        if len(delta):
            delta_scores = np.asarray(delta @ xq.T, dtype=np.float32)  # (delta ads, nq)
            best = _merge_best(best, delta_scores[first.delta_mask].T, t)
            found_scores = [
                np.concatenate([f, delta_scores[s.hits.ids[s.hits.ids >= n] - n, i]])
                for i, (f, s) in enumerate(zip(found_scores, samples, strict=True))
            ]
        out: list[float | None] = []
        for i, s in enumerate(samples):
            want = min(s.k, eligible)
            hits = int((found_scores[i] >= best[i, want - 1]).sum()) if want else 0
            out.append(min(hits, want) / want if want else None)
        return out
