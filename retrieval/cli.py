"""The ``adindex`` command line: build, serve, retrieve, info, sample, demo."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np

from indexer.artifact import ArtifactError, list_versions, read_manifest, resolve
from indexer.build import BuildConfig, BuildError, RecallBelowTarget, build
from indexer.catalog import DEFAULT_TEXT_FIELDS, CatalogError
from indexer.report import describe
from retrieval.admin_cli import COMMANDS as ADMIN_COMMANDS
from retrieval.admin_cli import TOKEN_ENV, add_admin_commands, admin_token
from retrieval.searcher import DEFAULT_EXACT_MAX_ROWS
from retrieval.serve_cli import add_serving_flags, serving_options
from retrieval.server import DEFAULT_PORT, ServerConfig, serve

logger = logging.getLogger("adindex")

EPILOG = """examples:
  adindex demo
  adindex build --catalog ads.jsonl --out ./index
  adindex serve --index ./index
  adindex retrieve --text "cozy autumn living room ideas" --k 10
  adindex info --index ./index
  adindex bench --dataset sample          (recall/latency side by side; docs/benchmarks.md)
"""


def _add_build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="embed a catalog and publish a new index version")
    p.add_argument(
        "--catalog", type=Path, required=True, help="ad catalog: .jsonl, .csv or .parquet"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="artifact root; versions land in OUT/<version>, OUT/LATEST points at the newest",
    )
    p.add_argument(
        "--index-factory",
        help="FAISS factory string, e.g. 'IVF1024,PQ96x4fs,RFlat' (default: chosen from corpus "
        "size, dimension and --max-memory-mb; see docs/index-parameters.md)",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="local sentence-transformers model directory (default: installed all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--nprobe",
        type=int,
        help="default lists probed per query (default: the cheapest measured to reach the target)",
    )
    p.add_argument(
        "--k-factor",
        type=int,
        help="re-ranking depth: re-score k * K_FACTOR PQ candidates exactly (default: the "
        "cheapest measured to reach the target)",
    )
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="publish only if recall@K against exact search reaches this (default: %(default)s)",
    )
    p.add_argument(
        "--recall-k", type=int, default=100, help="K of the recall target (default: %(default)s)"
    )
    p.add_argument(
        "--max-memory-mb",
        type=float,
        help="RAM budget for the index (codes, re-ranking stage, ids, centroids); picks a "
        "smaller re-ranking stage or PQ to fit (default: no limit)",
    )
    p.add_argument(
        "--queries",
        type=Path,
        help="held-out queries for the recall measurement: .npy of shape (nq, d) float32, e.g. "
        "user embeddings; up to 500 are used (default: a sample built from the catalog)",
    )
    p.add_argument(
        "--allow-below-target",
        action="store_true",
        help="publish even if the target is not reached (the manifest says below_target)",
    )
    p.add_argument(
        "--eval-budget-s",
        type=float,
        default=40.0,
        help="time for the recall/latency sweep; a sweep cut short is marked truncated "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--text-fields",
        default=",".join(DEFAULT_TEXT_FIELDS),
        help="record fields embedded, in order (default: %(default)s)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid records and write them to rejects.jsonl in the version instead of failing",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="FAISS threads for training (default: all cores)"
    )
    p.add_argument(
        "--seed", type=int, default=1234, help="seed for the training sample (default: %(default)s)"
    )
    p.add_argument(
        "--snapshot-time",
        type=datetime.fromisoformat,
        help="when the catalog was exported (ISO 8601, e.g. 2026-11-25T03:00:00+00:00); admin "
        "changes acknowledged after it are replayed on the new version (default: the file's mtime)",
    )


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve the newest index version over gRPC")
    p.add_argument(
        "--index",
        type=Path,
        required=True,
        help="artifact root (serves LATEST) or one version directory",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port (default: %(default)s; 0 picks a free one)",
    )
    p.add_argument(
        "--max-k",
        type=int,
        default=1000,
        help="largest k a request may ask for (default: %(default)s)",
    )
    p.add_argument(
        "--admin-token-file",
        type=Path,
        help=f"require this bearer token on admin calls (default: ${TOKEN_ENV}; unset = no token)",
    )
    p.add_argument(
        "--exact-max-rows",
        type=int,
        default=DEFAULT_EXACT_MAX_ROWS,
        help="filters leaving at most this many eligible ads are scanned exactly (default: %(default)s)",
    )
    p.add_argument(
        "--model", type=Path, help="model for embedding upserted ad text (default: the index's own)"
    )
    p.add_argument(
        "--workers", type=int, default=16, help="gRPC worker threads (default: %(default)s)"
    )
    add_serving_flags(p)


def _add_client(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("retrieve", help="ask a running server for candidates")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="text describing the user; embedded locally with --model")
    q.add_argument(
        "--embedding-file", type=Path, help="user embedding: .npy, or a JSON array of floats"
    )
    p.add_argument(
        "--server", default=f"127.0.0.1:{DEFAULT_PORT}", help="host:port (default: %(default)s)"
    )
    p.add_argument("--k", type=int, default=10, help="candidates wanted (default: %(default)s)")
    p.add_argument(
        "--nprobe", type=int, default=0, help="lists to probe (default: the index's own)"
    )
    p.add_argument(
        "--model", type=Path, help="local model for --text (default: installed all-MiniLM-L6-v2)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser("info", help="describe an index version (local) or what a server serves")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--index", type=Path, help="artifact root or version directory")
    g.add_argument(
        "--server", default=f"127.0.0.1:{DEFAULT_PORT}", help="host:port (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def _add_sample(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sample", help="write a deterministic sample catalog and sample users")
    p.add_argument(
        "--out", type=Path, required=True, help="directory for catalog.jsonl and users.jsonl"
    )
    p.add_argument("--ads", type=int, default=3000, help="number of ads (default: %(default)s)")
    p.add_argument("--users", type=int, default=20, help="number of users (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="seed (default: %(default)s)")
    p = sub.add_parser("demo", help="build the sample index, serve it, retrieve for sample users")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(".demo"),
        help="where the sample and index go (default: %(default)s)",
    )
    p.add_argument(
        "--ads",
        type=int,
        default=None,
        help="sample catalog size (default: 3000, about 30 s of embedding)",
    )
    p.add_argument("--users", type=int, default=4, help="sample users (default: %(default)s)")
    p.add_argument("--k", type=int, default=8, help="candidates per user (default: %(default)s)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adindex",
        description="Embedding-based ad candidate retrieval: build FAISS IVF-PQ indexes from ad catalogs and serve them over gRPC.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(sub)
    _add_serve(sub)
    _add_client(sub)
    _add_sample(sub)
    add_admin_commands(sub)
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
    try:  # imported by name: benchmarks/ is not part of the typed, installed packages
        bench = importlib.import_module("benchmarks.recall_latency")
    except ImportError as exc:
        print(
            f"error: the benchmark suite needs a source checkout and pip install '.[bench]': {exc}",
            file=sys.stderr,
        )
        return 1
    return int(bench.main(list(argv)))


def cmd_build(args: argparse.Namespace) -> int:
    kwargs = {"threads": args.threads} if args.threads else {}
    config = BuildConfig(
        catalog=args.catalog,
        out=args.out,
        model=args.model,
        index_factory=args.index_factory,
        nprobe=args.nprobe,
        k_factor=args.k_factor,
        text_fields=tuple(f.strip() for f in args.text_fields.split(",") if f.strip()),
        skip_invalid=args.skip_invalid,
        seed=args.seed,
        snapshot_at=args.snapshot_time,
        target_recall=args.target_recall,
        recall_k=args.recall_k,
        max_memory_mb=args.max_memory_mb,
        queries=args.queries,
        allow_below_target=args.allow_below_target,
        eval_budget_s=args.eval_budget_s,
        **kwargs,
    )
    try:
        result = build(config)
    except RecallBelowTarget as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    m = result.manifest
    q = m["quality"]
    print(
        f"published {m['version']}: {m['counts']['ads']} ads ({m['counts']['paused']} paused, {m['counts']['rejected']} rejected), {m['index']['factory']}, nprobe {m['search']['nprobe']}, k_factor {m['search']['k_factor']}"
    )
    print(
        f"  recall@{q['recall_k']} {q['chosen']['recall']:.3f} (target {q['target_recall']}"
        f"{', BELOW TARGET' if q['below_target'] else ''}), {q['chosen']['p50_ms']:.2f} ms p50"
    )
    print(f"  {result.version_dir}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
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
            **serving_options(args),
        )
    )
    return 0


def _read_embedding(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.asarray(np.load(path), dtype=np.float32).ravel()
    return np.asarray(json.loads(path.read_text(encoding="utf-8")), dtype=np.float32).ravel()


def cmd_retrieve(args: argparse.Namespace) -> int:
    from indexer.embedding import SentenceTransformerEmbedder
    from retrieval.client import RetrievalClient

    if args.text is not None:
        xq = SentenceTransformerEmbedder(args.model).encode([args.text])[0]
    else:
        xq = _read_embedding(args.embedding_file)
    with RetrievalClient(args.server) as client:
        response = client.retrieve(xq, args.k, nprobe=args.nprobe)
    rows = [
        {
            "ad_id": c.ad_id,
            "advertiser_id": c.advertiser_id,
            "campaign_id": c.campaign_id,
            "score": round(c.score, 4),
        }
        for c in response.candidates
    ]
    if args.json:
        print(json.dumps({"index_version": response.index_version, "candidates": rows}))
        return 0
    print(f"index {response.index_version}, nprobe {response.nprobe}")
    for rank, r in enumerate(rows, 1):
        print(
            f"{rank:>3}  {r['score']:.4f}  {r['ad_id']:<16} {r['advertiser_id']:<12} {r['campaign_id']}"
        )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if args.index is not None:
        version_dir = resolve(args.index)
        manifest = read_manifest(version_dir)
        others = list_versions(args.index) if (args.index / "LATEST").exists() else []
        if args.json:
            print(
                json.dumps(
                    {"path": str(version_dir), "versions": others, "manifest": manifest}, indent=2
                )
            )
            return 0
        print(f"path      {version_dir}")
        if others:
            print(f"versions  {', '.join(others)}")
        print(describe(manifest))
        return 0
    from retrieval.client import RetrievalClient

    with RetrievalClient(args.server) as client:
        info = client.info()
    manifest = json.loads(info.manifest_json)
    print(json.dumps(manifest, indent=2) if args.json else describe(manifest))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from indexer.sample import write_sample

    catalog, users = write_sample(args.out, n_ads=args.ads, n_users=args.users, seed=args.seed)
    print(f"wrote {catalog} and {users}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from retrieval.demo import DEFAULT_DEMO_ADS, DemoConfig, run_demo

    run_demo(
        DemoConfig(
            workdir=args.workdir, n_ads=args.ads or DEFAULT_DEMO_ADS, n_users=args.users, k=args.k
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its flags are the benchmark's own
        return cmd_bench(argv[1:])
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    commands = {
        "build": cmd_build,
        "serve": cmd_serve,
        "retrieve": cmd_retrieve,
        "info": cmd_info,
        "sample": cmd_sample,
        "demo": cmd_demo,
        **ADMIN_COMMANDS,
    }
    try:
        return int(commands[args.command](args))
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BuildError, ArtifactError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
