"""What the served-recall experiments share (``recall_control.py``, ``outside_check.py``): the
real ``adindex serve`` in a subprocess with its JSON log kept and its metrics scraped, the
server's thread counts as rows record them, and recall at given points searched in process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def adindex() -> list[str]:
    """The ``adindex`` command of this Python environment."""
    exe = Path(sys.executable).with_name("adindex")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "retrieval.cli"]


class Server:
    """``adindex serve`` at its defaults (plus ``extra``) in a subprocess; its JSON log lines are
    kept, and the constructor returns once it serves."""

    def __init__(self, root: Path, extra: Sequence[str] = (), timeout_s: float = 600.0):
        cmd = [*adindex(), "serve", "--index", str(root), "--port", "0", "--metrics-port", "0",
               "--log-format", "json", *extra]  # fmt: skip
        self.argv = cmd[1:]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: list[dict[str, Any]] = []
        self.port = self.metrics_port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout_s) or self.proc.poll() is not None:
            self.stop()
            tail = "\n".join(str(ln.get("message")) for ln in self.lines[-10:])
            raise RuntimeError(f"adindex serve did not start serving:\n{tail}")

    def _read(self) -> None:
        if self.proc.stderr is None:
            return
        for text in self.proc.stderr:
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                line = {"message": text.rstrip()}
            self.lines.append(line)
            msg = str(line.get("message", ""))
            if m := re.search(r"Listening on 127\.0\.0\.1:(\d+)", msg):
                self.port = int(m.group(1))
            if m := re.search(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics", msg):
                self.metrics_port = int(m.group(1))
            if msg.startswith("Serving index"):
                self._ready.set()
        self._ready.set()  # exited: the constructor reports it

    def metrics(self) -> dict[str, float]:
        """Every ``adindex_`` series now, by its full name with labels."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("adindex_"):
                series, _, value = line.rpartition(" ")
                out[series] = float(value)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self._reader.join(timeout=5)


def series_sum(metrics: dict[str, float], prefix: str) -> float:
    """The sum of every series whose name (with labels) starts with ``prefix``."""
    return sum(v for s, v in metrics.items() if s.startswith(prefix))


def server_threads() -> dict[str, Any]:
    """``adindex serve`` at its defaults (``ServerConfig``), one client calling it."""
    from retrieval.server import ServerConfig

    config = ServerConfig()
    return {"server_omp": config.omp_threads, "server_alone_omp": config.alone_omp_threads,
            "clients": 1, "how": "adindex serve at its defaults; one client, one call at a time"}  # fmt: skip


def offline_recall(
    root: Path, xq: np.ndarray, truth: np.ndarray, points: set[tuple[int, int]], k: int
) -> dict[tuple[int, int], float]:
    """recall@k of ``xq`` at each (nprobe, k_factor), searched in process as the server does."""
    from indexer.ann import omp_threads, recall_at_k
    from indexer.artifact import load
    from retrieval.controller import SearchPoint
    from retrieval.searcher import Searcher

    searcher = Searcher(load(root))
    out = {}
    with omp_threads(1):
        for n, f in sorted(points):
            hits = searcher.search_batch(xq, k, point=SearchPoint(n, f))
            out[(n, f)] = recall_at_k([h.ids for h in hits], truth)
    return out
