"""``adindex root``: its flags and its handler (every default read from :class:`RootConfig`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from retrieval.admin_cli import TOKEN_ENV, admin_token
from retrieval.listener_flags import add_listener_flags
from retrieval.root import RootConfig, serve_root

Handler = Callable[[argparse.Namespace], int]


def _root_flags(p: argparse.ArgumentParser) -> Handler:
    d = RootConfig  # dataclass defaults live on the class
    add = p.add_argument
    add(
        "--leaves",
        required=True,
        help="comma-separated host:port of the leaves, shard 0 first (adindex serve --shard I)",
    )
    add(
        "--quorum",
        type=int,
        help="leaves that must answer for health SERVING; fewer still get calls answered, "
        "marked partial (default: a majority)",
    )
    add(
        "--leaf-timeout-ms",
        type=float,
        default=d.default_timeout_s * 1e3,
        help="deadline of each leaf call when the caller sets none (default: %(default)s)",
    )
    add(
        "--leaf-deadline-share",
        type=float,
        default=d.leaf_deadline_share,
        help="share of the caller's remaining time given to the leaf calls; the rest is for "
        "the merge and the reply (default: %(default)s)",
    )
    add(
        "--poll-interval-s",
        type=float,
        default=d.poll_s,
        help="how often each leaf's status and versions are read (default: %(default)s)",
    )
    add(
        "--admin-token-file",
        type=Path,
        help=f"require this bearer token on admin calls, and send it to the leaves (default: "
        f"${TOKEN_ENV}; unset = no token)",
    )
    add(
        "--leaf-root-cert",
        type=Path,
        help="PEM certificate(s) to trust for the leaves: talk TLS to them (leaves started "
        "with --tls-cert; default: plaintext)",
    )
    add("--leaf-server-name", help="name the leaves' certificates carry, when not their host")
    add_listener_flags(p, d)
    return cmd_root


def cmd_root(args: argparse.Namespace) -> int:
    if args.log_format == "json":
        from retrieval.serve_cli import use_json_logs  # (it imports the leaf server's modules)

        use_json_logs()
    serve_root(
        RootConfig(
            leaves=tuple(a.strip() for a in args.leaves.split(",") if a.strip()),
            host=args.host,
            port=args.port,
            quorum=args.quorum,
            default_timeout_s=args.leaf_timeout_ms / 1e3,
            leaf_deadline_share=args.leaf_deadline_share,
            poll_s=args.poll_interval_s,
            admin_token=admin_token(args.admin_token_file),
            grace_s=args.grace_s,
            metrics_port=args.metrics_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            leaf_root_cert=args.leaf_root_cert,
            leaf_server_name=args.leaf_server_name,
        )
    )
    return 0


# command -> adds its flags to the parser and returns its handler (help: retrieval.cli.HELP)
COMMANDS: dict[str, Callable[[argparse.ArgumentParser], Handler]] = {
    "root": _root_flags,
}
