"""``adindex build`` and ``adindex sample``: the indexer's commands.

Registered by ``retrieval.cli`` (the one ``adindex`` entry point) only when one of them runs.
Every default shown by ``--help`` is read from :class:`indexer.build.BuildConfig`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _build_flags(p: argparse.ArgumentParser) -> Handler:
    from indexer.build import BuildConfig

    d = BuildConfig  # dataclass defaults live on the class
    add = p.add_argument
    add(
        "--catalog",
        type=Path,
        required=True,
        help="ad catalog: .jsonl, .csv or .parquet, or a directory of such files (read in "
        "path order as one catalog)",
    )
    add(
        "--out",
        type=Path,
        required=True,
        help="artifact root; versions land in OUT/<version>, OUT/LATEST points at the newest",
    )
    add(
        "--index-factory",
        help="FAISS factory string, e.g. 'IVF1024,PQ96x4fs,RFlat' (default: chosen from corpus "
        "size, dimension and --max-memory-mb; see docs/index-parameters.md)",
    )
    add(
        "--model",
        type=Path,
        help="local sentence-transformers model directory (default: installed all-MiniLM-L6-v2)",
    )
    add(
        "--nprobe",
        type=int,
        help="default lists probed per query (default: the cheapest measured to reach the target)",
    )
    add(
        "--k-factor",
        type=int,
        help="re-ranking depth: re-score k * K_FACTOR PQ candidates exactly (default: the "
        "cheapest measured to reach the target)",
    )
    add(
        "--target-recall",
        type=float,
        default=d.target_recall,
        help="publish only if recall@K against exact search reaches this (default: %(default)s)",
    )
    add(
        "--recall-k",
        type=int,
        default=d.recall_k,
        help="K of the recall target (default: %(default)s)",
    )
    add(
        "--max-memory-mb",
        type=float,
        help="RAM budget for the index (codes, re-ranking stage, ids, centroids); picks a "
        "smaller re-ranking stage or PQ to fit (default: no limit)",
    )
    add(
        "--queries",
        type=Path,
        help="held-out queries for the recall measurement: .npy of shape (nq, d) float32, e.g. "
        f"a sample of real user embeddings; up to {d.max_eval_queries} are used (default: "
        "synthetic users built from the catalog)",
    )
    add(
        "--allow-below-target",
        action="store_true",
        help="publish even if the target is not reached (the manifest says below_target)",
    )
    add(
        "--eval-budget-s",
        type=float,
        default=d.eval_budget_s,
        help="time for the recall/latency sweep; a sweep cut short is marked truncated "
        "(default: %(default)s)",
    )
    add(
        "--text-fields",
        default=",".join(d.text_fields),
        help="record fields embedded, in order (default: %(default)s)",
    )
    add(
        "--pins",
        type=Path,
        help="pins file (.jsonl, .csv or .parquet: pin_id, title, description, optional "
        "embedding) embedded with the ads' model into the version's pin table, for Retrieve "
        "by engaged or context pins (docs/interests.md)",
    )
    add(
        "--pin-text-fields",
        default=",".join(d.pin_text_fields),
        help="pin fields embedded, in order (default: %(default)s)",
    )
    add(
        "--skip-invalid",
        action="store_true",
        help="skip invalid records and write them to rejects.jsonl in the version instead of failing",
    )
    add(
        "--shards",
        type=int,
        help="split the version into N shard indexes by ad id, each served by its own leaf "
        "(adindex serve --shard I) behind adindex root; recall is gated as served, over all "
        "shards (default: one index; docs/serving.md#sharded-serving)",
    )
    add("--threads", type=int, help="FAISS threads for training (default: all cores)")
    add(
        "--seed",
        type=int,
        default=d.seed,
        help="seed for the training sample and the evaluation queries (default: %(default)s)",
    )
    add(
        "--snapshot-time",
        type=datetime.fromisoformat,
        help="when the catalog was exported (ISO 8601, e.g. 2026-11-25T03:00:00+00:00); admin "
        "changes acknowledged after it are replayed on the new version (default: the file's mtime)",
    )
    _engine_flags(p)
    return cmd_build


def _engine_flags(p: argparse.ArgumentParser) -> None:
    from indexer.build import BuildConfig, RayOptions

    d, r = BuildConfig, RayOptions()
    g = p.add_argument_group("where it runs (docs/scale-out.md)")
    add = g.add_argument
    add(
        "--engine",
        choices=("local", "ray"),
        default=d.engine,
        help="local: in this process; ray: read, embed and add on a Ray cluster (pip install "
        "'adindex[ray]'), same checks and artifact (default: %(default)s)",
    )
    add(
        "--ray-address",
        help="join the Ray cluster at this address (as `ray start --head` prints it, or "
        "'auto'); default: start a local Ray for this build and stop it after",
    )
    add(
        "--ray-actors",
        type=int,
        help="embedding actors, each loading the model once (default: one per "
        "--ray-cpus-per-actor CPUs of the cluster)",
    )
    add(
        "--ray-cpus-per-actor",
        type=int,
        default=r.cpus_per_actor,
        help="CPUs per embedding actor, and its embedder's threads (default: %(default)s)",
    )
    add(
        "--embedding-cache",
        type=Path,
        help="directory of the embedding cache, reused by later builds: only new or changed "
        "texts are embedded (default: OUT/embedding-cache)",
    )
    add(
        "--no-embedding-cache",
        action="store_true",
        help="embed every text and keep nothing",
    )


def _engine_config(args: argparse.Namespace) -> dict[str, object]:
    from indexer.build import RayOptions

    if args.engine != "ray" and (args.ray_address or args.ray_actors):
        raise SystemExit("error: --ray-address and --ray-actors need --engine ray")
    ray = RayOptions(
        address=args.ray_address, actors=args.ray_actors, cpus_per_actor=args.ray_cpus_per_actor
    )
    return {
        "engine": args.engine,
        "ray": ray,
        "embedding_cache": not args.no_embedding_cache,
        "embedding_cache_dir": args.embedding_cache,
    }


def cmd_build(args: argparse.Namespace) -> int:
    from indexer.build import BuildConfig, RecallBelowTarget, build

    config = BuildConfig(
        catalog=args.catalog,
        out=args.out,
        model=args.model,
        index_factory=args.index_factory,
        nprobe=args.nprobe,
        k_factor=args.k_factor,
        text_fields=tuple(f.strip() for f in args.text_fields.split(",") if f.strip()),
        skip_invalid=args.skip_invalid,
        pins=args.pins,
        pin_text_fields=tuple(f.strip() for f in args.pin_text_fields.split(",") if f.strip()),
        seed=args.seed,
        snapshot_at=args.snapshot_time,
        target_recall=args.target_recall,
        recall_k=args.recall_k,
        max_memory_mb=args.max_memory_mb,
        queries=args.queries,
        allow_below_target=args.allow_below_target,
        eval_budget_s=args.eval_budget_s,
        shards=args.shards,
        **({"threads": args.threads} if args.threads else {}),
        **_engine_config(args),  # type: ignore[arg-type]
    )
    try:
        result = build(config)
    except RecallBelowTarget as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    m = result.manifest
    c = m.counts
    print(
        f"published {m.version}: {c.ads} ads ({c.paused} paused, {c.rejected} rejected), "
        f"{m.index.factory}, nprobe {m.search.nprobe}, k_factor {m.search.k_factor}"
    )
    if m.embedding is not None:
        e = m.embedding
        print(f"  embedded {e.embedded} ads, reused {e.reused} from the embedding cache")
    if m.quality is not None:
        q = m.quality
        print(
            f"  recall@{q.recall_k} {q.chosen.recall:.3f} (target {q.target_recall}"
            f"{', BELOW TARGET' if q.below_target else ''}), {q.chosen.p50_ms:.2f} ms p50"
        )
    if m.pins is not None:
        print(f"  {m.pins.count} pins ({m.pins.rejected} rejected), {m.pins.model}")
    if m.shards is not None:
        print(
            f"  {m.shards.count} shards: {', '.join(str(e.counts.ads) for e in m.shards.entries)} ads"
        )
    print(f"  {result.version_dir}")
    return 0


def _sample_flags(p: argparse.ArgumentParser) -> Handler:
    from indexer import sample

    add = p.add_argument
    add(
        "--out",
        type=Path,
        required=True,
        help="directory for catalog.jsonl, users.jsonl and pins.jsonl (the users' pins)",
    )
    add("--ads", type=int, default=sample.DEFAULT_ADS, help="number of ads (default: %(default)s)")
    add(
        "--users",
        type=int,
        default=sample.DEFAULT_USERS,
        help="number of users (default: %(default)s)",
    )
    add("--seed", type=int, default=sample.DEFAULT_SEED, help="seed (default: %(default)s)")
    return cmd_sample


def cmd_sample(args: argparse.Namespace) -> int:
    from indexer.sample import PINS_FILE, write_sample

    catalog, users = write_sample(args.out, n_ads=args.ads, n_users=args.users, seed=args.seed)
    print(f"wrote {catalog}, {users} and {args.out / PINS_FILE} (for build --pins)")
    return 0


# command -> (one-line help, adds the flags and returns the handler)
# command -> adds its flags to the parser and returns its handler (help: retrieval.cli.HELP)
COMMANDS: dict[str, Callable[[argparse.ArgumentParser], Handler]] = {
    "build": _build_flags,
    "sample": _sample_flags,
}
