"""What ``adindex root`` adds to a call: 1-4 leaves on this machine, against a leaf called directly.

For each shard count N the same catalog is built with ``--shards N`` (the first build tunes
nprobe and k_factor on held-out queries; the others reuse them, so every N searches alike), N
leaves (``adindex serve --shard I``) and a root are started, and single calls (one client, one
call in flight) are timed, interleaved query by query in rotating order, all pinned to the
same version: through the root; each leaf alone, one after the other; all leaves at once from
the client (the fan-out without a root). Per N it reports p50/p99 of each; "root adds" is the
root's percentile minus the client's own fan-out's: the root's hop, merge, reply and Python
gRPC on both sides of it (all in ms).

On this 2-core machine N leaves, the root and the client share the cores, so with N >= 2 a
fanned-out call also waits for leaves queued behind each other; on a deployment with a machine
per leaf that part disappears. Every leaf runs with ``--alone-threads 1`` (one OpenMP thread per
search) so that N concurrent leaf searches do not oversubscribe the cores.

Usage::

    python -m benchmarks.root_overhead run --nb 100000 --shards 1,2,3,4 \\
        --out benchmarks/results/root_overhead.jsonl
    python -m benchmarks.root_overhead report benchmarks/results/root_overhead.jsonl

Every row is self-describing (``benchmarks.provenance``); ``report`` prints the table that
``make docs`` generates in docs/serving.md from docs/results/root_overhead.jsonl (the
``root-overhead`` view of ``benchmarks.doc_views_features``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from benchmarks.load import Spawned

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OverheadRun:
    """One measurement: the root over N leaves of one catalog."""

    dataset: str
    nb: int
    d: int
    nq: int
    k: int
    shards: int
    factory: str
    nprobe: int
    k_factor: int
    repeats: int
    warmup: int


def _root(leaves: Sequence[str]) -> Spawned:
    """``adindex root`` over loopback leaves, ready once its health says SERVING."""
    from benchmarks.load import Spawned

    root = Spawned()
    cmd = [sys.executable, "-m", "retrieval.cli", "root", "--port", "0",
           "--leaves", ",".join(leaves)]  # fmt: skip
    root._start(cmd, None, ready="Health SERVING")
    return root


def _cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def pct(a: np.ndarray, p: float) -> float:
    return round(float(np.percentile(a, p)), 3)


def _timed(call: Any, request: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    response = call(request, timeout=30)
    return (time.perf_counter() - t0) * 1e3, response


def measure(
    run: OverheadRun, root: Spawned, leaves: Sequence[Any], xq: np.ndarray, truth: np.ndarray
) -> dict[str, Any]:
    """Per query, interleaved in rotating order: the root; every leaf alone, one after the
    other; every leaf at once from the client (the fan-out without the root)."""
    import grpc

    from indexer.ann import recall_at_k
    from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

    channels = [grpc.insecure_channel(t) for t in [root.target, *(s.target for s in leaves)]]
    services = [retrieval_pb2_grpc.RetrievalServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
    stubs = [service.Retrieve for service in services]
    info = services[0].GetIndexInfo(retrieval_pb2.GetIndexInfoRequest(), timeout=10)
    version = info.index_version
    requests = [
        retrieval_pb2.RetrieveRequest(user_embedding=q.tolist(), k=run.k, index_version=version)
        for q in xq
    ]
    for r in requests[: run.warmup]:
        for stub in stubs:
            stub(r, timeout=30)
    root_ms, leaf_ms, fanout_ms, found = [], [], [], []

    def via_root(r: Any, rep: int) -> None:
        ms, response = _timed(stubs[0], r)
        root_ms.append(ms)
        if rep == 0:
            assert not response.partial, "a leaf did not answer"
            found.append(np.array([int(c.ad_id) for c in response.candidates]))

    def each_leaf(r: Any, rep: int) -> None:
        leaf_ms.append([_timed(stub, r)[0] for stub in stubs[1:]])

    def fan_out(r: Any, rep: int) -> None:
        t0 = time.perf_counter()
        calls = [stub.future(r, timeout=30) for stub in stubs[1:]]
        for call in calls:
            call.result()
        fanout_ms.append((time.perf_counter() - t0) * 1e3)

    arms = [via_root, each_leaf, fan_out]
    cpu0 = _cpu_s(root.proc.pid)
    for rep in range(run.repeats):
        for i, r in enumerate(requests):
            for k in range(len(arms)):
                arms[(i + rep + k) % len(arms)](r, rep)
    root_cpu_s = _cpu_s(root.proc.pid) - cpu0
    for c in channels:
        c.close()
    leaf = np.asarray(leaf_ms)  # (calls, N): each leaf's latency for the query, alone
    slowest = leaf.max(axis=1)
    root_arr, fanout = np.asarray(root_ms), np.asarray(fanout_ms)
    return {
        "benchmark": "root_overhead",
        "kind": "overhead",
        "name": "root-overhead",
        **asdict(run),
        "recall_at_k": round(recall_at_k(found, truth[:, : run.k]), 4),
        "root_p50_ms": pct(root_arr, 50),
        "root_p99_ms": pct(root_arr, 99),
        "leaf0_p50_ms": pct(leaf[:, 0], 50),
        "leaf0_p99_ms": pct(leaf[:, 0], 99),
        "slowest_leaf_p50_ms": pct(slowest, 50),
        "slowest_leaf_p99_ms": pct(slowest, 99),
        "fanout_p50_ms": pct(fanout, 50),
        "fanout_p99_ms": pct(fanout, 99),
        # the root's own cost: its hop, merge and Python gRPC, over the same fan-out
        "added_p50_ms": round(pct(root_arr, 50) - pct(fanout, 50), 3),
        "added_p99_ms": round(pct(root_arr, 99) - pct(fanout, 99), 3),
        "added_vs_slowest_leaf_p50_ms": round(pct(root_arr, 50) - pct(slowest, 50), 3),
        "added_vs_slowest_leaf_p99_ms": round(pct(root_arr, 99) - pct(slowest, 99), 3),
        "root_cpu_ms_per_call": round(root_cpu_s * 1e3 / len(root_ms), 3),
        "calls": len(root_ms),
        "threads": {"leaf_alone_threads": 1, "leaf_omp_threads": 1, "client": 1},
    }


def _build(
    catalog: Path, out: Path, shards: int, nprobe: int | None, k_factor: int | None, queries: Path
) -> Any:
    from indexer.build import BuildConfig, build

    config = BuildConfig(
        catalog=catalog,
        out=out,
        shards=shards,
        nprobe=nprobe,
        k_factor=k_factor,
        queries=queries,
        allow_below_target=nprobe is not None,  # later builds reuse the first build's point
    )
    return build(config).manifest


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.datasets import calibrated
    from benchmarks.load import Server
    from benchmarks.provenance import command, load_avg, provenance
    from benchmarks.systems import exact_neighbours, write_vector_catalog

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    ds = calibrated(args.nb, args.nq + 200)
    xq, held_out = ds.xq[: args.nq], ds.xq[args.nq :]
    np.save(work / "held_out.npy", held_out)
    catalog = work / "catalog.parquet"
    write_vector_catalog(catalog, ds.xb)
    truth = exact_neighbours(ds.xb, xq, args.k, "ip")
    rows: list[dict[str, Any]] = []
    nprobe = k_factor = None
    for shards in args.shards:
        t0 = time.perf_counter()
        index = work / f"index-{shards}"
        if args.reuse_builds and (index / "LATEST").is_file():
            from indexer.artifact import read_manifest, resolve

            manifest = read_manifest(resolve(index))
        else:
            manifest = _build(catalog, index, shards, nprobe, k_factor, work / "held_out.npy")
        build_s = round(time.perf_counter() - t0, 1)
        nprobe, k_factor = manifest.search.nprobe, manifest.search.k_factor
        leaves = [
            Server(work / f"index-{shards}", False, 16, ("--shard", str(s)), alone_threads=1)
            for s in range(shards)
        ]
        try:
            root = _root([s.target for s in leaves])
            try:
                cfg = OverheadRun(
                    dataset=ds.name,
                    nb=args.nb,
                    d=ds.xb.shape[1],
                    nq=args.nq,
                    k=args.k,
                    shards=shards,
                    factory=manifest.index.factory,
                    nprobe=nprobe,
                    k_factor=k_factor,
                    repeats=args.repeats,
                    warmup=args.warmup,
                )
                row = measure(cfg, root, leaves, xq, truth)
            finally:
                root.close()
        finally:
            for s in leaves:
                s.close()
        row.update(build_s=build_s, load_avg=load_avg())
        row.update(provenance(command(args.argv, module="benchmarks.root_overhead")))
        print(
            f"{shards} leaves: root {row['root_p50_ms']:.2f}/{row['root_p99_ms']:.2f} ms, "
            f"fan-out without root {row['fanout_p50_ms']:.2f}/{row['fanout_p99_ms']:.2f} ms, "
            f"root adds {row['added_p50_ms']:.2f}/{row['added_p99_ms']:.2f} ms (p50/p99), "
            f"R@{args.k} {row['recall_at_k']:.4f}",
            flush=True,
        )
        rows.append(row)
        if args.out is not None:
            with args.out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    return rows


def report(path: Path) -> str:
    """The docs table (docs/serving.md, the ``root-overhead`` view) of a results file."""
    from benchmarks.doc_views import Spec
    from benchmarks.doc_views_features import root_overhead_view

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return root_overhead_view(rows, Spec("table", "root-overhead"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.root_overhead", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="build, start leaves and a root, time interleaved calls")
    r.add_argument(
        "--nb", type=int, default=100_000, help="ads (calibrated set; default: %(default)s)"
    )
    r.add_argument("--nq", type=int, default=500, help="timed queries (default: %(default)s)")
    r.add_argument("--k", type=int, default=100, help="candidates per call (default: %(default)s)")
    r.add_argument("--shards", default="1,2,3,4", help="shard counts (default: %(default)s)")
    r.add_argument(
        "--repeats", type=int, default=3, help="passes over the queries (default: %(default)s)"
    )
    r.add_argument(
        "--warmup", type=int, default=50, help="untimed calls first (default: %(default)s)"
    )
    r.add_argument(
        "--work",
        type=Path,
        default=Path("benchmarks/results/root_overhead"),
        help="builds and catalog (default: %(default)s)",
    )
    r.add_argument("--out", type=Path, help="append one JSON line per shard count here")
    r.add_argument(
        "--reuse-builds",
        action="store_true",
        help="serve the versions a previous run built under --work (same --nb) instead of "
        "building again",
    )
    q = sub.add_parser("report", help="print the docs table from JSON lines")
    q.add_argument("path", type=Path)
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.command == "report":
        print(report(args.path))
        return 0
    args.shards = [int(s) for s in args.shards.split(",")]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
