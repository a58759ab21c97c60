"""Micro-batching: concurrent unfiltered Retrieve calls share one FAISS search call.

There is no batching thread. At most ``max_concurrent`` batched FAISS searches run at once
(one per core). The first call of a group (same searcher, same requested nprobe, same k
bucket) becomes the batch's *leader*; while every search slot is busy, calls of its group that
arrive meanwhile join its batch (up to ``max_batch``). As soon as a slot is free the leader
closes the batch, runs ``Searcher.search_batch`` for everybody on its own worker thread and
hands each follower its rows. So batches grow with the load by themselves, and a lone caller
never waits. ``max_wait_s`` (default 0) additionally lets a leader with a free slot wait that
long for calls already on their way (arrived, not yet parsed) to join.

Only unfiltered calls are batched: filtered ones need their own selector, and diversity caps
their own candidate depth, so they take the single-query path. A call whose deadline passes
while it waits in a batch is left out of the search and answered DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from indexer.ann import omp_threads
from retrieval.errors import DeadlineExceeded, RetrievalError
from retrieval.metrics import Metrics
from retrieval.searcher import Hits, Searcher

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchConfig:
    """Bounds of one micro-batch."""

    max_batch: int = 32  # queries per FAISS call
    max_wait_s: float = 0.0  # longest a leader with a free slot waits for calls on their way
    max_concurrent: int = 2  # batched FAISS searches at once (the cores FAISS may use)
    search_threads: int = 1  # OpenMP threads of one batched search (FAISS splits the queries)

    def __post_init__(self) -> None:
        if self.search_threads < 1:
            raise ValueError(f"search_threads must be >= 1; got {self.search_threads}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {self.max_batch}")
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1; got {self.max_concurrent}")
        if not 0 <= self.max_wait_s <= 1:
            raise ValueError(f"max_wait_s must be in [0, 1] s; got {self.max_wait_s}")


def k_bucket(k: int) -> int:
    """Calls whose k share a bucket share a batch (searched with the largest k among them)."""
    return max(8, 1 << (k - 1).bit_length())


@dataclass(eq=False)
class _Batch:
    searcher: Searcher
    nprobe: int
    rows: list[np.ndarray] = field(default_factory=list)  # (1, d) normalised queries
    ks: list[int] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)  # time.monotonic() values
    closed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    results: list[Hits | RetrievalError] = field(default_factory=list)
    error: BaseException | None = None


class MicroBatcher:
    """Gathers concurrent unfiltered searches; each call holds a :class:`Ticket` meanwhile."""

    def __init__(self, config: BatchConfig, metrics: Metrics):
        self.config = config
        self._metrics = metrics
        self._cond = threading.Condition()
        self._open: dict[tuple[int, int, int], _Batch] = {}
        self._undecided = 0  # calls that arrived and have not yet joined a batch or left
        self._running = 0  # batched searches in progress

    def arrive(self) -> Ticket:
        """Register a call as soon as it starts, so leaders know company is on its way."""
        with self._cond:
            self._undecided += 1
        return Ticket(self)

    def _leave(self) -> None:
        with self._cond:
            self._undecided -= 1
            if self._undecided == 0:
                self._cond.notify_all()

    def _join(
        self, searcher: Searcher, xq: np.ndarray, k: int, nprobe: int, deadline: float
    ) -> tuple[_Batch, int, bool]:
        # nprobe 0 (the default point) stays 0: the batch reads the searcher's point once when it
        # runs, and its hits count as searched at the default point (retrieval.recall_control).
        # While a batch is open it holds the searcher, so the searcher's id stays unique.
        key = (id(searcher), nprobe, k_bucket(k))
        with self._cond:
            self._undecided -= 1
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch(searcher, nprobe)
            batch.rows.append(xq)
            batch.ks.append(k)
            batch.deadlines.append(deadline)
            if len(batch.rows) >= self.config.max_batch:
                self._close(key, batch)
            if batch.closed or self._undecided == 0:
                self._cond.notify_all()
        return batch, len(batch.rows) - 1, leader

    def _close(self, key: tuple[int, int, int], batch: _Batch) -> None:
        batch.closed = True
        if self._open.get(key) is batch:
            del self._open[key]

    def _ready(self, batch: _Batch, end: float) -> tuple[bool, float | None]:
        """(may the leader run now, how long to wait before looking again); holds the lock."""
        if self._running >= self.config.max_concurrent:
            return False, None  # woken when a search finishes
        remaining = end - time.monotonic()
        if batch.closed or self._undecided == 0 or remaining <= 0:
            return True, None
        return False, remaining

    def _lead(self, batch: _Batch, key: tuple[int, int, int]) -> None:
        end = time.monotonic() + self.config.max_wait_s
        with self._cond:
            ready, timeout = self._ready(batch, end)
            while not ready:
                self._cond.wait(timeout)
                ready, timeout = self._ready(batch, end)
            self._close(key, batch)
            self._running += 1
        try:
            self._run(batch)
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
            batch.done.set()

    def _run(self, batch: _Batch) -> None:
        now = time.monotonic()
        live = [i for i, d in enumerate(batch.deadlines) if d > now]
        results: list[Hits | RetrievalError] = [
            DeadlineExceeded("the call's deadline passed while it waited for its batch")
            for _ in batch.rows
        ]
        if live:
            xq = np.concatenate([batch.rows[i] for i in live])
            k = max(batch.ks[i] for i in live)
            with omp_threads(self.config.search_threads):  # this worker's count, this search only
                hits = batch.searcher.search_batch(xq, k, batch.nprobe)
            self._metrics.batch_size.observe(len(live))
            for i, h in zip(live, hits, strict=True):
                results[i] = h.top(batch.ks[i])
        batch.results = results

    def submit(
        self, searcher: Searcher, xq: np.ndarray, k: int, nprobe: int, deadline: float
    ) -> Hits:
        """Join (or lead) a batch with one checked, normalised query and wait for its hits."""
        batch, slot, leader = self._join(searcher, xq, k, nprobe, deadline)
        if leader:
            self._lead(batch, (id(searcher), batch.nprobe, k_bucket(k)))
        else:
            batch.done.wait()
        if batch.error is not None:
            raise RetrievalError(f"batched search failed: {batch.error}") from batch.error
        result = batch.results[slot]
        if isinstance(result, RetrievalError):
            raise result
        return result


class Ticket:
    """One call's place in the batcher: it either joins a batch or leaves (idempotent)."""

    def __init__(self, batcher: MicroBatcher):
        self._batcher = batcher
        self._pending = True

    def search(
        self, searcher: Searcher, user_embedding: np.ndarray, k: int, nprobe: int, deadline: float
    ) -> Hits:
        """Validate, join a batch (or lead one) and wait for this call's hits."""
        try:
            searcher.check_limits(k, nprobe)
            xq = searcher.check_query(user_embedding)
        except RetrievalError:
            self.leave()
            raise
        self._pending = False  # joining takes this call out of the undecided count
        return self._batcher.submit(searcher, xq, k, nprobe, deadline)

    def leave(self) -> None:
        if self._pending:
            self._pending = False
            self._batcher._leave()
