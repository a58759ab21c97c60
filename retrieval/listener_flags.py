"""Flags every gRPC listener shares (``adindex serve`` and ``adindex root``): where it binds,
TLS, metrics, how long it drains, and its log format. Defaults come from the caller's config
class (``ServerConfig`` or ``RootConfig``), which both carry ``host``, ``port`` and ``grace_s``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_listener_flags(p: argparse.ArgumentParser, defaults: Any) -> None:
    """Add ``--host --port --grace-s --metrics-port --tls-cert --tls-key --log-format``."""
    add = p.add_argument_group(
        "listener", "where it binds, TLS, metrics, draining, logs"
    ).add_argument
    add(
        "--host",
        default=defaults.host,
        help="address to bind (default: %(default)s, loopback only)",
    )
    add(
        "--port",
        type=int,
        default=defaults.port,
        help="port (default: %(default)s; 0 picks a free one)",
    )
    add(
        "--grace-s",
        type=float,
        default=defaults.grace_s,
        help="on SIGTERM, how long in-flight calls may finish (default: %(default)s)",
    )
    add(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (default: off; 0 = a free port)",
    )
    add("--tls-cert", type=Path, help="PEM certificate chain: serve TLS (needs --tls-key)")
    add("--tls-key", type=Path, help="PEM private key for --tls-cert")
    add(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or JSON objects (default: %(default)s)",
    )
