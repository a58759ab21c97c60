"""``adindex serve`` flags for production serving: batching, limits, metrics, TLS, logs.

Kept apart from ``retrieval.cli`` so that module stays a list of commands; ``cli._add_serve``
calls :func:`add_serving_flags` and ``cli.cmd_serve`` passes :func:`serving_options` on to
``ServerConfig``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from retrieval.batching import BatchConfig
from retrieval.shadow import ShadowConfig
from retrieval.threads import available_cores

_STANDARD_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ exception, extra fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        return json.dumps(out, ensure_ascii=False)


def use_json_logs() -> None:
    """Switch every root handler to JSON lines (call after ``logging.basicConfig``)."""
    formatter = JsonFormatter()
    formatter.converter = time.gmtime  # the "Z" in ts
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected 'on' or 'off', got {text!r}")
    return text == "on"


def _batching_flags(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add(
        "--batching",
        type=_on_off,
        default=False,
        metavar="on|off",
        help="gather concurrent unfiltered calls into one FAISS search (default: off; "
        "measured slower at 1M on 2 cores, docs/serving.md)",
    )
    add(
        "--max-batch",
        type=int,
        default=BatchConfig.max_batch,
        help="queries per batched FAISS call (default: %(default)s)",
    )
    add(
        "--max-batch-wait-ms",
        type=float,
        default=BatchConfig.max_wait_s * 1e3,
        help="longest a batch with a free search slot waits for calls on their way (default: %(default)s)",
    )
    add(
        "--batch-searches",
        type=int,
        default=BatchConfig.max_concurrent,
        help="batched FAISS searches running at once; calls arriving meanwhile join the next "
        "batch (default: %(default)s, one per core)",
    )
    add(
        "--batch-threads",
        type=int,
        default=BatchConfig.search_threads,
        help="OpenMP threads one batched FAISS search may use (default: %(default)s)",
    )


def add_serving_flags(p: argparse.ArgumentParser) -> None:
    _batching_flags(p)
    add = p.add_argument
    add(
        "--alone-threads",
        type=int,
        default=min(2, available_cores()),
        help="OpenMP threads for a search that runs alone while searches have rarely overlapped "
        "lately; other searches get one each (default: %(default)s, at most 2 and the cores available; 1 = off). "
        "Batched searches use --batch-threads",
    )
    add(
        "--max-active-calls",
        type=int,
        default=256,
        help="calls queued + running; more get RESOURCE_EXHAUSTED (default: %(default)s)",
    )
    add(
        "--watch-interval-s",
        type=float,
        default=1.0,
        help="how often LATEST is checked for a new version; 0 = only on Reload (default: %(default)s)",
    )
    add(
        "--grace-s",
        type=float,
        default=5.0,
        help="on SIGTERM, how long in-flight calls may finish (default: %(default)s)",
    )
    add(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (default: off; 0 = a free port)",
    )
    add(
        "--shadow-rate",
        type=float,
        default=ShadowConfig.sample_rate,
        help="share of calls re-run exactly for shadow recall; 0 = off (default: %(default)s)",
    )
    add("--tls-cert", type=Path, help="PEM certificate chain: serve TLS (needs --tls-key)")
    add("--tls-key", type=Path, help="PEM private key for --tls-cert")
    add(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or JSON objects (default: %(default)s)",
    )


def serving_options(args: argparse.Namespace) -> dict[str, Any]:
    """ServerConfig fields from the flags added by :func:`add_serving_flags`."""
    if args.log_format == "json":
        use_json_logs()
    batching = (
        BatchConfig(
            max_batch=args.max_batch,
            max_wait_s=args.max_batch_wait_ms / 1e3,
            max_concurrent=args.batch_searches,
            search_threads=args.batch_threads,
        )
        if args.batching
        else None
    )
    return {
        "alone_omp_threads": args.alone_threads,
        "batching": batching,
        "max_active_calls": args.max_active_calls,
        "index_poll_s": args.watch_interval_s,
        "grace_s": args.grace_s,
        "metrics_port": args.metrics_port,
        "shadow": ShadowConfig(sample_rate=args.shadow_rate),
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
    }
