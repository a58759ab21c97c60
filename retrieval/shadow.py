"""Shadow recall: re-run a sample of live queries exactly, off the request path.

A sampled call hands its query and its answer to a bounded queue (dropped when full: the
request path never waits). One background thread takes them in small groups and searches
exactly (``indexer.ann.exact_search``, block by block over the memory-mapped embeddings) among
the ads the call was allowed to see: the same eligibility mask and upserted ads the search
used. recall@k is exported per index version.

recall@k (``indexer.ann.recall_per_query``) also counts a returned ad whose exact score reaches
the k-th best exact score: it does not penalise an arbitrary pick among exact duplicates. Calls
with an advertiser cap are skipped (their ideal answer is not a top k).

The exact pass over n ads costs about n * d * 2 flops per query and reads the whole embedding
matrix once per group (memory-bandwidth bound); ``max_duty`` bounds the share of one core it may
use by sleeping after each pass.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass

import numpy as np

from indexer.ann import exact_search, merge_topk, recall_per_query
from retrieval.metrics import Metrics
from retrieval.searcher import Hits, Searcher

logger = logging.getLogger(__name__)


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
        first = samples[0]
        n, art, delta = first.searcher.ntotal, first.searcher.artifact, first.hits.view.delta
        xq = np.stack([s.xq for s in samples])
        eligible = int(first.mask.sum()) + int(first.delta_mask.sum())
        t = max(min(max(s.k for s in samples), eligible), 1)
        D, I = exact_search(art.embeddings, xq, t, eligible=first.mask)
        delta_rows = np.flatnonzero(first.delta_mask)
        delta_scores = np.asarray(xq @ delta.xb[delta_rows].T, dtype=np.float32)  # (nq, m)
        out: list[float | None] = []
        for i, s in enumerate(samples):
            want = min(s.k, eligible)
            if not want:
                out.append(None)
                continue
            best, truth = merge_topk([D[i], delta_scores[i]], [I[i], delta_rows + n], want)
            ids = s.hits.ids
            main, upserted = ids[ids < n], ids[ids >= n] - n
            found_scores = np.concatenate(
                [art.embeddings[np.sort(main)] @ s.xq, delta.xb[upserted] @ s.xq]
            )
            found = np.concatenate([np.sort(main), upserted + n])
            tied = found_scores >= best[-1]
            recall = recall_per_query(found[None, :], truth[None, :], tied=tied[None, :])
            out.append(float(recall[0]))
        return out
