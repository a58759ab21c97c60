"""Where and how a measurement was made: the facts every result row carries.

A row in ``docs/results/*.jsonl`` must stand on its own (docs/benchmarks.md, "How figures are
made"): which code (git sha), which machine, how busy it was (1-minute load average), when, and
the command that produced it. Every benchmark adds ``provenance()`` to each row it writes.

Light on purpose (no FAISS, no numpy): the load tool's client processes import it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def git_sha(repo: Path | None = None) -> str:
    """HEAD of the repository (12 hex digits), with ``-dirty`` when tracked files changed."""
    cwd = str(repo or REPO)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True, cwd=cwd, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, cwd=cwd, timeout=10,
        ).stdout.strip()  # fmt: skip
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


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


@cache
def machine() -> dict[str, Any]:
    """CPU model, cores, memory and the versions of the software that was measured."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        mem_gb: float | None = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        mem_gb = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_gb": mem_gb,
        "python": platform.python_version(),
        "faiss": _version("faiss-cpu"),
        "host": platform.node(),
    }


def load_avg() -> tuple[float, float, float]:
    return os.getloadavg()


def command(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command line that is running, as a user would type it (``python -m MODULE ...``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if module:
        head = ["python", "-m", module]
    else:
        script = Path(sys.argv[0]).resolve()
        with contextlib.suppress(ValueError):  # outside the repository: the absolute path
            script = script.relative_to(REPO)
        head = ["python", str(script)]
    return shlex.join(head + [str(a) for a in args])


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance(cmd: str) -> dict[str, Any]:
    """The fields every result row carries: command, git sha, machine, load average, time."""
    return {
        "command": cmd,
        "git_sha": git_sha(),
        "machine": machine(),
        "load_avg_1m": round(load_avg()[0], 2),
        "time_utc": utc_now(),
    }
