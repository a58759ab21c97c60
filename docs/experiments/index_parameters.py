"""The measurements behind indexer/params.py and indexer/queries.py (docs/index-parameters.md).

Run from the repository root with the project's venv, under ``nice`` on a shared machine::

    # 1. Real all-MiniLM-L6-v2 vectors: a 20,000-ad sample catalog and 500 pin-based users
    python docs/experiments/index_parameters.py embed-sample --out /tmp/sample20k
    # 2. Default query sample vs real users (and vs self-queries): neighbour stats, recall curve
    python docs/experiments/index_parameters.py queries --real /tmp/sample20k
    python docs/experiments/index_parameters.py queries --calibrated 54667
    # 3. Factory strings side by side on the calibrated set: bytes, build time, cheapest point
    python docs/experiments/index_parameters.py factories --nb 200000 \\
        'IVF1024,PQ96x4fs,RFlat' 'IVF1024,PQ192x4fs,RFlat' 'IVF1024,PQ192x4fs,Refine(SQ8)'
    # 4. The same on the real vectors with their real users (e.g. OPQ against plain PQ)
    python docs/experiments/index_parameters.py factories --real /tmp/sample20k \\
        'IVF512,PQ96x4fs' 'OPQ96_384,IVF512,PQ96x4fs'
    # 5. What the build's evaluation costs and chooses at 1M, on synthetic users and on queries
    python docs/experiments/index_parameters.py evaluate --calibrated 1000000

Every command except embed-sample prints its JSON lines and appends them, self-describing
(``benchmarks.provenance``), to ``--out`` (default
``benchmarks/results/experiments/index-parameters.jsonl``); ``python -m benchmarks.publish``
copies the rows docs/index-parameters.md cites to docs/results/.

Not part of the packages: it imports ``benchmarks.datasets`` for the calibrated set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import indexer  # noqa: F401  (first: OpenMP environment before FAISS loads)
from indexer.build import train_index
from indexer.params import (
    MIN_PQ_TRAIN,
    TRAIN_POINTS_PER_LIST,
    IndexParams,
    estimate_memory_bytes,
    nlist_of,
)
from indexer.queries import QuerySet, catalog_queries
from indexer.tuning import TuningConfig, choose, tune

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.datasets

from benchmarks.provenance import command, provenance

OUT = Path("benchmarks/results/experiments/index-parameters.jsonl")


def emit(
    args: argparse.Namespace, xb: np.ndarray, name: str, kind: str, row: dict[str, object]
) -> None:
    """Print one result and append it, self-describing, to ``args.out``."""
    full = {"benchmark": "index_parameters", "kind": kind, "dataset": name, "nb": len(xb),
            "d": xb.shape[1], **row, **provenance(args.cmd)}  # fmt: skip
    print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(full) + "\n")


def load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """(xb, reference queries, name): the real sample or the calibrated set."""
    if args.real:
        xb = np.load(args.real / "xb.npy")
        return xb, np.load(args.real / "xq_users.npy"), f"MiniLM sample {len(xb)}"
    from benchmarks.datasets import calibrated

    ds = calibrated(args.calibrated, 500)
    return ds.xb, ds.xq, ds.name


def embed_sample(args: argparse.Namespace) -> None:
    from indexer.ann import normalize
    from indexer.embedding import SentenceTransformerEmbedder
    from indexer.records import DEFAULT_TEXT_FIELDS
    from indexer.sample import generate_catalog, generate_users

    args.out.mkdir(parents=True, exist_ok=True)
    emb = SentenceTransformerEmbedder()
    records = generate_catalog(args.ads)
    xb = emb.encode([r.text(DEFAULT_TEXT_FIELDS, ". ") for r in records], progress=True)
    np.save(args.out / "xb.npy", xb)
    users = generate_users(args.users)
    pins = emb.encode([p.text() for u in users for p in u.pins], progress=True)
    bounds = np.cumsum([0] + [len(u.pins) for u in users])
    xq = [
        normalize(pins[a:b].mean(axis=0, keepdims=True))[0] for a, b in itertools.pairwise(bounds)
    ]
    np.save(args.out / "xq_users.npy", np.asarray(xq, dtype=np.float32))


def build(xb: np.ndarray, factory: str) -> tuple[Any, float]:
    nlist = nlist_of(factory)
    train = min(len(xb), max(nlist * TRAIN_POINTS_PER_LIST, MIN_PQ_TRAIN))
    t0 = time.perf_counter()
    index = train_index(xb, IndexParams(factory, nlist, 1, 1, train), seed=1234)
    return index, time.perf_counter() - t0


def queries(args: argparse.Namespace) -> None:
    from benchmarks.datasets import Dataset, neighbour_stats

    xb, ref, name = load(args)
    rng = np.random.default_rng(5)
    sets = {
        "reference": ref,
        "default": catalog_queries(xb, 500, seed=1234).xq,
        "self": xb[rng.choice(len(xb), 500, replace=False)],
    }
    nlist = 1 << max(0, round(np.log2(len(xb) / 50)))
    for label, xq in sets.items():
        stats = neighbour_stats(Dataset(label, xb, xq, "ip", ""), sample_nq=500, nlist=nlist)
        keep = {k: round(v, 3) for k, v in stats.items() if k.startswith(("cos_1", "cos_k", "loc"))}
        row = {"queries": label, "nlist": nlist, "threads": {"kmeans": "default"}, **keep}
        emit(args, xb, name, "query-stats", row)
    factory = f"IVF{nlist},PQ{xb.shape[1] // 2}x4fs,RFlat"
    index, _ = build(xb, factory)
    cfg = TuningConfig(k_factors=(4,), target_recall=1.0, time_budget_s=600)
    curves = {}
    for label, xq in sets.items():
        t = tune(index, xb, QuerySet(np.ascontiguousarray(xq), label, label), nlist, cfg)
        curves[label] = {p.nprobe: p.recall for p in t.points}
    for nprobe in sorted(set().union(*curves.values())):
        recall = {label: c.get(nprobe) for label, c in curves.items()}
        row = {"factory": factory, "k_factor": 4, "nprobe": nprobe, "recall": recall,
               "threads": {"single": 1, "how": "recall only (the build's sweep)"}}  # fmt: skip
        emit(args, xb, name, "query-curve", row)
    print(f"{factory}, k_factor 4: recall@100 by nprobe")
    print(f"{'nprobe':>7} " + " ".join(f"{label:>10}" for label in curves))
    for nprobe in sorted(set().union(*curves.values())):
        cells = [f"{c[nprobe]:>10.3f}" if nprobe in c else " " * 10 for c in curves.values()]
        print(f"{nprobe:>7} " + " ".join(cells))


def factories(args: argparse.Namespace) -> None:
    xb, ref, name = load(args)
    qs = QuerySet(np.ascontiguousarray(ref), "reference", f"500 reference queries of {name}")
    # Default target 0.999: every row runs to its plateau, so "best" is what the index can
    # reach; --target 0.95 stops rows where a build's sweep stops them.
    cfg = TuningConfig(k_factors=(1, 2, 4, 8, 16), target_recall=args.target, time_budget_s=900)
    built = {}
    for factory in args.factory:
        built[factory] = build(xb, factory)
    # Tune each index `repeat` times, alternating the order, so that load on a shared machine
    # falls on every factory alike; compare p50 within one run.
    for rep in range(args.repeat):
        for factory in args.factory if rep % 2 == 0 else args.factory[::-1]:
            index, build_s = built[factory]
            t = tune(index, xb, qs, nlist_of(factory), cfg)
            row: dict[str, object] = {"rep": rep, "factory": factory, "build_s": round(build_s, 1)}
            row["threads"] = {"single": 1, "build": "default OpenMP", "how": "the build's sweep"}
            row["bytes_per_vector"] = round(
                (estimate_memory_bytes(factory, *xb.shape) or 0) / len(xb)
            )
            row["best"] = asdict(t.best)
            for target in (0.9, 0.95, 0.97):  # keys at_90, at_95, at_97 (no dots: doc paths)
                c = choose(t.points, target)
                row[f"at_{round(target * 100)}"] = asdict(c) if c else None
            # The fewest lists reaching 0.95 at each k_factor: a latency-free comparison.
            row["nprobe_for_95"] = {
                kf: min(
                    (p.nprobe for p in t.points if p.k_factor == kf and p.recall >= 0.95),
                    default=None,
                )
                for kf in cfg.k_factors
            }
            emit(args, xb, name, "factory", row)


def evaluate(args: argparse.Namespace) -> None:
    """The build's own evaluation (default TuningConfig) on synthetic users and on the set's
    queries: ground truth and sweep time, points measured, the chosen default."""
    from indexer.params import choose_factory

    xb, ref, name = load(args)
    factory = args.factory or choose_factory(*xb.shape)
    index, build_s = build(xb, factory)
    sets = {"default sample (synthetic users)": catalog_queries(xb, 500, seed=1234),
            "the set's own queries": QuerySet(np.ascontiguousarray(ref[:500]), "reference", name)}  # fmt: skip
    for label, qs in sets.items():
        t = tune(index, xb, qs, nlist_of(factory), TuningConfig())
        chosen = asdict(t.chosen) if t.chosen else None
        row = {"factory": factory, "build_s": round(build_s, 1), "queries": label,
               "seconds": round(t.seconds, 1), "points": len(t.points), "chosen": chosen,
               "truncated": t.truncated,
               "threads": {"single": 1, "exact": "default OpenMP", "how": "the build's evaluation"}}  # fmt: skip
        emit(args, xb, name, "evaluation", row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("embed-sample")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--ads", type=int, default=20_000)
    e.add_argument("--users", type=int, default=500)
    for cmd in ("queries", "factories", "evaluate"):
        q = sub.add_parser(cmd)
        src = q.add_mutually_exclusive_group(required=True)
        src.add_argument("--real", type=Path, help="directory written by embed-sample")
        src.add_argument("--calibrated", "--nb", type=int, help="calibrated set of this size")
        q.add_argument("--out", type=Path, default=OUT, help="append rows here (%(default)s)")
        if cmd == "factories":
            q.add_argument("factory", nargs="+")
            q.add_argument("--repeat", type=int, default=1, help="tune each index this often")
            q.add_argument("--target", type=float, default=0.999, help="sweep stopping target")
        if cmd == "evaluate":
            q.add_argument("--factory", default=None, help="default: indexer.params' choice")
    args = p.parse_args()
    args.cmd = command()
    run = {"embed-sample": embed_sample, "queries": queries, "factories": factories}
    run["evaluate"] = evaluate
    run[args.command](args)


if __name__ == "__main__":
    main()
