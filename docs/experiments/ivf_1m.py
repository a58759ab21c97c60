"""Train, add and sweep one FAISS factory string on the calibrated 1M x 384 set (docs section 3.6).

    python docs/experiments/ivf_1m.py "IVF4096,PQ192x4fs,RFlat" --per-list 64 \
        --k-factors 4 --nprobes 128,256,320,384,512

Prints one JSON line for the build (training points, train and add seconds), one per
(k_factor, nprobe): recall@100 of the first 1,000 queries against exact search, and p50/p99 of
300 single-query searches on one OpenMP thread (a row stops once recall passes 0.985), and a
summary (recall at nprobe 256, the cheapest point reaching 0.95). Each is appended,
self-describing (``benchmarks.provenance``), to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.datasets

from benchmarks import datasets
from benchmarks.provenance import command, provenance
from indexer.ann import exact_search, recall_at_k, search_params

NQ, K, TIMED, WARMUP = 1_000, 100, 300, 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("factory")
    ap.add_argument("--per-list", type=int, default=64, help="k-means training points per list")
    ap.add_argument("--k-factors", default="4")
    ap.add_argument("--nprobes", default="128,256,320,384,512")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/experiments/ivf-1m.jsonl"))
    args = ap.parse_args()
    cmd = command()
    ds = datasets.calibrated(1_000_000, 10_000)
    xb, xq = ds.xb, ds.xq[:NQ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    threads = {"single": 1, "build": 2, "how": "train and add on 2 OpenMP threads, search on 1"}
    base = {"benchmark": "ivf_1m", "dataset": ds.name, "nb": ds.nb, "d": ds.d,
            "factory": args.factory, "threads": threads}  # fmt: skip

    def emit(kind: str, row: Mapping[str, object]) -> None:
        print(json.dumps(row), flush=True)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps({**base, "kind": kind, **row, **provenance(cmd)}) + "\n")

    faiss.omp_set_num_threads(2)
    _, truth = exact_search(xb, xq, K)
    nlist = int(args.factory.split(",")[0][3:].split("_")[0])
    index = faiss.index_factory(xb.shape[1], args.factory, faiss.METRIC_INNER_PRODUCT)
    n_train = min(len(xb), max(nlist * args.per_list, 65_536))
    sample = np.sort(np.random.default_rng(0).choice(len(xb), n_train, replace=False))
    t0 = time.perf_counter()
    index.train(xb[sample])
    t1 = time.perf_counter()
    index.add(xb)
    t2 = time.perf_counter()
    build = {"train_points": n_train, "train_s": round(t1 - t0, 1), "add_s": round(t2 - t1, 1)}
    emit("build", build)
    points: list[dict[str, float]] = []

    for kf in (int(x) for x in args.k_factors.split(",")):
        for nprobe in (int(x) for x in args.nprobes.split(",")):
            params = search_params(index, nprobe, kf, K)
            faiss.omp_set_num_threads(2)
            _, found = index.search(xq, K, params=params)
            recall = recall_at_k(found, truth)
            faiss.omp_set_num_threads(1)
            for i in range(WARMUP):
                index.search(xq[i : i + 1], K, params=params)
            ms = []
            for i in range(TIMED):
                t = time.perf_counter()
                index.search(xq[i : i + 1], K, params=params)
                ms.append((time.perf_counter() - t) * 1e3)
            point = {"k_factor": kf, "nprobe": nprobe, "recall": round(float(recall), 4)}
            point |= {"p50_ms": round(float(np.percentile(ms, 50)), 3)}
            point |= {"p99_ms": round(float(np.percentile(ms, 99)), 3)}
            emit("point", point)
            points.append(point)
            if recall > 0.985:
                break
    at_256 = next((p for p in points if p["nprobe"] == 256), None)
    reach = [p for p in points if p["recall"] >= 0.95]
    cheapest = min(reach, key=lambda p: p["p50_ms"]) if reach else None
    emit("summary", {**build, "recall_at_nprobe_256": at_256 and at_256["recall"],
                     "cheapest_95": cheapest})  # fmt: skip


if __name__ == "__main__":
    main()
