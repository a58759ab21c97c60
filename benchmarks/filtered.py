"""Filtered retrieval: recall and latency by selectivity, the exact/IVF crossover, pause latency.

    python -m benchmarks.filtered --nb 1000000 --nq 300 --k 100

On a calibrated synthetic set (benchmarks.datasets.calibrated: neighbour statistics matched to
real all-MiniLM-L6-v2 embeddings), every ad targets exactly one country, drawn with the shares
in SHARES, so a request's country is a filter of known selectivity. For each selectivity it runs
the same queries through retrieval.searcher.Searcher three ways: forced IVF (the selector plus
nprobe widened by 1/selectivity), forced exact scan of the eligible rows, and the default plan;
recall@k is against exact search over the eligible rows only. Then, over a real gRPC server,
it pauses ads one at a time and retrieves right after each reply: the number of paused ads
returned after the pause call returned must be zero.

Output: benchmarks/results/filtered/results.jsonl (one self-describing line per selectivity and
mode, and one for the pause run) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import indexer  # noqa: F401  (first: OpenMP settings before FAISS loads)
from benchmarks.datasets import calibrated
from benchmarks.provenance import command, provenance
from indexer import artifact
from indexer.ann import exact_search, omp_threads, recall_at_k
from indexer.build import BuildConfig, build
from retrieval.client import RetrievalClient
from retrieval.eligibility import RequestFilter
from retrieval.searcher import DEFAULT_EXACT_MAX_ROWS, Searcher
from retrieval.server import ServerConfig, create_server

logger = logging.getLogger("benchmarks.filtered")

# Country -> share of ads targeting only it; the rest target "GB".
SHARES = {"US": 0.5, "DE": 0.1, "FR": 0.05, "JP": 0.02, "IT": 0.01, "ES": 0.005, "IS": 0.001}
NO_LIMIT = 1 << 62
SEARCH_THREADS = 1  # OpenMP threads of every measured plan: a busy server gives each search one


@dataclass(frozen=True)
class FilteredConfig:
    nb: int = 1_000_000
    nq: int = 300
    k: int = 100
    index_factory: str | None = None  # None: what indexer.params chooses, as a user's build
    nprobe: int = 64
    k_factor: int = 4
    pauses: int = 200
    seed: int = 1338
    workdir: Path = Path("benchmarks/results/filtered")
    command: str = "(from Python: benchmarks.filtered.run)"  # recorded in every row

    def __post_init__(self) -> None:
        if self.nb < 10_000 or self.nq < 1 or self.k < 1:
            raise ValueError(
                f"need nb >= 10000, nq >= 1, k >= 1; got {self.nb}, {self.nq}, {self.k}"
            )


def write_catalog(xb: np.ndarray, path: Path, seed: int) -> np.ndarray:
    """A Parquet catalog with precomputed embeddings; returns each ad's country code index."""
    rng = np.random.default_rng(seed)
    countries = [*SHARES, "GB"]
    p = [*SHARES.values(), 1 - sum(SHARES.values())]
    drawn = rng.choice(len(countries), size=len(xb), p=p)
    n, d = xb.shape
    targeting = [json.dumps({"countries": [c]}) for c in countries]
    table = pa.table(
        {
            "ad_id": [f"ad-{i:07d}" for i in range(n)],
            "advertiser_id": [f"adv-{i % 5000:05d}" for i in range(n)],
            "campaign_id": [f"cmp-{i % 20000:05d}" for i in range(n)],
            "title": [f"ad {i}" for i in range(n)],
            "status": ["active"] * n,
            "targeting": [targeting[c] for c in drawn],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(xb.reshape(-1)), d),
        }
    )
    pq.write_table(table, path)
    return np.asarray(drawn)


def run_plan(
    searcher: Searcher, xq: np.ndarray, truth: np.ndarray, k: int, flt: RequestFilter
) -> dict[str, Any]:
    latencies, found, plans, nprobes = [], [], set(), []
    for q in xq:
        t0 = time.perf_counter()
        result = searcher.search(q, k, 0, flt)
        latencies.append((time.perf_counter() - t0) * 1e3)
        found.append(result.ids)
        plans.add(result.plan)
        nprobes.append(result.nprobe)
    lat = np.asarray(latencies[min(5, len(latencies) - 1) :])  # first calls warm the caches
    return {
        "recall_at_k": recall_at_k(found, truth),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "plan": "/".join(sorted(plans)),
        "nprobe": int(np.median(nprobes)),
        "threads": {"single": SEARCH_THREADS, "how": "one query at a time, 1 OpenMP thread"},
    }


def selectivity_runs(
    cfg: FilteredConfig,
    art: artifact.Artifact,
    xq: np.ndarray,
    drawn: np.ndarray,
    base: dict[str, Any],
) -> list[dict[str, Any]]:
    """One row per (selectivity, plan mode), each carrying ``base`` and its own provenance."""
    xb = np.asarray(art.exact_embeddings())  # float32 truth (serving may hold fp16)
    searchers = {
        "ivf": Searcher(art, max_k=cfg.k, exact_max_rows=0),
        "exact": Searcher(art, max_k=cfg.k, exact_max_rows=NO_LIMIT),
        "default": Searcher(art, max_k=cfg.k, exact_max_rows=DEFAULT_EXACT_MAX_ROWS),
    }
    out = []
    _, truth = exact_search(xb, xq, cfg.k)
    unfiltered = run_plan(searchers["ivf"], xq, truth, cfg.k, RequestFilter())
    out.append(
        {**base, "selectivity": 1.0, "country": "", "mode": "unfiltered", "eligible": len(xb),
         **unfiltered, **provenance(cfg.command)}
    )  # fmt: skip
    print(
        f"unfiltered: R@{cfg.k} {unfiltered['recall_at_k']:.4f}  p50 {unfiltered['p50_ms']:.3f} ms  p99 {unfiltered['p99_ms']:.3f} ms"
    )
    for c, country in enumerate(SHARES):
        rows = np.flatnonzero(drawn == c)
        _, truth = exact_search(xb, xq, cfg.k, eligible=drawn == c)
        flt = RequestFilter(country=country)
        for mode, searcher in searchers.items():
            r = run_plan(searcher, xq, truth, cfg.k, flt)
            out.append(
                {
                    **base,
                    "selectivity": len(rows) / len(xb),
                    "country": country,
                    "mode": mode,
                    "eligible": len(rows),
                    **r,
                    **provenance(cfg.command),
                }
            )
            print(
                f"{country} s={len(rows) / len(xb):.4f} {mode:>7}: plan {r['plan']:>5} nprobe {r['nprobe']:>5} "
                f"R@{cfg.k} {r['recall_at_k']:.4f}  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms",
                flush=True,
            )
    return out


def pause_runs(cfg: FilteredConfig, root: Path) -> dict[str, Any]:
    """Pause ads one at a time over gRPC; retrieve right after each reply; count leaks."""
    running = create_server(ServerConfig(port=0, index=root, max_k=cfg.k))
    leaks, latencies = 0, []
    try:
        searcher = running.state.current()
        xb = searcher.artifact.embeddings
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            for i in np.random.default_rng(cfg.seed).choice(len(xb), cfg.pauses, replace=False):
                ad_id = searcher.artifact.ads[int(i)].ad_id
                assert client.retrieve(xb[i], 10).candidates[0].ad_id == ad_id
                t0 = time.perf_counter()
                client.pause(ad_ids=[ad_id])
                latencies.append((time.perf_counter() - t0) * 1e3)
                leaks += ad_id in {c.ad_id for c in client.retrieve(xb[i], 10).candidates}
    finally:
        running.stop()
    lat = np.asarray(latencies)
    return {
        "kind": "pause",
        "threads": {"single": 1, "how": "one admin call at a time over gRPC (default server)"},
        "pauses": cfg.pauses,
        "paused_ads_returned_after_reply": leaks,
        "pause_call_p50_ms": float(np.percentile(lat, 50)),
        "pause_call_p99_ms": float(np.percentile(lat, 99)),
    }


def markdown(rows: Sequence[dict[str, Any]], k: int) -> str:
    lines = [
        f"| country | selectivity | eligible | mode | plan | nprobe | recall@{k} | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['country'] or '-'} | {r['selectivity']:.4f} | {r['eligible']} | {r['mode']} | {r['plan']} | "
            f"{r['nprobe']} | {r['recall_at_k']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |"
        )
    return "\n".join(lines)


def run(cfg: FilteredConfig) -> None:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = calibrated(cfg.nb, cfg.nq, seed=cfg.seed)
    catalog = cfg.workdir / f"catalog-{cfg.nb}.parquet"
    drawn = write_catalog(ds.xb, catalog, cfg.seed)
    root = cfg.workdir / f"index-{cfg.nb}"
    build(
        BuildConfig(
            catalog=catalog,
            out=root,
            index_factory=cfg.index_factory,
            nprobe=cfg.nprobe,
            k_factor=cfg.k_factor,
            # The operating point is fixed here on purpose (the unfiltered row reports its
            # recall); the build's recall gate is for production builds.
            allow_below_target=True,
        )
    )
    art = artifact.load(root)
    logger.info("dataset + build: %.0f s", time.perf_counter() - t0)
    base = {"benchmark": "filtered", "kind": "selectivity", "dataset": ds.name, "nb": cfg.nb,
            "d": ds.d, "nq": cfg.nq, "k": cfg.k, "index_factory": art.manifest.index.factory,
            "unfiltered_nprobe": cfg.nprobe, "k_factor": cfg.k_factor}  # fmt: skip
    with omp_threads(SEARCH_THREADS):  # every plan on equal threads (the build set all cores)
        rows = selectivity_runs(cfg, art, ds.xq, drawn, base)
    pause = {**base, **pause_runs(cfg, root), **provenance(cfg.command)}
    with (cfg.workdir / "results.jsonl").open("w", encoding="utf-8") as f:
        for r in [*rows, pause]:
            f.write(json.dumps(r) + "\n")
    table = markdown(rows, cfg.k)
    (cfg.workdir / "results.md").write_text(
        table + f"\n\npause: {json.dumps(pause)}\n", encoding="utf-8"
    )
    print(table)
    print(f"pause: {pause}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nb", type=int, default=FilteredConfig.nb, help="ads (default: %(default)s)")
    p.add_argument(
        "--nq", type=int, default=FilteredConfig.nq, help="queries (default: %(default)s)"
    )
    p.add_argument("--k", type=int, default=FilteredConfig.k, help="k (default: %(default)s)")
    p.add_argument(
        "--index-factory",
        default=FilteredConfig.index_factory,
        help="FAISS factory string (default: what indexer.params chooses for --nb)",
    )
    p.add_argument(
        "--nprobe",
        type=int,
        default=FilteredConfig.nprobe,
        help="unfiltered nprobe (default: %(default)s)",
    )
    p.add_argument(
        "--k-factor",
        type=int,
        default=FilteredConfig.k_factor,
        help="re-ranking depth (default: %(default)s)",
    )
    p.add_argument(
        "--pauses",
        type=int,
        default=FilteredConfig.pauses,
        help="pause calls to measure (default: %(default)s)",
    )
    p.add_argument(
        "--workdir", type=Path, default=FilteredConfig.workdir, help="(default: %(default)s)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(
        FilteredConfig(
            nb=args.nb,
            nq=args.nq,
            k=args.k,
            index_factory=args.index_factory,
            nprobe=args.nprobe,
            k_factor=args.k_factor,
            pauses=args.pauses,
            workdir=args.workdir,
            command=command(argv, module="benchmarks.filtered"),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
