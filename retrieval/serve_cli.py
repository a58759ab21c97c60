"""``adindex serve``: its flags (limits, batching, metrics, TLS, logs) and its handler.

Every default shown by ``--help`` is read from the config dataclasses (``ServerConfig``,
``BatchConfig``, ``ShadowConfig``, ``ControllerConfig``), the one place each is stated.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval.admin_cli import TOKEN_ENV, admin_token
from retrieval.batching import BatchConfig
from retrieval.controller import ControllerConfig
from retrieval.interests import InterestConfig
from retrieval.listener_flags import add_listener_flags
from retrieval.server import ServerConfig, serve
from retrieval.shadow import ShadowConfig
from retrieval.threads import default_alone_threads

Handler = Callable[[argparse.Namespace], int]

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


def _recall_control_flags(p: argparse.ArgumentParser) -> None:
    c, s = ControllerConfig, ShadowConfig
    add = p.add_argument
    add(
        "--recall-control",
        type=_on_off,
        default=c.enabled,
        metavar="on|off",
        help="move each version's default nprobe / k_factor so that shadow recall on live calls "
        f"holds its target recall (default: {'on' if c.enabled else 'off'}; off serves the "
        "build's point; docs/serving.md)",
    )
    add(
        "--max-nprobe",
        type=int,
        default=c.max_nprobe,
        help="largest default nprobe the controller may choose (default: %(default)s = nlist)",
    )
    add(
        "--max-k-factor",
        type=int,
        default=c.max_k_factor,
        help="largest default k_factor the controller may choose (default: %(default)s)",
    )
    add(
        "--max-search-ms",
        type=float,
        default=c.max_search_ms,
        help="the controller never moves to a point measured slower than this per query on one "
        "thread; 0 = no budget (default: %(default)s)",
    )
    add(
        "--control-min-samples",
        type=int,
        default=c.min_samples,
        help="sampled calls at the current point before the controller moves it "
        "(default: %(default)s; lowering waits for --control-settle-samples)",
    )
    add(
        "--control-settle-samples",
        type=int,
        default=c.settle_samples,
        help="sampled calls at a point before it is settled: shadow goes back to --shadow-rate, "
        "and the controller may lower it (default: %(default)s)",
    )
    add(
        "--unsettled-shadow-rate",
        type=float,
        default=s.unsettled_sample_rate,
        help="share of default-point calls sampled while a version's point is unsettled "
        "(default: %(default)s)",
    )
    add(
        "--unsettled-shadow-duty",
        type=float,
        default=s.unsettled_max_duty,
        help="share of one core shadow recall may use meanwhile (default: %(default)s; "
        f"settled: {s.max_duty})",
    )


def _interest_flags(p: argparse.ArgumentParser) -> None:
    d = InterestConfig
    add = p.add_argument
    add(
        "--max-interests",
        type=int,
        default=d.max_interests,
        help="interests per Retrieve (also the most a request may keep from engaged pins) "
        "(default: %(default)s)",
    )
    add(
        "--max-engaged-pins",
        type=int,
        default=d.max_engaged_pins,
        help="engaged pins per Retrieve (default: %(default)s)",
    )
    add(
        "--pin-interests",
        type=int,
        default=d.pin_interests,
        help="interests kept from engaged pins when a request does not say (default: %(default)s)",
    )
    add(
        "--pin-half-life-days",
        type=float,
        default=d.half_life_s / 86_400,
        help="an engagement this much older than a request's newest weighs half (default: "
        "%(default)s)",
    )


def _interests(args: argparse.Namespace) -> InterestConfig:
    return InterestConfig(
        max_interests=args.max_interests,
        max_engaged_pins=args.max_engaged_pins,
        pin_interests=args.pin_interests,
        half_life_s=args.pin_half_life_days * 86_400,
    )


def _serve_flags(p: argparse.ArgumentParser) -> Handler:
    d = ServerConfig  # dataclass defaults live on the class
    add = p.add_argument
    add(
        "--index",
        type=Path,
        required=True,
        help="artifact root (serves LATEST, and each version published later) or one version directory",
    )
    add(
        "--shard",
        type=int,
        help="serve shard I of a sharded version (adindex build --shards N) as a leaf behind "
        "adindex root, which switches its versions (default: the index is not sharded)",
    )
    add(
        "--release-after-s",
        type=float,
        default=d.release_after_s,
        help="a leaf keeps the version it was switched from this long, for calls other roots "
        "still pin to it (default: %(default)s)",
    )
    add(
        "--max-k",
        type=int,
        default=d.max_k,
        help="largest k a request may ask for (default: %(default)s)",
    )
    add(
        "--admin-token-file",
        type=Path,
        help=f"require this bearer token on admin calls (default: ${TOKEN_ENV}; unset = no token)",
    )
    add(
        "--exact-max-rows",
        type=int,
        default=d.exact_max_rows,
        help="filters leaving at most this many eligible ads are scanned exactly (default: %(default)s)",
    )
    add(
        "--model",
        type=Path,
        help="model for embedding upserted ad text and context pin text (default: the index's own)",
    )
    add("--workers", type=int, default=d.workers, help="gRPC worker threads (default: %(default)s)")
    add(
        "--alone-threads",
        type=int,
        default=default_alone_threads(),
        help="OpenMP threads for a search that runs alone while searches have rarely overlapped "
        "lately; other searches get one each (default: %(default)s, at most 2 and the cores "
        "available; 1 = off). Batched searches use --batch-threads",
    )
    add(
        "--max-active-calls",
        type=int,
        default=d.max_active_calls,
        help="calls queued + running; more get RESOURCE_EXHAUSTED (default: %(default)s)",
    )
    add(
        "--watch-interval-s",
        type=float,
        default=d.index_poll_s,
        help="how often LATEST is checked for a new version; 0 = only on Reload (default: %(default)s)",
    )
    add(
        "--shadow-rate",
        type=float,
        default=ShadowConfig.sample_rate,
        help="share of calls re-run exactly for shadow recall; 0 = off (default: %(default)s)",
    )
    add_listener_flags(p, d)
    _batching_flags(p)
    _recall_control_flags(p)
    _interest_flags(p)
    return cmd_serve


def cmd_serve(args: argparse.Namespace) -> int:
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
    serve(
        ServerConfig(
            host=args.host,
            port=args.port,
            index=args.index,
            max_k=args.max_k,
            workers=args.workers,
            admin_token=admin_token(args.admin_token_file),
            exact_max_rows=args.exact_max_rows,
            model=args.model,
            alone_omp_threads=args.alone_threads,
            batching=batching,
            max_active_calls=args.max_active_calls,
            index_poll_s=args.watch_interval_s,
            grace_s=args.grace_s,
            metrics_port=args.metrics_port,
            shadow=ShadowConfig(
                sample_rate=args.shadow_rate,
                unsettled_sample_rate=args.unsettled_shadow_rate,
                unsettled_max_duty=args.unsettled_shadow_duty,
            ),
            recall_control=ControllerConfig(
                enabled=args.recall_control,
                max_nprobe=args.max_nprobe,
                max_k_factor=args.max_k_factor,
                max_search_ms=args.max_search_ms,
                min_samples=args.control_min_samples,
                settle_samples=args.control_settle_samples,
            ),
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            interests=_interests(args),
            shard=args.shard,
            release_after_s=args.release_after_s,
        )
    )
    return 0


# command -> adds its flags to the parser and returns its handler (help: retrieval.cli.HELP)
COMMANDS: dict[str, Callable[[argparse.ArgumentParser], Handler]] = {
    "serve": _serve_flags,
}
