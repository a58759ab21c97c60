"""``adindex retrieve`` and ``adindex info``: ask a server, or read a version's manifest."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from retrieval.client import DEFAULT_TARGET, RetrievalClient

Handler = Callable[[argparse.Namespace], int]


def _retrieve_flags(p: argparse.ArgumentParser) -> Handler:
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="text describing the user; embedded locally with --model")
    q.add_argument(
        "--embedding-file", type=Path, help="user embedding: .npy, or a JSON array of floats"
    )
    p.add_argument("--server", default=DEFAULT_TARGET, help="host:port (default: %(default)s)")
    p.add_argument("--k", type=int, default=10, help="candidates wanted (default: %(default)s)")
    p.add_argument(
        "--nprobe", type=int, default=0, help="lists to probe (default: the index's own)"
    )
    p.add_argument(
        "--model", type=Path, help="local model for --text (default: installed all-MiniLM-L6-v2)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return cmd_retrieve


def _read_embedding(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.asarray(np.load(path), dtype=np.float32).ravel()
    return np.asarray(json.loads(path.read_text(encoding="utf-8")), dtype=np.float32).ravel()


def cmd_retrieve(args: argparse.Namespace) -> int:
    if args.text is not None:
        from indexer.embedding import SentenceTransformerEmbedder

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
    sharded = {}
    if response.shard_count:  # through adindex root (or from one leaf)
        sharded = {"shards_answered": list(response.shards_answered), "partial": response.partial}
        rows = [{**r, "shard": c.shard} for r, c in zip(rows, response.candidates, strict=True)]
    if args.json:
        out = {"index_version": response.index_version, **sharded, "candidates": rows}
        print(json.dumps(out))
        return 0
    print(f"index {response.index_version}, nprobe {response.nprobe}", end="")
    if sharded:
        answered = ", ".join(map(str, response.shards_answered))
        partial = " (PARTIAL: some shards did not answer)" if response.partial else ""
        print(f", shards {answered} of {response.shard_count}{partial}", end="")
    print()
    for rank, r in enumerate(rows, 1):
        print(
            f"{rank:>3}  {r['score']:.4f}  {r['ad_id']:<16} {r['advertiser_id']:<12} {r['campaign_id']}"
        )
    return 0


def _info_flags(p: argparse.ArgumentParser) -> Handler:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--index", type=Path, help="artifact root or version directory")
    g.add_argument("--server", default=DEFAULT_TARGET, help="host:port (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    return cmd_info


def cmd_info(args: argparse.Namespace) -> int:
    from indexer.artifact import LATEST, list_versions, read_manifest, resolve
    from indexer.manifest import Manifest
    from indexer.report import describe

    if args.index is not None:
        version_dir = resolve(args.index)
        manifest = read_manifest(version_dir)
        others = list_versions(args.index) if (args.index / LATEST).exists() else []
        if args.json:
            out = {"path": str(version_dir), "versions": others, "manifest": manifest.to_json()}
            print(json.dumps(out, indent=2))
            return 0
        print(f"path      {version_dir}")
        if others:
            print(f"versions  {', '.join(others)}")
        print(describe(manifest))
        return 0
    with RetrievalClient(args.server) as client:
        info = client.info()
    served = Manifest.loads(info.manifest_json)
    print(json.dumps(served.to_json(), indent=2) if args.json else describe(served))
    return 0


# command -> adds its flags to the parser and returns its handler (help: retrieval.cli.HELP)
COMMANDS: dict[str, Callable[[argparse.ArgumentParser], Handler]] = {
    "retrieve": _retrieve_flags,
    "info": _info_flags,
}
