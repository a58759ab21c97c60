"""The recall controller on live traffic: how many calls until served recall holds the target.

    python docs/experiments/recall_control.py --dataset sample --out benchmarks/results/recall_control.jsonl

Builds an index (cached in ``--work``), starts ``adindex serve`` at its defaults (only the
index, free ports and JSON logs are given; ``--recall-control off`` for the comparison run),
sends ``--warmup`` live Retrieve calls of the dataset's queries (k=100, no nprobe, one client,
one after the other), then measures recall@100 and recall@10 of ``--measure`` other queries
through the server against exact search. Every visited default point is also measured
offline on those queries (``Searcher.search_batch`` at the point), so a row can say after how
many calls the served point first held the target.

Datasets (``--nb`` ads, 20,000 by default, like the outside check's catalog):

- ``sample``: ``benchmarks.text_data.load_sample``: the sample catalog's ad texts and its
  users (the mean of their pins), embedded with all-MiniLM-L6-v2; the build uses its default
  held-out queries (sampled from the catalog), as ``adindex build`` does without ``--queries``.
- ``calibrated``: the calibrated synthetic set (``benchmarks.datasets``) and its own queries
  (noisier than ads, sometimes between two clusters); the build uses its default held-out
  queries.
- ``calibrated-shift``: the same catalog; the build is given ``--queries`` drawn close to one
  cluster (``SHIFT_BUILD``), live queries always fall between two clusters of a topic and are
  noisier (``SHIFT_LIVE``): a held-out set easier than live traffic, on purpose.
- ``clustered``: isotropic blobs around 200 random centres, built with ``--queries`` of
  near-duplicates of ads, live queries between two centres with heavy noise.

Rows (JSON lines, self-describing: ``benchmarks.provenance``): ``kind=checkpoint`` every
``--every`` calls (served point, moves, samples, shadow outcomes, server CPU seconds), one
``kind=run`` per server run, and with ``--exact-costs`` one ``kind=exact_cost`` per size.
docs/serving.md's tables are generated from the rows published to
docs/results/recall_control.jsonl by ``make docs`` (views ``recall-control`` and ``exact-cost``
of ``benchmarks.doc_views_features``); ``--table`` prints them for any results file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository's packages

import numpy as np  # noqa: E402
from served import Server, offline_recall, series_sum, server_threads  # noqa: E402

from benchmarks.provenance import command, provenance  # noqa: E402

logger = logging.getLogger("recall_control")
# calibrated-shift: held-out queries near one cluster, live queries between two and noisier
SHIFT_BUILD = {"query_between_prob": 0.0, "query_iso_weight": 0.1, "query_weight": 0.4}
SHIFT_LIVE = {"query_between_prob": 1.0, "query_iso_weight": 0.9, "query_weight": 1.0}
K = 100
TARGET = 0.95  # the build's default target recall


def dataset(name: str, nb: int, nq: int, work: Path) -> tuple[np.ndarray, np.ndarray, Path | None]:
    """(xb, live queries, build queries file or None for the build's default)."""
    if name == "sample":
        from benchmarks.text_data import load_sample

        ds = load_sample(nb, nq, ROOT / "benchmarks" / "results" / "cache")
        return ds.xb, ds.xq, None
    if name == "clustered":
        return clustered(nb, nq, work)
    from benchmarks.datasets import CALIBRATED, calibrated, generate

    if name == "calibrated":
        ds = calibrated(nb, nq)
        return ds.xb, ds.xq, None
    # calibrated-shift: one catalog (the base does not depend on the query parameters); held-out
    # queries are later draws of the query stream than the live ones
    easy = generate(nb, nq + 500, params=replace(CALIBRATED, **SHIFT_BUILD))
    hard = generate(nb, nq, params=replace(CALIBRATED, **SHIFT_LIVE))
    assert np.array_equal(easy.xb, hard.xb)
    np.save(work / "build_queries.npy", easy.xq[nq:])
    return hard.xb, hard.xq, work / "build_queries.npy"


def clustered(nb: int, nq: int, work: Path, d: int = 384, n_clusters: int = 200) -> tuple[np.ndarray, np.ndarray, Path]:  # fmt: skip
    """Blobs around random centres; build queries near ads, live queries between two clusters."""
    from indexer.ann import normalize

    rng = np.random.default_rng(7)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    spread = 0.5 * rng.standard_normal((nb, d)).astype(np.float32)
    xb = normalize(centres[rng.integers(0, n_clusters, nb)] + spread)
    easy = xb[rng.choice(nb, 500, replace=False)]
    np.save(
        work / "build_queries.npy",
        normalize(easy + 0.01 * rng.standard_normal(easy.shape).astype(np.float32)),
    )
    a, b = rng.integers(0, n_clusters, nq), rng.integers(0, n_clusters, nq)
    w = rng.uniform(0.3, 0.7, (nq, 1)).astype(np.float32)
    noise = 0.9 * rng.standard_normal((nq, d)).astype(np.float32)
    return xb, normalize(w * centres[a] + (1 - w) * centres[b] + noise), work / "build_queries.npy"


def build_index(xb: np.ndarray, queries: Path | None, work: Path) -> Path:
    from benchmarks.systems import build_artifact, write_vector_catalog

    root = work / "index"
    if (root / "LATEST").is_file():
        return root
    write_vector_catalog(work / "catalog.parquet", xb)
    build_artifact(work / "catalog.parquet", root, factory=None, k_factor=None,
                   threads=os.cpu_count() or 1, queries=queries, target_recall=TARGET)  # fmt: skip
    return root


def described(args: argparse.Namespace, xb: np.ndarray, row: dict[str, Any]) -> dict[str, Any]:
    """A row with what makes it self-describing (``benchmarks.docs.REQUIRED``), stamped now."""
    return {"benchmark": "recall_control", **row, "dataset": args.dataset, "nb": len(xb),
            "d": xb.shape[1], "threads": server_threads(), "label": args.label,
            **provenance(args.cmd)}  # fmt: skip


def run(args: argparse.Namespace, root: Path, xb: np.ndarray, xq: np.ndarray, control: str) -> list[dict[str, Any]]:  # fmt: skip
    from indexer.ann import exact_search, recall_at_k
    from retrieval.client import RetrievalClient

    warm, held = xq[: args.warmup], xq[args.warmup : args.warmup + args.measure]
    server = Server(root, ["--recall-control", control])
    rows: list[dict[str, Any]] = []
    served: list[tuple[int, int]] = []
    try:
        cpu0, t0 = server.cpu_s(), time.perf_counter()
        with RetrievalClient(f"127.0.0.1:{server.port}", timeout_s=30) as client:
            default = (0, 0)
            for i in range(len(warm)):
                r = client.retrieve(warm[i], K)
                if (r.nprobe, r.k_factor) != default:  # moved, or this search widened
                    info = client.info()
                    default = (info.default_nprobe, info.default_k_factor)
                served.append(default)  # the default point that answered (or a later one)
                if (i + 1) % args.every == 0 or i + 1 == len(warm):
                    m = server.metrics()
                    rows.append(described(args, xb, {
                        "kind": "checkpoint", "control": control, "calls": i + 1,
                        "nprobe": default[0], "k_factor": default[1],
                        "moves": series_sum(m, "adindex_operating_point_moves_total"),
                        "control_samples": series_sum(m, "adindex_recall_control_samples_total"),
                        "shadow_measured": m.get('adindex_shadow_queries_total{outcome="measured"}', 0),
                        "shadow_dropped": m.get('adindex_shadow_queries_total{outcome="dropped"}', 0),
                        "server_cpu_s": round(server.cpu_s() - cpu0, 2),
                        "wall_s": round(time.perf_counter() - t0, 2),
                    }))  # fmt: skip
                    logger.info("%s", rows[-1])
            warm_cpu, warm_wall = server.cpu_s() - cpu0, time.perf_counter() - t0
            found, found10, lat = [], [], []
            for q in held:
                t = time.perf_counter()
                r = client.retrieve(q, K)
                lat.append(time.perf_counter() - t)
                found.append(np.array([int(c.ad_id) for c in r.candidates]))
            info = client.info()
        moves = [ln for ln in server.lines if ln.get("event") == "operating_point"]
    finally:
        server.stop()
    truth = exact_search(xb, held, K)[1]
    found10 = [f[:10] for f in found]
    points = {(n, f) for n, f in served} | {(info.default_nprobe, info.default_k_factor)}
    offline = offline_recall(root, held, truth, points, K)
    reached = next((i + 1 for i, p in enumerate(served) if offline[p] >= TARGET), None)
    manifest = json.loads(info.manifest_json)
    rows.append(described(args, xb, {
        "kind": "run", "control": control, "factory": info.index_factory, "nlist": manifest["index"]["nlist"],
        "build_point": [manifest["search"]["nprobe"], manifest["search"]["k_factor"]],
        "final_point": [info.default_nprobe, info.default_k_factor],
        "warmup_calls": len(warm), "measure_queries": len(held), "k": K, "target": TARGET,
        "served_recall_at_100": round(recall_at_k(found, truth), 4),
        "served_recall_at_10": round(recall_at_k(found10, truth[:, :10]), 4),
        "offline_recall_at_100_by_point": {f"{n},{f}": round(r, 4) for (n, f), r in sorted(offline.items())},
        "calls_until_served_point_holds_target": reached,
        "moves": [{k: ln[k] for k in ("ts", "direction", "nprobe", "k_factor", "old_nprobe", "old_k_factor")} | {"message": ln["message"]} for ln in moves],
        "warmup_server_cpu_s": round(warm_cpu, 2), "warmup_wall_s": round(warm_wall, 2),
        "measure_p50_ms": round(1e3 * float(np.percentile(lat, 50)), 3),
        "measure_p99_ms": round(1e3 * float(np.percentile(lat, 99)), 3),
        "load_avg": os.getloadavg(),
    }))  # fmt: skip
    logger.info("%s", rows[-1])
    return rows


def exact_costs(
    cmd: str, sizes: tuple[int, ...] = (20_000, 1_000_000), d: int = 384
) -> list[dict[str, Any]]:
    """CPU time of shadow's exact pass (``exact_search``, one thread) per group of 16 queries."""
    from threadpoolctl import threadpool_limits

    from indexer.ann import exact_search, omp_threads

    rows = []
    rng = np.random.default_rng(0)
    with threadpool_limits(1, user_api="blas"), omp_threads(1):
        for n in sizes:
            xb = rng.standard_normal((n, d), dtype=np.float32)
            xq = rng.standard_normal((16, d), dtype=np.float32)
            cpu = []
            for _ in range(3):
                t = time.process_time()
                exact_search(xb, xq, K)
                cpu.append(time.process_time() - t)
            rows.append({"benchmark": "recall_control", "kind": "exact_cost",
                         "dataset": "standard-normal", "nb": n, "d": d, "group": 16, "k": K,
                         "cpu_s_per_group": [round(c, 3) for c in cpu],
                         "threads": {"exact": 1, "how": "threadpool_limits(1, blas) and omp_threads(1)"},
                         "load_avg": os.getloadavg(), **provenance(cmd)})  # fmt: skip
            logger.info("%s", rows[-1])
            del xb
    return rows


def table(path: Path) -> str:
    """docs/serving.md's tables (views ``recall-control`` and ``exact-cost``) of a results file."""
    from benchmarks.doc_views import Spec
    from benchmarks.doc_views_features import exact_cost_view, recall_control_view

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return "\n\n".join(
        view(rows, Spec("table", name))
        for name, view in (("recall-control", recall_control_view), ("exact-cost", exact_cost_view))
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dataset",
        choices=("sample", "calibrated", "calibrated-shift", "clustered"),
        default="calibrated-shift",
    )
    p.add_argument("--nb", type=int, default=20_000, help="ads (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5_000, help="live calls (default: %(default)s)")
    p.add_argument(
        "--measure", type=int, default=1_000, help="measured queries (default: %(default)s)"
    )
    p.add_argument(
        "--every", type=int, default=250, help="calls per checkpoint row (default: %(default)s)"
    )
    p.add_argument("--control", choices=("on", "off", "both"), default="both")
    p.add_argument("--work", type=Path, default=Path("/tmp/recall-control"))
    p.add_argument("--label", default="", help="a name for these rows (e.g. the machine's state)")
    p.add_argument("--out", type=Path, help="append the JSON lines here")
    p.add_argument("--table", type=Path, help="only print the docs table of this results file")
    p.add_argument("--exact-costs", action="store_true", help="only time the exact pass")
    args = p.parse_args(argv)
    args.cmd = command(argv)
    if args.table:
        print(table(args.table))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.exact_costs:
        rows = exact_costs(args.cmd)
        if args.out:
            with args.out.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        return 0
    work = args.work / f"{args.dataset}-{args.nb}"
    work.mkdir(parents=True, exist_ok=True)
    xb, xq, build_queries = dataset(args.dataset, args.nb, args.warmup + args.measure, work)
    root = build_index(xb, build_queries, work)
    rows = []
    for control in ("on", "off") if args.control == "both" else (args.control,):
        (root / "operating_points.json").unlink(missing_ok=True)  # nothing learned before
        rows += run(args, root, xb, xq, control)
    (root / "operating_points.json").unlink(missing_ok=True)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    for row in rows:
        if row["kind"] == "run":
            print(f"{row['dataset']} control {row['control']}: build point {row['build_point']}, "
                  f"final {row['final_point']}, served recall@100 {row['served_recall_at_100']}, "
                  f"point held the target after {row['calls_until_served_point_holds_target']} calls")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
