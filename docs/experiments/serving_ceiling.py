"""How many Retrieve calls/s this machine can serve at all, from three measurements (docs/serving.md).

    python docs/experiments/serving_ceiling.py --index /tmp/load-1m/index --nprobe 320
    python docs/experiments/serving_ceiling.py --index /tmp/load-100k/index   # its default nprobe

1. **FAISS alone**, no RPC: the served artifact's search at ``--nprobe`` (its recall@k against
   the exact top k in ``truth.npy`` beside the index root, from ``benchmarks.load make-index``):
   CPU per query on one OpenMP thread for single queries and for batches of 16 (what
   micro-batching can gain), the latency of a lone query on 1 and 2 threads (what the server
   does while a search is alone), and queries/s with one single-query search per core.
2. **The cheapest possible Python Retrieve server**: a sync gRPC server with the same worker
   count whose Retrieve does nothing but return one prebuilt 100-candidate response (no
   validation, no search, no interceptors), driven by the load tool's clients (the same spawned
   client processes and protobuf messages as ``benchmarks.load``): calls/s at 1 and 16 clients
   and the CPU per call of clients and server.
3. **The budget**: at a target rate the machine has ``cores / rate`` of CPU per call for client,
   server and search together; the floor is search (batched) + bare server + client.

Prints JSON lines and the budget; writes them, each self-describing (``benchmarks.provenance``),
to ``benchmarks/results/load/ceiling{-LABEL}.jsonl``; ``python -m benchmarks.publish`` copies
the ones a doc cites to docs/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository's packages

import numpy as np  # noqa: E402

TIMED, BATCH = 400, 16


def faiss_alone(index_root: Path, nprobe: int, k: int) -> dict[str, Any]:
    import faiss

    from indexer.ann import recall_at_k
    from indexer.artifact import load
    from retrieval.searcher import Searcher

    art = load(index_root / (index_root / "LATEST").read_text().strip())
    searcher = Searcher(art)
    xq = np.load(index_root.parent / "queries.npy").astype(np.float32)[: 2 * TIMED]
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    truth = np.load(index_root.parent / "truth.npy")[: 2 * TIMED, :k]
    # The server's own parameters (its k_factor and eligibility selector), from the searcher.
    nprobe = nprobe or art.manifest.search.nprobe  # 0: the artifact's default, as the server
    params = searcher._params(searcher.point._replace(nprobe=nprobe), k, searcher.view.selector.sel)
    faiss.omp_set_num_threads(1)
    _, found = art.index.search(xq, k, params=params)
    recall = recall_at_k(found, truth)

    def cpu_per_query(batch: int) -> float:
        t0 = time.process_time()
        for s in range(0, TIMED, batch):
            art.index.search(xq[s : s + batch], k, params=params)
        return 1e3 * (time.process_time() - t0) / TIMED

    single, batched = cpu_per_query(1), cpu_per_query(BATCH)
    cores = os.cpu_count() or 1

    def lone_latency_ms(threads: int) -> tuple[float, float]:
        """p50, p99 wall time of single-query searches on ``threads`` OpenMP threads (the
        searcher selected FAISS's implementation 15, which splits one query's lists)."""
        faiss.omp_set_num_threads(threads)
        times = []
        for i in range(TIMED):
            t0 = time.perf_counter()
            art.index.search(xq[i : i + 1], k, params=params)
            times.append(1e3 * (time.perf_counter() - t0))
        faiss.omp_set_num_threads(1)
        p50, p99 = np.percentile(times, [50, 99])
        return round(float(p50), 3), round(float(p99), 3)

    lone = {n: lone_latency_ms(n) for n in (1, min(2, cores))}

    def one_core(lo: int) -> None:
        faiss.omp_set_num_threads(1)  # per thread
        for i in range(lo, lo + TIMED // cores):
            art.index.search(xq[i : i + 1], k, params=params)

    threads = [threading.Thread(target=one_core, args=(c * TIMED // cores,)) for c in range(cores)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    qps = (TIMED // cores) * cores / (time.perf_counter() - t0)
    return {
        "kind": "faiss-alone",
        "threads": {
            "single": 1,
            "lone": sorted(lone),
            "qps": cores,
            "how": "CPU per query on 1 OpenMP thread; lone-query latency on 1 and 2 "
            "threads; QPS: one single-query search per core",
        },
        "factory": art.manifest.index.factory,
        "nb": art.index.ntotal,
        "d": art.index.d,
        "nprobe": nprobe,
        "k": k,
        f"recall_at_{k}": round(float(recall), 4),
        "cpu_ms_per_query_single": round(single, 3),
        f"cpu_ms_per_query_batch{BATCH}": round(batched, 3),
        **{f"lone_p50_ms_{n}_threads": v[0] for n, v in lone.items()},
        **{f"lone_p99_ms_{n}_threads": v[1] for n, v in lone.items()},
        "qps_one_search_per_core": round(qps),
        "cores": cores,
    }


def serve_bare(workers: int) -> None:
    """The cheapest Python Retrieve server: one prebuilt response for every call."""
    import grpc

    from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

    response = retrieval_pb2.RetrieveResponse(index_version="bare", nprobe=1, plan="ivf")
    for i in range(100):
        response.candidates.add(
            ad_id=f"ad-{i:07d}", advertiser_id=f"adv-{i:05d}", campaign_id=f"cmp-{i:06d}", score=0.5
        )

    class Bare(retrieval_pb2_grpc.RetrievalServiceServicer):
        def Retrieve(self, request: Any, context: Any) -> Any:
            return response

    server = grpc.server(futures.ThreadPoolExecutor(workers))
    retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(Bare(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def bare_server(index_root: Path, workers: int, clients: list[int]) -> list[dict[str, Any]]:
    from benchmarks.load import LoadRun, drive

    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare", "--workers", str(workers)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        target = f"127.0.0.1:{int(proc.stdout.readline())}"
        xq = np.load(index_root.parent / "queries.npy").astype(np.float32)
        rows = []
        for c in clients:
            run = LoadRun(
                target=target,
                mode="saturate",
                clients=c,
                procs=min(4, c),
                duration_s=10,
                warmup_s=2,
                max_calls=200_000,
                k=100,
            )
            r = drive(run, xq, proc.pid)
            rows.append(
                {
                    "kind": "bare-server",
                    "threads": {"workers": workers, "clients": c, "client_procs": run.procs},
                    "workers": workers,
                    "clients": c,
                    "qps": round(r.qps),
                    "p50_ms": round(r.p50_ms, 3),
                    "p99_ms": round(r.p99_ms, 3),
                    "client_cpu_ms": round(r.client_cpu_ms or 0, 3),
                    "server_cpu_ms": None if r.server_cpu_ms is None else round(r.server_cpu_ms, 3),
                }
            )
        return rows
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", type=Path, help="artifact root from benchmarks.load make-index")
    ap.add_argument("--nprobe", type=int, default=0, help="0 = the index's default")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--target-qps", type=float, default=1500)
    ap.add_argument("--label", default="")
    ap.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        serve_bare(args.workers)
        return
    if args.index is None:
        ap.error("--index is required")
    from benchmarks.provenance import command, provenance

    cmd = command()
    dataset = args.index.parent / "dataset.json"
    base = {"benchmark": "serving_ceiling", "k": args.k,
            "dataset": json.loads(dataset.read_text())["dataset"] if dataset.is_file() else None}  # fmt: skip
    rows = [{**base, **faiss_alone(args.index, args.nprobe, args.k), **provenance(cmd)}]
    print(json.dumps(rows[-1]), flush=True)
    base |= {key: rows[0][key] for key in ("factory", "nb", "d", "nprobe")}  # the searched index
    for row in bare_server(args.index, args.workers, [1, 16]):
        rows.append({**base, **row, **provenance(cmd)})
        print(json.dumps(row), flush=True)
    search, bare = rows[0], rows[-1]
    if bare["server_cpu_ms"] is None:
        raise SystemExit("the server's CPU time needs Linux /proc; no budget computed")
    floor = search[f"cpu_ms_per_query_batch{BATCH}"] + bare["server_cpu_ms"] + bare["client_cpu_ms"]
    budget = 1e3 * search["cores"] / args.target_qps
    verdict = {
        **base,
        "kind": "budget",
        "threads": {"cores": search["cores"]},
        "target_qps": args.target_qps,
        "cpu_ms_per_call_available": round(budget, 3),
        "cpu_ms_per_call_floor": round(floor, 3),
        "floor_parts": "batched search + bare server + clients (16 clients)",
        "max_qps_at_floor": round(1e3 * search["cores"] / floor),
        "max_qps_clients_elsewhere": round(1e3 * search["cores"] / (floor - bare["client_cpu_ms"])),
    }
    rows.append({**verdict, **provenance(cmd)})
    print(json.dumps(verdict), flush=True)
    out = (
        ROOT / "benchmarks/results/load" / f"ceiling{'-' + args.label if args.label else ''}.jsonl"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
