"""How many OpenMP threads each FAISS search in the server gets.

OpenMP's thread count is a per-thread setting (``omp_set_num_threads`` changes only the calling
thread's), so the server sets it around every search on the worker thread that runs it, and
restores it afterwards. A search gets ``alone`` threads (FAISS then splits the query's probed
lists over the cores) when no other search is running *and* searches have rarely overlapped
lately; otherwise ``busy`` (one): the calls themselves keep the cores busy, and more threads
would only fight the other workers. The second condition matters near saturation: arrivals at
a steady rate often find the server momentarily idle, and a search that started alone keeps its
threads while others start, so without it a loaded server keeps oversubscribing its cores
(docs/serving.md, "A lone search on both cores").
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import faiss

from indexer.ann import omp_threads

logger = logging.getLogger(__name__)

BACKGROUND_NICE = 19  # the lowest CFS weight short of SCHED_IDLE: it still gets a trickle


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_alone_threads() -> int:
    """OpenMP threads for a lone search: both cores of a 2-core machine (docs/serving.md)."""
    return min(2, available_cores())


def become_background() -> int:
    """Make the calling thread best-effort work beside the searches; returns its nice value.

    One OpenMP thread, so a duty cycle counts one core; and on Linux nice 19 for this thread
    (and the OpenMP threads it creates, which inherit it), so that the scheduler runs it on a
    core the searches leave idle instead of beside them: shadow recall's exact pass over every
    vector would otherwise sit in a call's latency. Only for work that holds no GIL (a FAISS
    call): preempted while holding it, the thread would stall every handler. Linux's
    setpriority takes a thread id; elsewhere it would renice the whole process, so it is
    skipped.
    """
    faiss.omp_set_num_threads(1)
    if not sys.platform.startswith("linux"):
        return 0
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE)
    except OSError as exc:  # a sandbox may forbid it: the work still runs, at normal priority
        logger.warning("could not lower thread %d's priority: %s", tid, exc)
    return os.getpriority(os.PRIO_PROCESS, tid)


class SearchThreads:
    """Counts the searches in flight and sets each one's OpenMP thread count."""

    def __init__(
        self, busy: int = 1, alone: int = 1, *, window: int = 32, max_overlap: float = 0.1
    ):
        if busy < 1 or alone < 1:
            raise ValueError(f"thread counts must be >= 1; got busy={busy}, alone={alone}")
        self.busy = busy
        self.alone = alone
        self._window = window  # searches the overlap average spans (roughly)
        self._max_overlap = max_overlap  # above this share of overlapping searches: busy
        self._lock = threading.Lock()
        self._running = 0
        self.overlap = 0.0  # moving average: share of recent searches that found another running

    @contextmanager
    def search(self) -> Iterator[int]:
        """Around one search on the calling thread; yields the thread count it runs with."""
        with self._lock:
            self._running += 1
            overlapped = self._running > 1
            self.overlap += (float(overlapped) - self.overlap) / self._window
            quiet = not overlapped and self.overlap <= self._max_overlap
            threads = self.alone if quiet else self.busy
        try:
            with omp_threads(threads):
                yield threads
        finally:
            with self._lock:
                self._running -= 1
