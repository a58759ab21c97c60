"""``adindex retrieve`` and ``adindex info``: ask a server, or read a version's manifest."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from retrieval.client import DEFAULT_TARGET, RetrievalClient, engaged_pin
from retrieval.v1 import retrieval_pb2

Handler = Callable[[argparse.Namespace], int]


def _retrieve_flags(p: argparse.ArgumentParser) -> Handler:
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="text describing the user; embedded locally with --model")
    q.add_argument(
        "--embedding-file", type=Path, help="user embedding: .npy, or a JSON array of floats"
    )
    q.add_argument(
        "--interests-file",
        type=Path,
        help="several interests: .npy of shape (m, d) (equal weights), or JSON "
        '[{"embedding": [...], "weight": 2.0}, ...] (docs/interests.md)',
    )
    q.add_argument(
        "--pins",
        help="pin ids the user engaged with, comma-separated (optionally id@unix_seconds); the "
        "server clusters them into interests (index built with --pins)",
    )
    q.add_argument("--pin", help="ads for this pin (context), by pin id")
    q.add_argument("--pin-text", help="ads for a pin with this text, embedded by the server")
    p.add_argument(
        "--max-interests",
        type=int,
        default=0,
        help="with --pins: interests kept at most (default: the server's)",
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


def _read_interests(path: Path) -> tuple[np.ndarray, list[float]]:
    """(m, d) embeddings and their weights from .npy (equal weights) or JSON."""
    if path.suffix == ".npy":
        xq = np.asarray(np.load(path), dtype=np.float32)
        return xq.reshape(len(xq), -1), []
    items = json.loads(path.read_text(encoding="utf-8"))
    xq = np.array([item["embedding"] for item in items], dtype=np.float32)
    return xq, [float(item.get("weight", 1.0)) for item in items]


def _engaged(text: str) -> list[retrieval_pb2.EngagedPin]:
    pins = []
    for item in (t.strip() for t in text.split(",")):
        pin_id, _, at = item.partition("@")
        pins.append(engaged_pin(pin_id, int(at) if at else 0))
    return pins


def _ask(args: argparse.Namespace, client: RetrievalClient) -> retrieval_pb2.RetrieveResponse:
    if args.interests_file is not None:
        xq, weights = _read_interests(args.interests_file)
        return client.retrieve_for(args.k, interests=xq, weights=weights, nprobe=args.nprobe)
    if args.pins is not None:
        pins = _engaged(args.pins)
        return client.retrieve_for(
            args.k, engaged_pins=pins, max_interests=args.max_interests, nprobe=args.nprobe
        )
    if args.pin is not None or args.pin_text is not None:
        return client.retrieve_for(
            args.k, context_pin_id=args.pin or "", context_pin_text=args.pin_text or "",
            nprobe=args.nprobe,
        )  # fmt: skip
    if args.text is not None:
        from indexer.embedding import SentenceTransformerEmbedder

        xq = SentenceTransformerEmbedder(args.model).encode([args.text])[0]
    else:
        xq = _read_embedding(args.embedding_file)
    return client.retrieve(xq, args.k, nprobe=args.nprobe)


def cmd_retrieve(args: argparse.Namespace) -> int:
    with RetrievalClient(args.server) as client:
        response = _ask(args, client)
    rows = [
        {
            "ad_id": c.ad_id,
            "advertiser_id": c.advertiser_id,
            "campaign_id": c.campaign_id,
            "score": round(c.score, 4),
            **({"interests": list(c.interests)} if response.interests else {}),
        }
        for c in response.candidates
    ]
    interests = [
        {
            "weight": round(i.weight, 4),
            "quota": i.quota,
            "contributed": i.contributed,
            **({"pin_ids": list(i.pin_ids)} if i.pin_ids else {}),
        }
        for i in response.interests
    ]
    sharded: dict[str, object] = {}
    if response.shard_count:  # through adindex root (or from one leaf)
        sharded = {"shards_answered": list(response.shards_answered), "partial": response.partial}
        rows = [{**r, "shard": c.shard} for r, c in zip(rows, response.candidates, strict=True)]
    if args.json:
        out: dict[str, object] = {"index_version": response.index_version, **sharded}
        out["candidates"] = rows
        if interests:
            out["interests"] = interests
        if response.unknown_pin_ids:
            out["unknown_pin_ids"] = list(response.unknown_pin_ids)
        print(json.dumps(out))
        return 0
    print(f"index {response.index_version}, nprobe {response.nprobe}", end="")
    if response.shard_count:
        answered = ", ".join(map(str, response.shards_answered))
        partial = " (PARTIAL: some shards did not answer)" if response.partial else ""
        print(f", shards {answered} of {response.shard_count}{partial}", end="")
    print()
    for n, i in enumerate(interests):
        pins = f", pins {', '.join(i['pin_ids'])}" if "pin_ids" in i else ""  # type: ignore[arg-type]
        print(f"interest {n}: weight {i['weight']}, {i['contributed']} of quota {i['quota']}{pins}")
    if response.unknown_pin_ids:
        print(f"unknown pins (skipped): {', '.join(response.unknown_pin_ids)}")
    for rank, r in enumerate(rows, 1):
        found = f"  interests {r['interests']}" if "interests" in r else ""
        print(
            f"{rank:>3}  {r['score']:.4f}  {r['ad_id']:<16} {r['advertiser_id']:<12} "
            f"{r['campaign_id']}{found}"
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
