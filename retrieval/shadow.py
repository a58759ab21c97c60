"""Shadow recall: re-run a sample of live queries exactly, off the request path.

A sampled call hands its query and its answer to a bounded queue (dropped when full: the
request path never waits). One background thread takes them in small groups and searches
exactly (``indexer.ann.exact_search`` over the server's one copy of the vectors,
``Searcher.exact_vectors``) among the ads the call was allowed to see: the same eligibility
mask and upserted ads the search used. recall@k is exported per index version.

recall@k (``indexer.ann.recall_per_query``) also counts a returned ad whose exact score reaches
the k-th best exact score: it does not penalise an arbitrary pick among exact duplicates. Calls
with an advertiser cap are skipped (their ideal answer is not a top k).

The exact pass over n ads costs about n * d * 2 flops per query and reads the whole embedding
vectors once per query (memory-bandwidth bound). That pass, and only that FAISS call (it holds
no GIL), runs on its own thread at one OpenMP thread and nice 19
(``retrieval.threads.become_background``), so it fills cores the searches leave idle rather
than sharing one with a call. The Python around it (recall, metrics, the listener's timed
re-searches) stays on the measuring thread at normal priority: a low-priority thread
preempted while holding the GIL would stall every handler, and the listener's timings would
stretch. ``max_duty`` bounds the share of one core the measuring takes by sleeping after each
group.

A listener (the recall controller, ``retrieval.recall_control``) may ask for more: which calls
it wants measured (and at which k), a higher sampling rate and duty while a version is
*unsettled*, and each wanted call's exact answer (:class:`Measured`) to score its own
re-searches of the same query against.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from indexer.ann import exact_search, merge_topk, recall_per_query
from retrieval.metrics import Metrics
from retrieval.searcher import Hits, Searcher
from retrieval.threads import become_background

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowConfig:
    """How many live queries are re-run exactly, and how much CPU that may take."""

    sample_rate: float = 0.01  # share of Retrieve calls sampled; 0 turns shadow recall off
    queue_size: int = 64  # sampled calls waiting; more are dropped
    group: int = 16  # queries scored per pass over the embeddings
    max_duty: float = 0.1  # share of one core the exact passes may use
    # While the listener calls a version unsettled (its point is new, or just moved): the share
    # of its wanted calls sampled, and the share of one core the passes may use meanwhile.
    unsettled_sample_rate: float = 0.25
    unsettled_max_duty: float = 0.5
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("sample_rate", "unsettled_sample_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if self.queue_size < 1 or self.group < 1:
            raise ValueError(
                f"queue_size and group must be >= 1; got {self.queue_size}, {self.group}"
            )
        for name in ("max_duty", "unsettled_max_duty"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {getattr(self, name)}")


@dataclass(frozen=True)
class _Sample:
    searcher: Searcher
    xq: np.ndarray  # (d,) normalised
    k: int
    hits: Hits
    mask: np.ndarray  # eligible artifact rows the search used
    delta_mask: np.ndarray  # eligible upserted ads it used
    wanted_k: int | None = None  # the listener's k for this call (None: not wanted)


@dataclass(frozen=True)
class Measured:
    """A sampled call and its exact answer over the ads it could see (for a listener)."""

    searcher: Searcher
    xq: np.ndarray  # (d,) normalised query
    k: int  # the call's k
    hits: Hits  # what the call returned
    truth: np.ndarray  # (t,) exact top rows (as in Hits.ids), t >= the k wanted or all eligible
    best: np.ndarray  # (t,) their exact scores, best first

    def recall(self, ids: np.ndarray, k: int) -> float:
        """recall@k of the answer ``ids`` (rows as in Hits.ids, best first) to this query."""
        return _recall(self.searcher, self.hits, self.xq, ids[:k], self.truth, self.best, k)


class ShadowListener(Protocol):
    """Who else consumes shadow measurements (the recall controller)."""

    def wants(self, searcher: Searcher, hits: Hits) -> int | None:
        """The k at which to also measure this call (None: the listener does not want it)."""

    def unsettled(self, version: str) -> bool:
        """Whether this version's wanted calls are sampled at the unsettled rate and duty."""

    def measured(self, samples: Sequence[Measured]) -> None:
        """Wanted calls of one eligibility view, measured (on the shadow thread)."""


def _recall(
    searcher: Searcher,
    hits: Hits,
    xq: np.ndarray,
    ids: np.ndarray,
    truth: np.ndarray,
    best: np.ndarray,
    k: int,
) -> float:
    """recall@k of ``ids`` against the exact answer (truth, best), ties at the k-th score counted."""
    want = min(k, len(truth))
    if not want:
        return 1.0
    n, art, delta = searcher.ntotal, searcher.artifact, hits.view.delta
    main, upserted = ids[ids < n], ids[ids >= n] - n
    found_scores = np.concatenate([art.embeddings[np.sort(main)] @ xq, delta.xb[upserted] @ xq])
    found = np.concatenate([np.sort(main), upserted + n])
    tied = found_scores >= best[want - 1]
    return float(recall_per_query(found[None, :], truth[None, :want], tied=tied[None, :])[0])


class ShadowRecall:
    """Samples calls (:meth:`offer`) and measures them on a background thread."""

    def __init__(
        self, config: ShadowConfig, metrics: Metrics, listener: ShadowListener | None = None
    ):
        self.config = config
        self._metrics = metrics
        self._listener = listener
        self._queue: queue.Queue[_Sample] = queue.Queue(config.queue_size)
        self._rng = random.Random(config.seed)
        self._stop = threading.Event()
        self._exact_tid: int | None = None
        self._exact_pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="shadow-exact", initializer=self._background
        )
        self._thread = threading.Thread(target=self._run, name="shadow-recall", daemon=True)
        self._thread.start()

    def _background(self) -> None:
        become_background()
        self._exact_tid = threading.get_native_id()

    def offer(self, searcher: Searcher, user_embedding: np.ndarray, k: int, hits: Hits) -> None:
        """Maybe sample this answered call; never blocks."""
        listener = self._listener
        wanted_k = listener.wants(searcher, hits) if listener is not None else None
        rate = self.config.sample_rate
        if wanted_k is not None and listener is not None and listener.unsettled(searcher.version):
            rate = max(rate, self.config.unsettled_sample_rate)
        if rate == 0 or self._rng.random() >= rate:
            return
        if hits.mask is None or hits.delta_mask is None:
            self._metrics.shadow_queries.labels("skipped").inc()
            return
        x = np.asarray(user_embedding, dtype=np.float32).ravel()
        try:
            self._queue.put_nowait(
                _Sample(searcher, x / np.linalg.norm(x), k, hits, hits.mask, hits.delta_mask,
                        wanted_k)
            )  # fmt: skip
        except queue.Full:
            self._metrics.shadow_queries.labels("dropped").inc()

    def skip(self) -> None:
        """Count a call that cannot be measured (advertiser cap), if it would have been sampled."""
        if self.config.sample_rate and self._rng.random() < self.config.sample_rate:
            self._metrics.shadow_queries.labels("skipped").inc()

    @property
    def exact_thread_id(self) -> int | None:
        """The OS id of the thread running the exact passes (None before the first pass)."""
        return self._exact_tid

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued sample is measured (tests, shutdown); False on timeout."""
        end = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._exact_pool.shutdown(wait=False, cancel_futures=True)

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
            taken = len(group)
            # A replaced version's calls are not measured: held here, they would keep its index
            # in memory until the pass (at low priority, slow on a busy server) got to them.
            live = [s for s in group if not s.searcher.retired]
            del group  # (nor may this list keep them while the thread sleeps below)
            if len(live) < taken:
                self._metrics.shadow_queries.labels("retired").inc(taken - len(live))
            started = time.perf_counter()
            unsettled = False
            try:
                unsettled = self._measure(live) if live else False
            except Exception:
                logger.exception("Shadow recall pass failed")
            finally:
                del live
                for _ in range(taken):
                    self._queue.task_done()
            spent = time.perf_counter() - started
            duty = self.config.unsettled_max_duty if unsettled else self.config.max_duty
            self._stop.wait(spent * (1.0 / duty - 1.0))

    def _measure(self, group: list[_Sample]) -> bool:
        """Measure a group; True if it held wanted calls of an unsettled version."""
        by_mask: dict[tuple[int, int], list[_Sample]] = {}
        for s in group:  # unfiltered calls of one view share their mask: one pass for them all
            by_mask.setdefault((id(s.mask), id(s.delta_mask)), []).append(s)
        unsettled = False
        for samples in by_mask.values():
            measured = self._exact(samples)
            wanted = []
            for s, m in zip(samples, measured, strict=True):
                if m is None:
                    continue
                recall = m.recall(s.hits.ids, s.k)
                self._metrics.shadow_recall.labels(s.searcher.version).observe(recall)
                self._metrics.shadow_queries.labels("measured").inc()
                if s.wanted_k is not None:
                    wanted.append(m)
            if wanted and self._listener is not None:
                self._listener.measured(wanted)
                unsettled |= any(self._listener.unsettled(m.searcher.version) for m in wanted)
        return unsettled

    def _exact(self, samples: list[_Sample]) -> list[Measured | None]:
        """Exact answers of calls that share one eligibility (None where nothing was eligible)."""
        first = samples[0]
        n, delta = first.searcher.ntotal, first.hits.view.delta
        xq = np.stack([s.xq for s in samples])
        eligible = int(first.mask.sum()) + int(first.delta_mask.sum())
        t = max(min(max(max(s.k, s.wanted_k or 0) for s in samples), eligible), 1)
        D, I = self._exact_pool.submit(
            exact_search, first.searcher.exact_vectors, xq, t, eligible=first.mask
        ).result()
        delta_rows = np.flatnonzero(first.delta_mask)
        delta_scores = np.asarray(xq @ delta.xb[delta_rows].T, dtype=np.float32)  # (nq, m)
        out: list[Measured | None] = []
        for i, s in enumerate(samples):
            if not eligible:
                out.append(None)
                continue
            best, truth = merge_topk([D[i], delta_scores[i]], [I[i], delta_rows + n], t)
            out.append(Measured(s.searcher, s.xq, s.k, s.hits, truth, best))
        return out
