"""Measurement core: one run's record, the timing loops, recall, and facts about the machine.

Timing follows faiss's ``RepeatTimer(warmup=1, runs=...)``: warm up on a prefix of the queries,
then time every single query ``repeats`` times and report p50 and p99 over all samples. Recall is
read from the first timed pass, so recall and latency always describe the same searches.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from indexer.ann import recall_at_k

logger = logging.getLogger(__name__)

SearchOne = Callable[[int], np.ndarray]  # query row -> ids found, best first


@dataclass(frozen=True)
class Timing:
    """Latencies of single-query searches and what the first pass found."""

    found: list[np.ndarray]  # per query, (<= k,) int64 ids
    latencies_ms: np.ndarray  # (repeats * nq,) float64

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
    """One JSON line: a system at one operating point on one dataset."""

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
    threads: dict[str, Any]
    dataset: str
    truth: str  # the exact search recall is measured against: "ip" (cosine) or "l2"
    latency_samples: int
    load_avg_1m: float
    git_sha: str
    machine: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    pareto: bool = False

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("recall_at_10", "recall_at_100"):
            if out[key] is not None:
                out[key] = round(out[key], 5)
        for key in ("p50_ms", "p99_ms", "qps", "single_qps", "build_s", "rss_mb"):
            out[key] = round(out[key], 4)
        return out


def time_queries(search: SearchOne, nq: int, *, warmup: int, repeats: int) -> Timing:
    """Warm up, then time each of ``nq`` single-query searches ``repeats`` times.

    Args:
        search: runs query row i and returns the ids found, best first.
        nq: queries to time (rows 0..nq-1).
        warmup: queries run once, untimed, first (caches, lazy initialisation, JIT-like paths).
        repeats: timed passes over all nq queries.
    """
    for i in range(min(warmup, nq)):
        search(i)
    found: list[np.ndarray] = []
    lat = np.empty(repeats * nq, dtype=np.float64)
    for r in range(repeats):
        for i in range(nq):
            t0 = time.perf_counter()
            ids = search(i)
            lat[r * nq + i] = time.perf_counter() - t0
            if r == 0:
                found.append(np.asarray(ids, dtype=np.int64))
    return Timing(found=found, latencies_ms=lat * 1000.0)


def concurrent_qps(search: SearchOne, nq: int, *, threads: int) -> float:
    """Throughput of ``threads`` callers, each issuing single queries, over rows 0..nq-1."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
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


def git_sha(repo: Path | None = None) -> str:
    """HEAD of the repository, with ``-dirty`` when the work tree has uncommitted changes."""
    try:
        cwd = str(repo) if repo else None
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and software versions of this machine."""
    import faiss

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "host": platform.node(),
    }


def load_avg() -> tuple[float, float, float]:
    return os.getloadavg()
