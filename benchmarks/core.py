"""Measurement core: one run's record, the timing loops, recall, and memory.

Timing follows faiss's ``RepeatTimer(warmup=1, runs=...)``: warm up on a prefix of the queries,
then time every single query ``repeats`` times and report p50 and p99 over all samples. Recall is
read from the first timed pass, so recall and latency always describe the same searches.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from indexer.ann import omp_threads, recall_at_k

logger = logging.getLogger(__name__)

SearchOne = Callable[[int], np.ndarray]  # query row -> ids found, best first
# OpenMP threads of one search in every system's single-query and concurrent-caller timings:
# equal for all systems (``System.threads`` records it per row; docs/benchmarks.md).
SEARCH_THREADS = 1


@dataclass(frozen=True)
class Timing:
    """Latencies of single-query searches and what the first pass found."""

    found: list[np.ndarray]  # per query, (<= k,) int64 ids
    latencies_ms: np.ndarray  # (repeats * nq,) float64
    # (repeats * nq,) float64: this process's CPU time per search (every thread of it), which
    # other processes' load barely changes, unlike the wall clock
    cpu_ms: np.ndarray | None = None

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))

    @property
    def single_qps(self) -> float:
        """Queries per second of one caller issuing one query at a time."""
        return float(1000.0 / self.latencies_ms.mean())


@dataclass
class RunRecord:
    """One JSON line: a system at one operating point on one dataset (self-describing: the
    dataset and its size, the threads, and where, when and by which command it was measured)."""

    name: str
    index_key: str
    params: dict[str, Any]
    k: int
    nq: int
    recall_at_10: float | None
    recall_at_100: float | None
    p50_ms: float
    p99_ms: float
    qps: float
    single_qps: float
    build_s: float
    index_bytes: int
    rss_mb: float
    threads: dict[str, Any]  # see ``System.threads``: single-query, QPS and build threads
    dataset: str
    nb: int
    d: int
    truth: str  # the exact search recall is measured against: "ip" (cosine) or "l2"
    latency_samples: int
    command: str
    load_avg_1m: float
    git_sha: str
    machine: dict[str, Any]
    time_utc: str
    extra: dict[str, Any] = field(default_factory=dict)
    pareto: bool = False
    benchmark: str = "recall_latency"
    kind: str = "point"
    # Mean / median CPU ms per single-query search in this process (None where the search runs
    # in another process: adindex-grpc's server)
    cpu_ms_mean: float | None = None
    cpu_ms_p50: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("recall_at_10", "recall_at_100"):
            if out[key] is not None:
                out[key] = round(out[key], 5)
        for key in ("p50_ms", "p99_ms", "qps", "single_qps", "build_s", "rss_mb"):
            out[key] = round(out[key], 4)
        for key in ("cpu_ms_mean", "cpu_ms_p50"):
            if out[key] is not None:
                out[key] = round(out[key], 4)
        return out


def time_queries(search: SearchOne, nq: int, *, warmup: int, repeats: int) -> Timing:
    """Warm up, then time each of ``nq`` single-query searches ``repeats`` times, one at a time
    on the calling thread, with FAISS on ``SEARCH_THREADS`` OpenMP thread.

    Args:
        search: runs query row i and returns the ids found, best first.
        nq: queries to time (rows 0..nq-1).
        warmup: queries run once, untimed, first (caches, lazy initialisation, JIT-like paths).
        repeats: timed passes over all nq queries.
    """
    found: list[np.ndarray] = []
    lat = np.empty(repeats * nq, dtype=np.float64)
    cpu = np.empty(repeats * nq, dtype=np.float64)
    with omp_threads(SEARCH_THREADS):
        for i in range(min(warmup, nq)):
            search(i)
        for r in range(repeats):
            for i in range(nq):
                c0, t0 = time.process_time(), time.perf_counter()
                ids = search(i)
                lat[r * nq + i] = time.perf_counter() - t0
                cpu[r * nq + i] = time.process_time() - c0
                if r == 0:
                    found.append(np.asarray(ids, dtype=np.int64))
    return Timing(found=found, latencies_ms=lat * 1000.0, cpu_ms=cpu * 1000.0)


def concurrent_qps(search: SearchOne, nq: int, *, threads: int) -> float:
    """Throughput of ``threads`` callers, each issuing single queries, over rows 0..nq-1; each
    caller's FAISS searches run on ``SEARCH_THREADS`` OpenMP thread (a new thread would get
    OpenMP's default, one per core: ``threads`` callers would then oversubscribe the cores)."""
    import faiss

    t0 = time.perf_counter()
    init = partial(faiss.omp_set_num_threads, SEARCH_THREADS)
    with ThreadPoolExecutor(max_workers=threads, initializer=init) as pool:
        list(pool.map(search, range(nq)))
    return nq / (time.perf_counter() - t0)


def recall(found: Sequence[np.ndarray], truth: np.ndarray, at: int) -> float | None:
    """recall@at (``indexer.ann.recall_at_k``: padding and repeats never count); None when
    fewer than ``at`` neighbours were asked."""
    if truth.shape[1] < at:
        return None
    return recall_at_k([np.asarray(f)[:at] for f in found], truth[:, :at])


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default), in MiB."""
    gc.collect()
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
