"""Train, add and sweep one FAISS factory string on the calibrated 1M x 384 set (docs section 3.6).

    python docs/experiments/ivf_1m.py "IVF4096,PQ192x4fs,RFlat" --per-list 64 \
        --k-factors 4 --nprobes 128,256,320,384,512

Prints one JSON line for the build (training points, train and add seconds) and one per
(k_factor, nprobe): recall@100 of the first 1,000 queries against exact search, and p50/p99 of
300 single-query searches on one OpenMP thread. A row stops once recall passes 0.985.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.datasets

from benchmarks import datasets
from indexer.ann import exact_search, recall_at_k, search_params

NQ, K, TIMED, WARMUP = 1_000, 100, 300, 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("factory")
    ap.add_argument("--per-list", type=int, default=64, help="k-means training points per list")
    ap.add_argument("--k-factors", default="4")
    ap.add_argument("--nprobes", default="128,256,320,384,512")
    args = ap.parse_args()
    ds = datasets.calibrated(1_000_000, 10_000)
    xb, xq = ds.xb, ds.xq[:NQ]
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
    print(json.dumps({"factory": args.factory, **build}), flush=True)

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
            print(json.dumps({"factory": args.factory, **point}), flush=True)
            if recall > 0.985:
                break


if __name__ == "__main__":
    main()
