"""Recall and latency of adindex side by side with raw FAISS, exact search, hnswlib and LanceDB.

One run builds every system over the same base vectors, searches the same queries, and writes
under ``benchmarks/results/<dataset>/``: ``results.jsonl`` (one line per system and operating
point), ``extras.jsonl`` (the run itself, neighbour statistics, ESCI relevance), ``results.md``
(tables, targets), ``recall_vs_p50.png`` and ``recall_vs_qps.png``. A faiss-style line per run
goes to stdout. Every line is self-describing (``benchmarks.provenance``); the lines a doc cites
are copied to docs/results/ with ``python -m benchmarks.publish``.

Usage::

    python -m benchmarks.recall_latency --dataset calibrated-100k
    python -m benchmarks.recall_latency --dataset esci | sample | fashion-mnist | calibrated-1m
    python -m benchmarks.recall_latency --dataset tight-1m | realtext
    python -m benchmarks.recall_latency --dataset calibrated --nb 3000 --d 32 --nq 50

Filtered (targeting) runs by selectivity are their own command: ``python -m benchmarks.filtered``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before FAISS loads: idle threads must sleep

import numpy as np
from tqdm import tqdm

import indexer  # noqa: F401  (sets the rest of the OpenMP/tokenizer environment)
from benchmarks import realtext, report
from benchmarks.config import DATASETS, PRESETS, SYSTEMS, BenchConfig
from benchmarks.core import SEARCH_THREADS, RunRecord, recall
from benchmarks.datasets import Dataset, calibrated, load_fashion_mnist, neighbour_stats, tight
from benchmarks.provenance import command, load_avg, provenance
from benchmarks.systems import (
    AdindexInProcess,
    ExactFaiss,
    RawFaiss,
    System,
    exact_neighbours,
    unit_rows,
)
from benchmarks.systems_ext import AdindexGrpc, Hnsw, Lance
from benchmarks.text_data import ESCI_DIR, Esci, grade_counts, load_esci, load_sample, relevance
from indexer.ann import Metric

logger = logging.getLogger("benchmarks.recall_latency")


@dataclasses.dataclass
class Context:
    """What every run of one benchmark shares."""

    cfg: BenchConfig
    ds: Dataset
    xq: np.ndarray  # the nq_eval queries, (nq_eval, d) float32
    truth: dict[str, np.ndarray]  # "ip"/"l2" -> exact ids, (nq_eval, k)
    jsonl: Path
    command: str
    esci: Esci | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_dataset(cfg: BenchConfig) -> tuple[Dataset | None, Esci | None]:
    """The dataset the config names; (None, None) with the reason logged when it is absent."""
    cache = cfg.out / "cache"
    if cfg.dataset.startswith("calibrated"):
        return calibrated(cfg.nb, cfg.nq, cfg.d, seed=cfg.seed), None
    if cfg.dataset == "tight-1m":
        return tight(cfg.nb, cfg.nq, cfg.d, seed=cfg.seed), None
    if cfg.dataset == "realtext":
        reason = realtext.missing()
        if reason is not None:
            logger.warning("realtext not loaded: %s", reason)
            return None, None
        return realtext.load_realtext(cfg.nb, cfg.nq), None
    if cfg.dataset == "fashion-mnist":
        return load_fashion_mnist(), None
    if cfg.dataset == "sample":
        return load_sample(cfg.nb, cfg.nq, cache), None
    esci = load_esci(ESCI_DIR, cache)
    return (esci.dataset if esci else None), esci


def make_systems(cfg: BenchConfig, ds: Dataset) -> list[System]:
    """The systems the config asks for, in dependency order (adindex before its reusers)."""
    metric: Metric = ds.metric
    held_out = ds.xq[cfg.nq_eval : cfg.nq_eval + 500]  # queries never measured below
    adindex = AdindexInProcess(
        cfg.factory, cfg.nprobes, k_factor=cfg.k_factor, held_out=held_out, reuse=cfg.artifact
    )
    made: dict[str, System] = {
        "faiss-flat": ExactFaiss(metric),
        "adindex": adindex,
        "faiss-ivf": RawFaiss(adindex),
        "adindex-grpc": AdindexGrpc(adindex, alone_threads=cfg.grpc_alone_threads),
        "hnswlib": Hnsw(metric, cfg.ef_search, m=cfg.hnsw_m, ef_construction=cfg.hnsw_ef_construction,
                        max_build_min=cfg.hnsw_max_build_min, cache=cfg.hnsw_cache),
        "lancedb": Lance(metric, cfg.lance_nprobes, cfg.lance_refine, num_partitions=cfg.lance_partitions),
    }  # fmt: skip
    # In the order asked for, except that adindex and the systems reusing its artifact go first
    # (so it can be released before the others are built).
    rank = {"adindex": 0, "faiss-ivf": 1, "adindex-grpc": 2}
    order = sorted(cfg.systems, key=lambda name: rank.get(name, 3))
    return [made[name] for name in order]


def run_system(system: System, ctx: Context, workdir: Path) -> list[RunRecord]:
    """Build one system, then measure it at each of its operating points."""
    cfg = ctx.cfg
    logger.info("Building %s over %d x %d", system.name, ctx.ds.nb, ctx.ds.d)
    workdir.mkdir(parents=True, exist_ok=True)
    built = system.build(ctx.ds, workdir)
    logger.info("%s built in %.1f s (%s)", system.name, built.build_s, system.index_key())
    truth = ctx.truth[system.truth]
    repeats = 1 if system.name == "faiss-flat" else cfg.repeats
    records = []
    for point in tqdm(system.points(), desc=system.name, unit="point"):
        timing, qps = system.measure(
            point, ctx.xq, cfg.k, warmup=cfg.warmup, repeats=repeats, qps_threads=cfg.qps_threads
        )
        rec = RunRecord(
            name=system.name, index_key=system.index_key(), params=point, k=cfg.k, nq=len(ctx.xq),
            recall_at_10=recall(timing.found, truth, 10), recall_at_100=recall(timing.found, truth, 100),
            p50_ms=timing.p50_ms, p99_ms=timing.p99_ms, qps=qps, single_qps=timing.single_qps,
            build_s=built.build_s, index_bytes=built.index_bytes, rss_mb=built.rss_mb,
            threads=system.threads(cfg.qps_threads), dataset=ctx.ds.name, nb=ctx.ds.nb, d=ctx.ds.d,
            truth=system.truth, latency_samples=len(timing.latencies_ms), extra=built.extra,
            **provenance(ctx.command),
        )  # fmt: skip
        if system.in_process and timing.cpu_ms is not None:
            rec.cpu_ms_mean = float(timing.cpu_ms.mean())
            rec.cpu_ms_p50 = float(np.median(timing.cpu_ms))
        print(report.stdout_line(rec.to_json()), flush=True)
        with ctx.jsonl.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec.to_json()) + "\n")
        records.append(rec)
    if system.name == "adindex" and ctx.esci is not None:
        ctx.extras["relevance"] = esci_relevance(system, ctx)
    return records


def esci_relevance(adindex: System, ctx: Context) -> dict[str, Any]:
    """NDCG@10 and recall of grade >= 2 products through adindex (default nprobe) vs exact."""
    assert ctx.esci is not None and isinstance(adindex, AdindexInProcess)
    xq = ctx.esci.dataset.xq
    exact = relevance(list(exact_neighbours(ctx.ds.xb, xq, ctx.cfg.k, "ip")), ctx.esci.qrels)
    by_nprobe = {}
    for point in adindex.points():
        search = adindex.searcher(point, xq, ctx.cfg.k)
        rel = relevance([search(i) for i in range(len(xq))], ctx.esci.qrels)
        rel["ndcg_ratio"] = rel["ndcg_at_10"] / exact["ndcg_at_10"]
        by_nprobe[int(point["nprobe"])] = rel
    default = adindex.default_nprobe
    out = {
        "index": by_nprobe[default],
        "exact": exact,
        "nprobe": default,
        "ndcg_ratio": by_nprobe[default]["ndcg_ratio"],
        "by_nprobe": by_nprobe,
        "index_key": adindex.index_key(),
        "grades": grade_counts(ctx.esci.qrels),
    }
    logger.info("ESCI relevance: %s", out)
    return out


def dataset_stats(ds: Dataset, cfg: BenchConfig) -> dict[str, Any]:
    """``datasets.neighbour_stats`` (cosines on unit rows, also for an L2 dataset)."""
    view = (
        ds
        if ds.metric == "ip"
        else dataclasses.replace(ds, xb=unit_rows(ds.xb), xq=unit_rows(ds.xq), metric="ip")
    )
    from benchmarks.datasets import default_nlist

    nlist = cfg.stats_nlist or default_nlist(ds.nb)
    nprobes = tuple(p for p in (8, 16, 128) if p <= nlist)
    logger.info(
        "Neighbour statistics: nlist=%d, k-means on %s points",
        nlist,
        cfg.stats_train_points or ds.nb,
    )
    return neighbour_stats(view, k=min(100, ds.nb), nlist=nlist, nprobes=nprobes,
                           max_train_points=cfg.stats_train_points, niter=cfg.stats_niter)  # fmt: skip


def run(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Run the whole benchmark for one dataset; returns the records (also written to disk)."""
    t_start, la_start = time.perf_counter(), load_avg()
    ds, esci = load_dataset(cfg)
    if ds is None:
        print(f"SKIPPED {cfg.dataset}: dataset not available (see the log above)")
        return []
    out_dir = cfg.out / cfg.name
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / "results.jsonl"
    jsonl.write_text("", encoding="utf-8")
    xq = np.ascontiguousarray(ds.xq[: cfg.nq_eval])
    k = min(cfg.k, ds.nb)
    cfg = dataclasses.replace(cfg, k=k)
    t0 = time.perf_counter()
    metrics = {"ip"} | {ds.metric}
    truth = {m: exact_neighbours(ds.xb, xq, k, m) for m in sorted(metrics)}  # type: ignore[arg-type]
    logger.info(
        "%s: %d x %d base, %d eval queries; ground truth in %.1f s",
        ds.name,
        ds.nb,
        ds.d,
        len(xq),
        time.perf_counter() - t0,
    )
    cmd = cfg.command or "(from Python: benchmarks.recall_latency.run)"
    ctx = Context(cfg, ds, xq, truth, jsonl, cmd, esci)
    records = _run_systems(ctx)
    stats = dataset_stats(ds, cfg) if cfg.stats else None
    facts = provenance(ctx.command)
    meta = {"config": cfg.to_json(), "dataset": ds.name, "description": ds.description, "nb": ds.nb,
            "nq": ds.nq, "nq_eval": len(xq), "d": ds.d, "metric": ds.metric, "machine": facts["machine"],
            "git_sha": facts["git_sha"], "command": ctx.command, "load_avg_start": la_start,
            "load_avg_end": load_avg(), "wall_s": round(time.perf_counter() - t_start, 1),
            "neighbour_stats": stats, **ctx.extras}  # fmt: skip
    write_extras(meta, out_dir / "extras.jsonl", facts)
    return write_outputs([r.to_json() for r in records], meta, out_dir)


def write_extras(meta: dict[str, Any], path: Path, facts: dict[str, Any]) -> None:
    """``extras.jsonl``: one self-describing line for the run, its neighbour statistics and
    (ESCI) its relevance per search, beside the operating points in ``results.jsonl``."""
    threads = {"single": SEARCH_THREADS, "qps": meta["config"]["qps_threads"]}
    base = {"benchmark": "recall_latency", "dataset": meta["dataset"], "nb": meta["nb"],
            "d": meta["d"], "nq": meta["nq_eval"], "k": meta["config"]["k"], "threads": threads,
            **facts}  # fmt: skip
    rows = [{**base, "kind": "run", "description": meta["description"], "metric": meta["metric"],
             "wall_s": meta["wall_s"], "load_avg_start": meta["load_avg_start"][0],
             "load_avg_end": meta["load_avg_end"][0], "config": meta["config"]}]  # fmt: skip
    if meta["neighbour_stats"]:
        rows.append({**base, "kind": "neighbour_stats", **meta["neighbour_stats"]})
    rel = meta.get("relevance")
    if rel:
        common = {
            **base,
            "kind": "relevance",
            "index_key": rel["index_key"],
            "grades": rel["grades"],
        }
        rows.append({**common, "search": "exact", "nprobe": None, "default": False, **rel["exact"],
                     "ndcg_ratio": 1.0})  # fmt: skip
        for nprobe, r in sorted(rel["by_nprobe"].items()):
            rows.append({**common, "search": "adindex", "nprobe": nprobe,
                         "default": nprobe == rel["nprobe"], **r})  # fmt: skip
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")


def _run_systems(ctx: Context) -> list[RunRecord]:
    systems = make_systems(ctx.cfg, ctx.ds)
    records: list[RunRecord] = []
    parent = str(ctx.cfg.workdir) if ctx.cfg.workdir else None
    with tempfile.TemporaryDirectory(prefix="adindex-bench-", dir=parent) as tmp:
        try:
            for i, system in enumerate(systems):
                records += run_system(system, ctx, Path(tmp) / system.name)
                if not any(getattr(s, "adindex", None) is system for s in systems[i + 1 :]):
                    system.close()
        finally:
            for system in systems:
                system.close()
    return records


def rerender(out_dir: Path) -> list[dict[str, Any]]:
    """Re-write results.md and the plots of a finished run from its results.jsonl and run.json."""
    text = (out_dir / "results.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    meta = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))
    return write_outputs(rows, meta, out_dir)


def write_outputs(
    rows: list[dict[str, Any]], meta: dict[str, Any], out_dir: Path
) -> list[dict[str, Any]]:
    """Rewrite results.jsonl with Pareto flags; write run.json, results.md and the plots."""
    report.mark_pareto(rows)
    with (out_dir / "results.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out_dir / "run.json").write_text(
        json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
    )
    pngs = (
        report.plot(
            rows,
            out_dir,
            f"{meta['dataset']}: {meta['nb']:,} x {meta['d']}, k={meta['config']['k']}",
        )
        if rows
        else []
    )
    verdicts = report.targets(rows)
    if "relevance" in meta:
        rel = meta["relevance"]
        ok = rel["ndcg_ratio"] >= 0.99
        verdicts.append(
            f"{'MET' if ok else 'MISSED'} ESCI NDCG@10 through the index >= 0.99 x exact: "
            f"{rel['index']['ndcg_at_10']:.4f} / {rel['exact']['ndcg_at_10']:.4f} = "
            f"{rel['ndcg_ratio']:.4f} at nprobe {rel['nprobe']} ({rel['index_key']})"
        )
    md = [f"# {meta['dataset']}", "", meta["description"], "",
          f"{meta['nb']:,} base vectors x {meta['d']}, recall and latency on {meta['nq_eval']:,} queries, "
          f"k={meta['config']['k']}; git {meta['git_sha']}; {meta['machine']['cpu']}, {meta['machine']['cores']} cores; "
          f"load average {meta['load_avg_start'][0]:.2f} at start, {meta['load_avg_end'][0]:.2f} at end; "
          f"wall time {meta['wall_s']:.0f} s.", "",
          "## Pareto frontier (recall@100 vs p50, per system)", "", report.markdown_table(rows, frontier_only=True), "",
          "## All runs", "", report.markdown_table(rows), "",
          "## Targets (issue 3)", "", *[f"- {v}" for v in verdicts], "",
          "## Neighbour statistics vs real all-MiniLM-L6-v2 embeddings", "", report.stats_table(meta["neighbour_stats"]), ""]  # fmt: skip
    if "relevance" in meta:
        md += [
            "## ESCI relevance",
            "",
            "```json",
            json.dumps(meta["relevance"], indent=2),
            "```",
            "",
        ]
    md += [f"![recall vs p50]({p.name})" for p in pngs]
    (out_dir / "results.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print(
        "\n".join(
            [
                "",
                *verdicts,
                f"Wrote {out_dir}/results.jsonl, results.md, run.json and {len(pngs)} plots",
            ]
        )
    )
    return rows


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--rerender", action="store_true", help="only re-write results.md and plots")
    for flag, kind, hint in (
        ("--nb", int, "base vectors (synthetic) or ads (sample)"), ("--nq", int, "queries generated / users"),
        ("--d", int, "dimension (synthetic)"), ("--seed", int, None), ("--k", int, "neighbours per query"),
        ("--nq-eval", int, "queries measured (recall, latency, QPS)"), ("--warmup", int, None),
        ("--repeats", int, "timed passes"), ("--factory", str, "adindex index factory string"),
        ("--k-factor", int, "adindex re-ranking depth (k * k_factor candidates)"), ("--tag", str, "results folder suffix"),
        ("--nprobes", _ints, "adindex/FAISS nprobe sweep, e.g. 8,16,32"), ("--ef-search", _ints, "hnswlib sweep"),
        ("--hnsw-m", int, None), ("--hnsw-ef-construction", int, None), ("--hnsw-max-build-min", float, None),
        ("--lance-nprobes", _ints, None), ("--lance-refine", _ints, "0 = no refine"), ("--lance-partitions", int, None),
        ("--stats-nlist", int, None), ("--stats-train-points", int, None), ("--out", Path, None), ("--workdir", Path, None),
        ("--qps-threads", int, "threads of the throughput run (every system alike)"),
        ("--grpc-alone-threads", int, "adindex-grpc: the server's --alone-threads (1: equal to the others)"),
        ("--artifact", Path, "measure this built artifact instead of building one (same vectors!)"),
        ("--hnsw-cache", Path, "hnswlib index file: loaded when built over the same vectors, else built and saved"),
    ):  # fmt: skip
        p.add_argument(flag, type=kind, default=None, help=hint)
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}"
    )
    p.add_argument("--no-stats", action="store_true", help="skip the neighbour statistics")
    args = p.parse_args(argv)
    given = {
        k: v
        for k, v in vars(args).items()
        if v is not None and k not in ("systems", "no_stats", "rerender")
    }
    fields = {**PRESETS.get(args.dataset, {}), **given}
    return BenchConfig(
        **fields,
        systems=tuple(s for s in args.systems.split(",") if s),
        stats=not args.no_stats,
        command=command(argv, module="benchmarks.recall_latency"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = parse_args(argv)
    if "--rerender" in (argv if argv is not None else sys.argv[1:]):
        rerender(cfg.out / cfg.name)
        return 0
    logger.info("Config: %s", cfg)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
