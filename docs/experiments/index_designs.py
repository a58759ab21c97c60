"""Index designs compared by CPU cost per query and recall, interleaved (docs/index-parameters.md s4).

The machine is shared (load average 8-28 on 2 cores): wall-clock latency is mostly other
people's work. This script measures what a design costs, not how long the machine took:
CPU time of the calling thread (``time.thread_time``) around each single-query search on one
OpenMP thread, with the designs interleaved block by block so that whatever the load does
falls on all of them alike. Recall@100 is exact arithmetic and load-independent.

Steps (everything lands under --work, reused by later steps):

    python docs/experiments/index_designs.py data --set calibrated-1m --work W
    python docs/experiments/index_designs.py data --set tight-1m --work W      # same base
    python docs/experiments/index_designs.py data --set realtext --work W
    python docs/experiments/index_designs.py build --base calibrated-1m --work W \
        --factory IVF8192_HNSW32,PQ96x4fsr [--per-list 64]
    python docs/experiments/index_designs.py refine --base calibrated-1m --work W --codes Flat,SQ8
    python docs/experiments/index_designs.py sweep --set tight-1m --work W \
        --design IVF2048,PQ192x4fs:Flat@256,320 --design IVF8192_HNSW32,PQ96x4fsr:Flat@768,1024 \
        --k-factors 4,8 [--ef-factor 2] [--out docs/results/index_designs.jsonl]

``build`` trains with ``train`` below (FAISS's training; from 4,096 lists the coarse centroids
come from two-level k-means, which the ``coarse_centroids`` rows show to cost locality) on 64
points per list (at least 65,536), adds every base vector and saves the IVF part alone; ``refine`` saves the
re-ranking stages once, shared by every design of a base (``IndexRefine`` over them, as
``...,RFlat`` / ``Refine(SQ8)`` builds them). Every search goes through
``indexer.ann.search_params`` and ``use_serving_implementation``, as the server's do.

Queries: rows 1,500-2,499 of each set's 10,000 (the benchmark measures rows 0-999 and gives the
build rows 1,000-1,499), exact top-100 by inner product over all base vectors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import indexer  # noqa: F401  (first: OpenMP environment before FAISS loads)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.*

import faiss
import numpy as np

from benchmarks.provenance import command, provenance
from indexer import ann

K = 100
Search = Callable[[int], np.ndarray]  # query row -> ids found, best first
QUERY_ROWS = slice(1500, 2500)
BASES = {"calibrated-1m": "calibrated-1m", "tight-1m": "calibrated-1m", "realtext": "realtext"}
NB = {"calibrated-1m": 1_000_000, "tight-1m": 1_000_000, "realtext": 256_340}


def emit(row: dict[str, Any], out: Path | None) -> None:
    """Print one self-describing JSON line (``benchmarks.provenance``) and append it to out."""
    nb = row.get("nb", NB.get(row.get("set") or row.get("base", "")))
    row = {"benchmark": "index_designs", "kind": row["step"], "dataset": row.get("set") or row["base"],
           "nb": nb, "d": 384, **row, **provenance(command())}  # fmt: skip
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(line + "\n")


# --- what the HNSW-quantizer designs used (experiment only: indexer/ann.py serves none of them) -

# efSearch of an HNSW coarse quantizer probing nprobe lists: max(64, 2 x nprobe); when adding,
# 64 (FAISS's default 16 misassigns vectors, and a misassigned vector is lost to every search).
QUANTIZER_EF_FACTOR, QUANTIZER_EF_MIN, QUANTIZER_EF_ADD = 2, 64, 64
# From this many lists on, ``build`` trained the coarse centroids by two-level k-means
# (faiss.contrib.clustering); the rows' coarse_centroids kind shows it scans more lists.
TWO_LEVEL_MIN_NLIST = 4096


def ivf_of(index: faiss.Index) -> faiss.IndexIVF:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.base_index)
    if not isinstance(index, faiss.IndexIVF):
        raise SystemExit(f"not an IVF design: {type(index).__name__}")
    return index


def has_hnsw_quantizer(index: faiss.Index) -> bool:
    return isinstance(faiss.downcast_index(ivf_of(index).quantizer), faiss.IndexHNSW)


def quantizer_ef(nprobe: int, factor: int = QUANTIZER_EF_FACTOR) -> int:
    return max(QUANTIZER_EF_MIN, factor * nprobe)


def search_params(index: faiss.Index, nprobe: int, k_factor: int, ef_factor: int = 0) -> Any:
    """``ann.search_params`` (the server's), plus the quantizer's efSearch for HNSW designs."""
    if not has_hnsw_quantizer(index):
        return ann.search_params(index, nprobe, k_factor, K, min_rerank=64)
    hnsw = faiss.SearchParametersHNSW(
        efSearch=quantizer_ef(nprobe, ef_factor or QUANTIZER_EF_FACTOR)
    )
    ivf = faiss.SearchParametersIVF(nprobe=nprobe, quantizer_params=hnsw)
    if not ann.has_refine(index):
        return ivf
    kf = ann.effective_k_factor(k_factor, 64, K)
    return faiss.IndexRefineSearchParameters(k_factor=kf, base_index_params=ivf)


def train(index: faiss.Index, xt: np.ndarray, *, seed: int, two_level: bool | None) -> None:
    """What ``build`` measured: FAISS's training, except that from ``TWO_LEVEL_MIN_NLIST`` lists
    (or with --two-level) the coarse centroids come from two-level spherical k-means, and an HNSW
    quantizer assigns with efSearch ``QUANTIZER_EF_ADD``."""
    from faiss.contrib.clustering import two_level_clustering

    ivf = ivf_of(index)
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = QUANTIZER_EF_ADD
    if two_level if two_level is not None else ivf.nlist >= TWO_LEVEL_MIN_NLIST:
        n1 = max(2, round(math.sqrt(ivf.nlist)))
        centroids, _ = two_level_clustering(
            np.ascontiguousarray(xt), n1, ivf.nlist, clustering_niter=10, spherical=True, seed=seed
        )
        ivf.quantizer.add(ann.normalize(centroids))
    index.train(xt)


def slug(factory: str) -> str:
    return factory.replace(",", "_").replace("(", "").replace(")", "")


def design_slug(design: str) -> str:
    """A design without commas (``where=`` filters in the docs split values on commas)."""
    if design.startswith("hnswlib:"):
        return "hnswlib_" + Path(design.partition(":")[2]).stem
    return slug(design).replace(":", "_")


# --- data ---------------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> None:
    from benchmarks import datasets

    base = BASES[args.set]
    bdir, sdir = args.work / base, args.work / args.set
    bdir.mkdir(parents=True, exist_ok=True)
    sdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.set == "realtext":
        from benchmarks.realtext import load_realtext

        ds = load_realtext(None, 10_000)
        xb, xq = ds.xb, ds.xq
    elif args.set == "calibrated-1m":
        ds = datasets.calibrated(1_000_000, 10_000)
        xb, xq = ds.xb, ds.xq
    else:  # tight-1m: the calibrated catalog, queries of benchmarks.datasets.tight
        ds = datasets.tight(1_000_000, 10_000)
        xb, xq = ds.xb, ds.xq
    xb, xq = ann.normalize(xb), ann.normalize(xq[QUERY_ROWS])
    if not (bdir / "xb.npy").exists():
        np.save(bdir / "xb.npy", xb)
    else:
        stored = np.load(bdir / "xb.npy", mmap_mode="r")
        if not np.array_equal(stored[:1000], xb[:1000]):
            raise SystemExit(f"{bdir}/xb.npy holds other vectors than {args.set}'s base")
    faiss.omp_set_num_threads(2)
    D, I = ann.exact_search(xb, xq, K)
    np.save(sdir / "xq.npy", xq)
    np.save(sdir / "gt.npy", I)
    emit({"step": "data", "set": args.set, "base": base, "nb": len(xb), "nq": len(xq), "threads": {"exact": 2},
          "cos_1st": round(float(D[:, 0].mean()), 4), "cos_kth": round(float(D[:, -1].mean()), 4),
          "seconds": round(time.perf_counter() - t0, 1)}, args.out)  # fmt: skip


# --- build --------------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> None:
    bdir = args.work / args.base
    xb = np.load(bdir / "xb.npy", mmap_mode="r")
    n, d = xb.shape
    nlist = int(args.factory.split(",")[0][3:].split("_")[0])
    n_train = min(n, max(nlist * args.per_list, 65_536))
    faiss.omp_set_num_threads(args.threads)
    index = faiss.index_factory(d, args.factory, faiss.METRIC_INNER_PRODUCT)
    sample = np.sort(np.random.default_rng(1234).choice(n, n_train, replace=False))
    xt = np.ascontiguousarray(xb[sample])
    t0 = time.perf_counter()
    c0 = time.process_time()
    train(index, xt, seed=1234, two_level=args.two_level)
    t1, c1 = time.perf_counter(), time.process_time()
    for start in range(0, n, 131_072):
        index.add(np.ascontiguousarray(xb[start : start + 131_072]))
    t2, c2 = time.perf_counter(), time.process_time()
    (bdir / "ivf").mkdir(exist_ok=True)
    path = bdir / "ivf" / f"{slug(args.factory)}.faiss"
    faiss.write_index(index, str(path))
    ivf = ivf_of(index)
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    padded = int((np.ceil(sizes / 32) * 32).sum())
    emit({"step": "build", "base": args.base, "factory": args.factory, "nb": n,
          "train_points": n_train, "train_s": round(t1 - t0, 1), "add_s": round(t2 - t1, 1),
          "train_cpu_s": round(c1 - c0, 1), "add_cpu_s": round(c2 - c1, 1),
          "two_level": args.two_level, "threads": {"build": args.threads}, "index_bytes": path.stat().st_size,
          "list_size_min_median_max": [int(sizes.min()), int(np.median(sizes)), int(sizes.max())],
          "fastscan_padding": round(padded / n - 1, 3)}, args.out)  # fmt: skip


def cmd_refine(args: argparse.Namespace) -> None:
    bdir = args.work / args.base
    xb = np.load(bdir / "xb.npy", mmap_mode="r")
    d = xb.shape[1]
    (bdir / "refine").mkdir(exist_ok=True)
    for codes in args.codes.split(","):
        t0 = time.perf_counter()
        if codes == "Flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
        else:
            index = faiss.index_factory(d, codes, faiss.METRIC_INNER_PRODUCT)
            index.train(np.ascontiguousarray(xb[:: max(1, len(xb) // 100_000)]))
        for start in range(0, len(xb), 131_072):
            index.add(np.ascontiguousarray(xb[start : start + 131_072]))
        faiss.write_index(index, str(bdir / "refine" / f"{codes}.faiss"))
        emit({"step": "refine", "base": args.base, "codes": codes, "threads": {"add": faiss.omp_get_max_threads()},
              "seconds": round(time.perf_counter() - t0, 1)}, args.out)  # fmt: skip


# --- sweep --------------------------------------------------------------------------------------


def load_design(bdir: Path, design: str, refines: dict[str, faiss.Index]) -> faiss.Index:
    """``FACTORY:REFINE`` (REFINE: Flat, SQfp16, SQ8 or none) -> the index as a build makes it."""
    factory, _, codes = design.partition(":")
    base = faiss.read_index(str(bdir / "ivf" / f"{slug(factory)}.faiss"))
    if codes in ("", "none"):
        index = base
    else:
        if codes not in refines:
            refines[codes] = faiss.read_index(str(bdir / "refine" / f"{codes}.faiss"))
        if codes == "Flat":  # what ``RFlat`` builds: IndexRefineFlat, over the shared vectors
            index = faiss.IndexRefineFlat(faiss.IndexFlatIP(base.d))  # (must start empty)
            index.base_index, index.refine_index = base, refines[codes]
        else:
            index = faiss.IndexRefine(base, refines[codes])
        index.own_fields = index.own_refine_index = False  # Python owns both
        index.ntotal, index.is_trained = base.ntotal, True
        index.referenced_objects = [base, refines[codes]]
    ann.use_serving_implementation(index)
    return index


def faiss_search(index: faiss.Index, params: faiss.SearchParameters, xq: np.ndarray) -> Search:
    def one(i: int) -> np.ndarray:
        ids: np.ndarray = index.search(xq[i : i + 1], K, params=params)[1][0]
        return ids

    return one


def faiss_search_each(
    index: faiss.Index, params: list[faiss.SearchParameters], xq: np.ndarray
) -> Search:
    def one(i: int) -> np.ndarray:
        ids: np.ndarray = index.search(xq[i : i + 1], K, params=params[i])[1][0]
        return ids

    return one


def adaptive_nprobes(
    index: faiss.Index, xq: np.ndarray, delta: float, lo: int, hi: int
) -> np.ndarray:
    """Per query: the lists whose centroid scores within ``delta`` of its best, in [lo, hi].
    (Computed outside the timed search: a real implementation would pass the assignment on.)"""
    ivf = ivf_of(index)
    quantizer = faiss.downcast_index(ivf.quantizer)
    flat = quantizer.storage if isinstance(quantizer, faiss.IndexHNSW) else quantizer
    scores = xq @ flat.reconstruct_n(0, ivf.nlist).T
    best = scores.max(axis=1, keepdims=True)
    return np.clip((scores >= best - delta).sum(axis=1), lo, min(hi, ivf.nlist))


def hnsw_search(index: Any, ef: int, xq: np.ndarray) -> Search:
    def one(i: int) -> np.ndarray:
        index.set_ef(ef)  # index-wide state: set per call (designs are interleaved)
        ids: np.ndarray = index.knn_query(xq[i : i + 1], k=K)[0][0].astype(np.int64)
        return ids

    return one


def configs(
    args: argparse.Namespace, designs: dict[str, Any], xq: np.ndarray
) -> list[dict[str, Any]]:
    """One dict per measured setting: its labels and ``search`` (query row -> ids)."""
    out: list[dict[str, Any]] = []
    for spec, index in designs.items():
        design, _, points = spec.partition("@")
        if design.startswith("hnswlib:"):
            for ef in (int(x) for x in points.split(",")):
                out.append(
                    {"design": design, "ef_search": ef, "search": hnsw_search(index, ef, xq)}
                )
            continue
        refine = ann.has_refine(index)
        if points.startswith("delta="):  # per-query nprobe: lists within delta of the best
            for delta in (float(x) for x in points[6:].split(",")):
                for kf in (int(x) for x in args.k_factors.split(",")) if refine else (1,):
                    nprobe = adaptive_nprobes(index, xq, delta, args.min_nprobe, args.max_nprobe)
                    params = [search_params(index, int(p), kf) for p in nprobe]
                    out.append({"design": design, "delta": delta, "k_factor": kf,
                                "nprobe": round(float(nprobe.mean()), 1),
                                "search": faiss_search_each(index, params, xq)})  # fmt: skip
            continue
        for nprobe in (int(x) for x in (points or args.nprobes).split(",")):
            for kf in (int(x) for x in args.k_factors.split(",")) if refine else (1,):
                for eff in (int(x) for x in args.ef_factor.split(",")):
                    hnsw = has_hnsw_quantizer(index)
                    if eff and not hnsw:
                        continue  # no efSearch to sweep: once, with the rule
                    params = search_params(index, nprobe, kf, eff)
                    ef = quantizer_ef(nprobe, eff or QUANTIZER_EF_FACTOR) if hnsw else None
                    out.append({"design": design, "nprobe": nprobe, "k_factor": kf,
                                "quantizer_ef": ef, "search": faiss_search(index, params, xq)})  # fmt: skip
    return out


def load_hnsw(path: str, d: int) -> Any:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=d)
    index.load_index(path)
    index.set_num_threads(1)
    return index


def cmd_sweep(args: argparse.Namespace) -> None:
    sdir, bdir = args.work / args.set, args.work / BASES[args.set]
    xq, gt = np.load(sdir / "xq.npy")[: args.nq], np.load(sdir / "gt.npy")[: args.nq]
    refines: dict[str, faiss.Index] = {}
    designs: dict[str, Any] = {}
    for spec in args.design:
        design = spec.partition("@")[0]
        if design.startswith("hnswlib:"):
            designs[spec] = load_hnsw(design.partition(":")[2], xq.shape[1])
        else:
            designs[spec] = load_design(bdir, design, refines)
    runs = configs(args, designs, xq)
    faiss.omp_set_num_threads(1)
    for run in runs:  # warm-up: page in every list and code table
        for i in range(min(20, len(xq))):
            run["search"](i)
    nq, block = len(xq), args.block
    cpu = np.zeros((len(runs), args.rounds, nq))
    wall = np.zeros_like(cpu)
    found = np.full((len(runs), nq, K), -1, dtype=np.int64)
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for b, start in enumerate(range(0, nq, block)):
            shift = (r * 7 + b) % len(runs)
            for j in [*range(shift, len(runs)), *range(shift)]:  # rotate the order per block
                search = runs[j]["search"]
                for i in range(start, min(nq, start + block)):
                    w0, c0 = time.perf_counter(), time.thread_time()
                    ids = search(i)
                    cpu[j, r, i] = time.thread_time() - c0
                    wall[j, r, i] = time.perf_counter() - w0
                    if r == 0:
                        found[j, i, : len(ids)] = ids[:K]
        load.append(os.getloadavg()[0])
    for j, run in enumerate(runs):
        per_query = ann.recall_per_query(found[j], gt)
        c, w = cpu[j].ravel() * 1e3, wall[j].ravel() * 1e3
        labels = {key: v for key, v in run.items() if key != "search"}
        emit({"step": "sweep", "run": args.run, "set": args.set, **labels,
              "design_slug": design_slug(labels["design"]), "nq": nq,
              "recall_at_100": round(float(per_query.mean()), 4),
              "cpu_ms_mean": round(float(c.mean()), 4), "cpu_ms_p50": round(float(np.median(c)), 4),
              "cpu_ms_p99": round(float(np.percentile(c, 99)), 4),
              "wall_ms_p50": round(float(np.median(w)), 4), "wall_ms_p99": round(float(np.percentile(w, 99)), 4),
              "rounds": args.rounds, "interleaved_with": len(runs), "threads": {"search": 1},
              "load_avg_during": [round(min(load), 2), round(max(load), 2)]}, args.out)  # fmt: skip


def cmd_table(args: argparse.Namespace) -> None:
    """The sweep rows of one set in a results file as a Markdown table (docs figures)."""
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["step"] == "sweep" and r["set"] == args.set]
    if args.run:
        rows = [r for r in rows if r.get("run") == args.run]
    print("| design | setting | recall@100 | CPU ms mean | CPU ms p99 | wall ms p50 / p99 | load |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        if "ef_search" in r:
            setting = f"efSearch {r['ef_search']}"
        elif "delta" in r:
            setting = f"delta {r['delta']} (mean nprobe {r['nprobe']}), k_factor {r['k_factor']}"
        else:
            setting = f"nprobe {r['nprobe']}, k_factor {r['k_factor']}"
        design = r["design"].split("/")[-1] if r["design"].startswith("hnswlib") else r["design"]
        print(f"| `{design}` | {setting} | {r['recall_at_100']:.4f} | {r['cpu_ms_mean']:.2f} "
              f"| {r['cpu_ms_p99']:.2f} | {r['wall_ms_p50']:.1f} / {r['wall_ms_p99']:.0f} "
              f"| {r['load_avg_during'][0]:.0f}-{r['load_avg_during'][1]:.0f} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("data", "build", "refine", "sweep"):
        s = sub.add_parser(name)
        s.add_argument("--work", type=Path, required=True)
        s.add_argument("--out", type=Path, help="also append the JSON lines here")
    t = sub.add_parser("table")
    t.add_argument("--results", type=Path, required=True)
    t.add_argument("--set", choices=sorted(BASES), required=True)
    t.add_argument("--run", help="only rows of this run label")
    sub.choices["data"].add_argument("--set", choices=sorted(BASES), required=True)
    b = sub.choices["build"]
    b.add_argument("--base", choices=sorted(set(BASES.values())), required=True)
    b.add_argument("--factory", required=True, help="IVF part only, e.g. IVF8192_HNSW32,PQ96x4fsr")
    b.add_argument("--per-list", type=int, default=64)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument(
        "--two-level",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force two-level (or flat) coarse k-means; default: by nlist",
    )
    r = sub.choices["refine"]
    r.add_argument("--base", choices=sorted(set(BASES.values())), required=True)
    r.add_argument("--codes", default="Flat,SQfp16,SQ8")
    s = sub.choices["sweep"]
    s.add_argument("--set", choices=sorted(BASES), required=True)
    s.add_argument(
        "--design",
        action="append",
        required=True,
        help="FACTORY:REFINE[@NPROBES | @delta=D,D: per-query nprobe], or hnswlib:PATH@EF,EF,...",
    )
    s.add_argument("--nprobes", default="", help="for designs without @NPROBES, e.g. 64,128")
    s.add_argument("--k-factors", default="4")
    s.add_argument("--ef-factor", default="0", help="quantizer efSearch / nprobe; 0: the rule")
    s.add_argument("--run", default="", help="a label recorded in every row (docs tables)")
    s.add_argument("--min-nprobe", type=int, default=32, help="adaptive (delta=) designs")
    s.add_argument("--max-nprobe", type=int, default=1024, help="adaptive (delta=) designs")
    s.add_argument("--nq", type=int, default=1000)
    s.add_argument("--rounds", type=int, default=2)
    s.add_argument("--block", type=int, default=25)
    args = p.parse_args()
    commands = {"data": cmd_data, "build": cmd_build, "refine": cmd_refine, "sweep": cmd_sweep}
    {**commands, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
