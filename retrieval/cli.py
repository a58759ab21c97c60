"""The ``adindex`` command: one entry point whose command groups load on demand.

Each group (``indexer.cli``: build, sample; ``retrieval.serve_cli``: serve;
``retrieval.root_cli``: root;
``retrieval.client_cli``: retrieve, info; ``retrieval.admin_cli``: pause, resume, delete,
upsert, reload; ``retrieval.demo``: demo) adds its flags only when its command runs, so a
client command such as ``adindex pause`` imports neither FAISS nor torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from indexer.records import CatalogError

Handler = Callable[[argparse.Namespace], int]

# command -> the module whose COMMANDS registers it, in the order --help lists them
GROUPS = {
    "demo": "retrieval.demo",
    "build": "indexer.cli",
    "serve": "retrieval.serve_cli",
    "root": "retrieval.root_cli",
    "retrieve": "retrieval.client_cli",
    "info": "retrieval.client_cli",
    "pause": "retrieval.admin_cli",
    "resume": "retrieval.admin_cli",
    "delete": "retrieval.admin_cli",
    "upsert": "retrieval.admin_cli",
    "reload": "retrieval.admin_cli",
    "sample": "indexer.cli",
}
HELP = {  # one line per command for ``adindex --help`` (the modules hold the flags)
    "demo": "build the sample index, serve it, retrieve for sample users",
    "build": "embed a catalog and publish a new index version",
    "serve": "serve the newest index version over gRPC (one shard of it with --shard)",
    "root": "serve a sharded version: fan out to its leaves, merge, degrade gracefully",
    "retrieve": "ask a running server for candidates",
    "info": "describe an index version (local) or what a server serves",
    "pause": "stop serving ads by ad, campaign or advertiser id (admin)",
    "resume": "serve them again (admin)",
    "delete": "remove ads without a rebuild (admin)",
    "upsert": "add or replace ads from a catalog file, without a rebuild (admin)",
    "reload": "make the server load the newest published version now (admin)",
    "sample": "write a deterministic sample catalog and sample users",
}
EXIT_INVALID_CATALOG = 2
EPILOG = """examples:
  adindex demo
  adindex build --catalog ads.jsonl --out ./index
  adindex serve --index ./index
  adindex retrieve --text "cozy autumn living room ideas" --k 10
  adindex info --index ./index
  adindex bench --dataset sample          (recall/latency side by side; docs/benchmarks.md)
"""


def parser(command: str | None) -> argparse.ArgumentParser:
    """The ``adindex`` parser; only ``command``'s module is imported to add its flags."""
    p = argparse.ArgumentParser(
        prog="adindex",
        description="Embedding-based ad candidate retrieval: build FAISS IVF-PQ indexes from "
        "ad catalogs and serve them over gRPC.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in GROUPS:
        sp = sub.add_parser(name, help=HELP[name], description=HELP[name])
        if name == command:
            module = importlib.import_module(GROUPS[name])
            add_flags = module.COMMANDS[name]
            sp.set_defaults(handler=add_flags(sp))
    sub.add_parser(
        "bench",
        help="recall/latency against exact search, raw FAISS, hnswlib, LanceDB "
        "(source checkout with '.[bench]'; 'adindex bench --help' lists its flags)",
        add_help=False,
    )
    return p


def cmd_bench(argv: Sequence[str]) -> int:
    """``adindex bench ...`` = ``python -m benchmarks.recall_latency ...`` (docs/benchmarks.md)."""
    root = Path(__file__).resolve().parents[1]
    if (root / "benchmarks" / "recall_latency.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))  # benchmarks/ lives in the source checkout, not the wheel
    try:  # imported by name: benchmarks/ is not part of the installed packages
        bench = importlib.import_module("benchmarks.recall_latency")
    except ImportError as exc:
        print(
            f"error: the benchmark suite needs a source checkout and pip install '.[bench]': {exc}",
            file=sys.stderr,
        )
        return 1
    return int(bench.main(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its flags are the benchmark's own
        return cmd_bench(argv[1:])
    command = next((a for a in argv if not a.startswith("-")), None)
    args = parser(command if command in GROUPS else None).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return int(handler(args))
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID_CATALOG
    except Exception as exc:
        grpc = sys.modules.get("grpc")  # loaded by the client commands only
        if grpc is not None and isinstance(exc, grpc.RpcError):
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        if isinstance(exc, RuntimeError | OSError | ValueError):  # ArtifactError, BuildError, ...
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
