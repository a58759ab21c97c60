"""An outside check of served recall: real queries sent to ``adindex serve`` at its defaults.

    python docs/experiments/outside_check.py realtext --out benchmarks/results/outside-check/realtext.jsonl
    python docs/experiments/outside_check.py esci --out benchmarks/results/outside-check/esci.jsonl
    python -m benchmarks.publish --from benchmarks/results/outside-check --to docs/results/outside-check.jsonl

What an ads team would do with its own catalog and traffic, using only the product's public
parts (the CLI, the gRPC client) and an exact search of its own:

1. write the ads as a Parquet catalog whose rows carry their embeddings (``ad_id``,
   ``advertiser_id``, ``campaign_id``, ``status=active``, ``title``, ``embedding``);
2. ``adindex build --catalog ads.parquet --out index`` at its defaults (a subprocess);
3. ``adindex serve --index index`` at its defaults (a subprocess on a free loopback port; only
   ``--port 0 --metrics-port 0 --log-format json`` are added, to find and watch it);
   ``operating_points.json`` is deleted first, so that nothing learned before is resumed;
4. ``--warmup`` Retrieve calls (k=100, no nprobe, one client, one call at a time) with real
   query embeddings through ``retrieval.client.RetrievalClient``;
5. ``--measure`` other queries through the server: recall@100 against the exact top 100
   (``indexer.ann.exact_search`` over the same normalised vectors) and, where graded
   judgements exist, NDCG@10 through the server over NDCG@10 of exact search.

Datasets (the data stays outside the repository):

- ``realtext``: ``benchmarks.realtext``'s 256,340 WordNet / GCIDE definitions as ads and its
  10,000 WordNet usage examples as queries, all-MiniLM-L6-v2, cached in
  ``~/.cache/adindex/realtext/`` (``python -m benchmarks.realtext`` builds the cache). Queries
  0..W-1 warm up, the next M are measured. No graded judgements.
- ``esci``: ``shared/data/esci_us_subset500`` (658 product titles, 500 shopping queries with
  graded judgements), embedded with the project's default embedder (``indexer.embedding``).
  500 queries cannot make 5,000 distinct calls: the warm-up cycles them, and all 500 are
  measured (so the measured queries were seen in the warm-up: the row says so).
- ``sample``: the ``adindex sample`` catalog (``indexer.sample``, 20,000 ads) and its
  pin-based users (the normalised mean of each user's 3-8 pin embeddings, as the demo makes
  them; ``benchmarks.text_data.load_sample``), embedded once and cached in ``--work``. Users
  1..W warm up, the next M are measured.

One JSON line per run (``kind=run``; self-describing: ``benchmarks.provenance``): the build's
point and estimate (manifest ``quality.chosen``), the point recall control settled on
(GetIndexInfo), its moves (log lines), samples and shadow outcomes (metrics), a trace every
``--every`` warm-up calls, served recall@100 with its bootstrap interval, the NDCG ratio, and,
for diagnosis, recall of the measured queries searched in-process at a few points
(``Searcher.search_batch``): the build's, the final one and wider ones.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository's packages

import numpy as np  # noqa: E402
from served import Server, adindex, offline_recall, series_sum, server_threads  # noqa: E402

from benchmarks.provenance import command, provenance  # noqa: E402

logger = logging.getLogger("outside_check")
K = 100
# ../shared beside the repository (the team's layout), else the shared machine's copy
ESCI_DIRS = (ROOT.parent / "shared" / "data" / "esci_us_subset500",
             Path("/work/shared/data/esci_us_subset500"))  # fmt: skip


class Skipped(Exception):
    """The dataset is not on this machine (the message says what is missing)."""


@dataclass(frozen=True)
class RealData:
    """Ads and real queries as a user would hold them."""

    name: str
    description: str
    xb: np.ndarray  # (nb, d) float32 ad embeddings
    ad_ids: list[str]
    titles: list[str]
    warm: np.ndarray  # (W, d) float32 warm-up queries
    held: np.ndarray  # (M, d) float32 measured queries
    warm_note: str  # how the warm-up relates to the measured queries
    qrels: list[dict[str, int]] | None = None  # per measured query: ad_id -> grade


def load_realtext(warmup: int, measure: int) -> RealData:
    """realtext from its cache: queries 0..warmup-1 warm up, the next ``measure`` are measured."""
    from benchmarks import realtext

    reason = realtext.missing()
    if reason is not None:
        raise Skipped(reason)
    nq = 10_000  # the cached query sample (benchmarks.realtext's default)
    if warmup + measure > nq:
        raise SystemExit(f"realtext has {nq} queries; --warmup + --measure = {warmup + measure}")
    ds = realtext.load_realtext(None, nq)
    titles, _ = realtext.texts()
    if len(titles) != len(ds.xb):
        raise RuntimeError(f"{len(titles)} base texts for {len(ds.xb)} cached embeddings")
    return RealData(
        "realtext", ds.description, ds.xb, [str(i) for i in range(len(ds.xb))], titles,
        ds.xq[:warmup], ds.xq[warmup : warmup + measure],
        f"queries 0-{warmup - 1} of the sample; measured {warmup}-{warmup + measure - 1} (disjoint)",
    )  # fmt: skip


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def load_esci(warmup: int, work: Path) -> RealData:
    """ESCI products as ads, its queries as users (warm-up cycles them), qrels as grades."""
    root = next((p for p in ESCI_DIRS if p.is_dir()), ESCI_DIRS[0])
    files = [root / n for n in ("products.csv", "queries.csv", "qrels.csv")]
    if not all(p.is_file() for p in files):
        raise Skipped(f"ESCI not found: need products.csv, queries.csv, qrels.csv in {root}")
    products, queries, judged = (_csv(p) for p in files)
    title_key = next(k for k in products[0] if k != "product_id")
    qrow = {q["query_id"]: i for i, q in enumerate(queries)}
    qrels: list[dict[str, int]] = [{} for _ in queries]
    for j in judged:
        if j["query_id"] in qrow:
            qrels[qrow[j["query_id"]]][j["product_id"]] = int(j["relevance"])
    cache = work / f"esci-{len(products)}-{len(queries)}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            xb, xq = z["xb"], z["xq"]
    else:
        from indexer.embedding import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()  # the project's default embedder
        xb = embedder.encode([p[title_key] for p in products], progress=True)
        xq = embedder.encode([q["query"] for q in queries], progress=True)
        np.savez(cache, xb=xb, xq=xq)
    warm = xq[np.arange(warmup) % len(xq)]
    return RealData(
        "esci", f"ESCI {root.name}: {len(products)} product titles, {len(queries)} shopping "
        "queries with graded judgements, all-MiniLM-L6-v2 (indexer.embedding default)",
        xb, [p["product_id"] for p in products], [p[title_key] for p in products], warm, xq,
        f"the {len(xq)} queries cycled {warmup / len(xq):g} times; all {len(xq)} measured "
        "(seen in the warm-up)", qrels,
    )  # fmt: skip


def load_sample(warmup: int, measure: int, work: Path, nb: int = 20_000) -> RealData:
    """``adindex sample``'s catalog (``nb`` ads) and ``warmup + measure`` of its pin-based users
    (the normalised mean of each user's 3-8 pin embeddings, as the demo makes them)."""
    from benchmarks.text_data import load_sample as embedded_sample
    from indexer.sample import generate_catalog

    ds = embedded_sample(nb, warmup + measure, work)  # embedded once, cached in ``work``
    records = generate_catalog(nb)
    return RealData(
        "sample", ds.description, ds.xb, [r.ad_id for r in records],
        [r.title for r in records], ds.xq[:warmup], ds.xq[warmup:],
        f"users 1-{warmup}; measured {warmup + 1}-{warmup + measure} (disjoint)",
    )  # fmt: skip


def write_catalog(path: Path, data: RealData) -> None:
    """The ads as a Parquet catalog with precomputed embeddings (README, "Catalog format")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, d = data.xb.shape
    table = pa.table({
        "ad_id": pa.array(data.ad_ids, type=pa.string()),
        "advertiser_id": pa.array([f"adv-{i % 1000}" for i in range(n)], type=pa.string()),
        "campaign_id": pa.array([f"cmp-{i % 5000}" for i in range(n)], type=pa.string()),
        "status": pa.array(["active"] * n, type=pa.string()),
        "title": pa.array(data.titles, type=pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(data.xb, dtype=np.float32).reshape(-1)), d
        ),
    })  # fmt: skip
    tmp = path.with_suffix(".tmp.parquet")
    pq.write_table(table, tmp)
    tmp.rename(path)


def build(catalog: Path, root: Path, extra: Sequence[str]) -> dict[str, Any]:
    """``adindex build`` (at its defaults unless ``extra``): outcome, wall time, log tail.

    A refused build (exit code 3, the recall gate) is an outcome, not an error: its message
    is what the user sees.
    """
    argv = ["build", "--catalog", str(catalog), "--out", str(root), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run([*adindex(), *argv], capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stderr.strip().splitlines() if "Recall sweep" not in ln]
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"adindex build failed ({proc.returncode}):\n" + "\n".join(lines[-12:]))
    return {"argv": ["adindex", *argv], "wall_s": round(time.perf_counter() - t0, 1),
            "outcome": "published" if proc.returncode == 0 else "refused",
            "log_tail": lines[-8:]}  # fmt: skip


def control_state(m: dict[str, float]) -> dict[str, Any]:
    """What the metrics say about recall control and shadow recall now."""
    stat = {s: v for s, v in m.items() if s.startswith("adindex_recall_control_recall{")}
    return {
        "nprobe": series_sum(m, 'adindex_operating_point{param="nprobe"'),
        "k_factor": series_sum(m, 'adindex_operating_point{param="k_factor"'),
        "moves": series_sum(m, "adindex_operating_point_moves_total"),
        "control_samples": series_sum(m, "adindex_recall_control_samples_total"),
        "settled": series_sum(m, "adindex_recall_control_settled"),
        "recall": {key: round(v, 4) for key in ("mean", "lower", "upper")
                   for s, v in stat.items() if f'stat="{key}"' in s},
        "shadow": {o: series_sum(m, f'adindex_shadow_queries_total{{outcome="{o}"')
                   for o in ("measured", "dropped", "skipped")},
    }  # fmt: skip


def warm_up(client: Any, server: Server, data: RealData, every: int) -> list[dict[str, Any]]:
    """The warm-up calls; a trace row every ``every`` calls (served point, control, time)."""
    trace = []
    t0 = time.perf_counter()
    for i, q in enumerate(data.warm):
        r = client.retrieve(q, K)
        if (i + 1) % every == 0 or i + 1 == len(data.warm):
            trace.append({"calls": i + 1, "wall_s": round(time.perf_counter() - t0, 1),
                          "served": [r.nprobe, r.k_factor], **control_state(server.metrics())})  # fmt: skip
            logger.info("warm-up %s", trace[-1])
    return trace


def measure(client: Any, data: RealData, row_of: dict[str, int]) -> dict[str, Any]:
    """The measured calls: rows returned (best first), points served, latencies."""
    found, points, lat = [], collections.Counter[str](), []
    for q in data.held:
        t = time.perf_counter()
        r = client.retrieve(q, K)
        lat.append(time.perf_counter() - t)
        found.append(np.array([row_of[c.ad_id] for c in r.candidates], dtype=np.int64))
        points[f"{r.nprobe},{r.k_factor}"] += 1
    return {"found": found, "points": dict(points),
            "p50_ms": round(1e3 * float(np.percentile(lat, 50)), 3),
            "p99_ms": round(1e3 * float(np.percentile(lat, 99)), 3)}  # fmt: skip


def quality(data: RealData, found: list[np.ndarray], truth: np.ndarray) -> dict[str, Any]:
    """Served recall@100 (+ interval) and recall@10 against exact; the NDCG@10 ratio if judged."""
    from indexer.ann import recall_interval, recall_per_query

    per_query = recall_per_query(found, truth)
    low, high = recall_interval(per_query)
    out: dict[str, Any] = {
        "served_recall_at_100": round(float(per_query.mean()), 4),
        "served_recall_low": round(low, 4), "served_recall_high": round(high, 4),
        "served_recall_at_10": round(float(recall_per_query([f[:10] for f in found],
                                                            truth[:, :10]).mean()), 4),
        "queries_below_target": int((per_query < 0.95).sum()),
    }  # fmt: skip
    if data.qrels is not None:
        out |= ndcg(data, found, truth)
    return out


def ndcg(data: RealData, found: list[np.ndarray], truth: np.ndarray) -> dict[str, Any]:
    """Mean NDCG@10 (gain 2^grade - 1) over queries with a positive judgement: served, exact."""
    from benchmarks.text_data import ndcg_at

    assert data.qrels is not None
    row_of = {a: i for i, a in enumerate(data.ad_ids)}
    served, exact = [], []
    for f, t, grades in zip(found, truth, data.qrels, strict=True):
        if any(g > 0 for g in grades.values()):
            by_row = {row_of[a]: g for a, g in grades.items() if a in row_of}
            served.append(ndcg_at(f, by_row))
            exact.append(ndcg_at(t, by_row))
    s, e = float(np.mean(served)), float(np.mean(exact))
    return {"ndcg_at_10_served": round(s, 4), "ndcg_at_10_exact": round(e, 4),
            "ndcg_ratio": round(s / e, 4), "judged_queries": len(served)}  # fmt: skip


def build_estimate(manifest: dict[str, Any]) -> dict[str, Any]:
    q = manifest["quality"]
    chosen = q["chosen"]
    return {"nprobe": chosen["nprobe"], "k_factor": chosen["k_factor"],
            "recall": round(chosen["recall"], 4), "low": round(chosen["recall_low"], 4),
            "high": round(chosen["recall_high"], 4), "target": q["target_recall"],
            "queries": q["queries"].get("description", q["queries"].get("source"))}  # fmt: skip


def build_curve(manifest: dict[str, Any]) -> dict[str, list[list[float]]]:
    """The build's sweep and re-ranking probe as ``[k_factor, nprobe, recall]`` (recall-grid)."""
    q = manifest["quality"]
    return {key: [[p["k_factor"], p["nprobe"], p["recall"]] for p in q.get(key) or []]
            for key in ("curve", "probes")}  # fmt: skip


def serve_and_measure(args: argparse.Namespace, data: RealData, root: Path) -> dict[str, Any]:
    """Warm up, measure and read the server's state; the server is stopped on return."""
    from retrieval.client import RetrievalClient

    (root / "operating_points.json").unlink(missing_ok=True)  # at its defaults: nothing learned
    server = Server(root, args.serve_arg)
    row_of = {a: i for i, a in enumerate(data.ad_ids)}
    try:
        load_start = os.getloadavg()
        with RetrievalClient(f"127.0.0.1:{server.port}", timeout_s=60) as client:
            t0 = time.perf_counter()
            trace = warm_up(client, server, data, args.every)
            warm_s = time.perf_counter() - t0
            after_warmup = control_state(server.metrics())
            served = measure(client, data, row_of)
            info = client.info()
            end = control_state(server.metrics())
    finally:
        server.stop()
    return {
        "serve_argv": server.argv, "info": info, "trace": trace, "warmup_wall_s": round(warm_s, 1),
        "after_warmup": after_warmup, "end": end, "served": served, "load_avg_start": load_start,
        "moves": [{k: ln.get(k) for k in ("ts", "direction", "nprobe", "k_factor", "old_nprobe",
                                          "old_k_factor", "message")}
                  for ln in server.lines if ln.get("event") == "operating_point"],
        "warnings": [str(ln.get("message")) for ln in server.lines
                     if ln.get("level") == "WARNING" and "recall" in str(ln.get("logger", ""))],
    }  # fmt: skip


def build_args(args: argparse.Namespace, data: RealData, work: Path) -> list[str]:
    """Extra ``adindex build`` arguments: ``--build-arg``s, and ``--queries`` when asked."""
    extra = list(args.build_arg)
    if args.real_build_queries:
        np.save(work / "warmup_queries.npy", np.unique(data.warm, axis=0))
        extra += ["--queries", str(work / "warmup_queries.npy")]
    return extra


def variant(args: argparse.Namespace) -> str:
    """What differs from the defaults: build arguments, then serve arguments."""
    build = [*args.build_arg, *(["--queries (the warm-up queries)"] * args.real_build_queries)]
    serve = ["serve " + " ".join(args.serve_arg)] if args.serve_arg else []
    return " ".join(build + serve) or "defaults"


def described(args: argparse.Namespace, data: RealData, row: dict[str, Any]) -> dict[str, Any]:
    """A row with what makes it self-describing (``benchmarks.docs.REQUIRED``), stamped now."""
    return {"benchmark": "outside_check", "kind": "run", "dataset": data.name,
            "description": data.description, "nb": len(data.xb), "d": data.xb.shape[1],
            "threads": server_threads(), "label": args.label, "k": K,
            "variant": variant(args), **row,
            "load_avg_end": os.getloadavg(), **provenance(args.cmd)}  # fmt: skip


def run(args: argparse.Namespace, data: RealData) -> dict[str, Any]:
    from indexer.ann import exact_search, normalize

    variant = "-".join(a.strip("-").replace("/", "_") for a in args.build_arg) or "defaults"
    variant += "-real-queries" if args.real_build_queries else ""
    work = args.work / data.name / variant
    work.mkdir(parents=True, exist_ok=True)
    catalog, root = args.work / data.name / "ads.parquet", work / "index"
    built: dict[str, Any] = {"outcome": "published", "reused": True}
    if args.rebuild or not (root / "LATEST").is_file():
        shutil.rmtree(root, ignore_errors=True)
        if args.rebuild or not catalog.is_file():
            write_catalog(catalog, data)
        built = build(catalog, root, build_args(args, data, work)) | {"reused": False}
        logger.info("build %s: %s", built["outcome"], "\n".join(built["log_tail"][-3:]))
    if built["outcome"] == "refused":
        return described(args, data, {"build": built, "warmup_calls": 0,
                                      "warm_note": data.warm_note})  # fmt: skip
    got = serve_and_measure(args, data, root)
    info = got.pop("info")
    manifest = json.loads(info.manifest_json)
    truth = exact_search(normalize(data.xb), normalize(data.held), K)[1]
    found = got["served"].pop("found")
    build_point = (manifest["search"]["nprobe"], manifest["search"]["k_factor"])
    final = (info.default_nprobe, info.default_k_factor)
    nlist = manifest["index"]["nlist"]
    wider = {(min(final[0] * m, nlist), final[1]) for m in (2, 4)} | {(final[0], final[1] * 2)}
    offline = offline_recall(root, data.held, truth, {build_point, final} | wider, K)
    return described(args, data, {
        "factory": info.index_factory, "nlist": nlist, "build": built,
        "build_point": list(build_point),
        "build_estimate": build_estimate(manifest), **build_curve(manifest), "recall_control": info.recall_control,
        "final_point": list(final), "warmup_calls": len(data.warm),
        "warmup_distinct_queries": len(np.unique(data.warm, axis=0)),
        "warm_note": data.warm_note, "measure_queries": len(data.held),
        **quality(data, found, truth), **got,
        "offline_recall_by_point": {f"{n},{f}": round(r, 4) for (n, f), r in offline.items()},
    })  # fmt: skip


def summary(row: dict[str, Any]) -> str:
    if row["build"]["outcome"] == "refused":
        return f"{row['dataset']} {row['nb']} x {row['d']}: the build refused:\n" + "\n".join(
            row["build"]["log_tail"][-3:]
        )
    est = row["build_estimate"]
    ndcg = f", NDCG@10 ratio {row['ndcg_ratio']}" if "ndcg_ratio" in row else ""
    return (f"{row['dataset']} {row['nb']} x {row['d']} {row['factory']}: build point "
            f"{row['build_point']} (estimate {est['recall']} [{est['low']}, {est['high']}]), final "
            f"{row['final_point']} after {row['warmup_calls']} calls, {len(row['moves'])} moves; "
            f"served recall@100 {row['served_recall_at_100']} [{row['served_recall_low']}, "
            f"{row['served_recall_high']}]{ndcg}; load {row['load_avg_1m']}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Rows: one JSON line per run (docs/index-parameters.md, section 3.7.1).",
    )
    p.add_argument("dataset", choices=("realtext", "esci", "sample"), nargs="+",
                   help="datasets to check (each in its own server run)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=5_000,
                   help="live Retrieve calls before measuring (default: %(default)s)")  # fmt: skip
    p.add_argument("--measure", type=int, default=1_000,
                   help="measured queries, disjoint from the warm-up where the data allows "
                        "(default: %(default)s; ESCI measures all its 500)")  # fmt: skip
    p.add_argument("--every", type=int, default=500,
                   help="warm-up calls per trace point (default: %(default)s)")  # fmt: skip
    p.add_argument("--work", type=Path, default=Path("/tmp/outside-check"),
                   help="catalogs and indexes, one folder per dataset (default: %(default)s)")  # fmt: skip
    p.add_argument("--rebuild", action="store_true", help="write the catalog and build again even if WORK/DATASET/.../index exists")  # fmt: skip
    p.add_argument("--build-arg", action="append", default=[], metavar="ARG",
                   help="extra 'adindex build' argument, e.g. --build-arg=--allow-below-target "
                        "(default: none: the build at its defaults)")  # fmt: skip
    p.add_argument("--real-build-queries", action="store_true",
                   help="build with --queries: the warm-up queries (the build samples 500), "
                        "as an ads team passes yesterday's traffic")  # fmt: skip
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra 'adindex serve' argument for a diagnosis run, e.g. "
                        "--serve-arg=--recall-control --serve-arg=off (default: none)")  # fmt: skip
    p.add_argument("--label", default="", help="a name for these rows (e.g. the machine's state)")
    p.add_argument("--out", type=Path, help="append the JSON lines here")
    args = p.parse_args(argv)
    args.cmd = command(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in args.dataset:
        args.work.mkdir(parents=True, exist_ok=True)
        try:
            data = (load_realtext(args.warmup, args.measure) if name == "realtext"
                    else load_esci(args.warmup, args.work) if name == "esci"
                    else load_sample(args.warmup, args.measure, args.work))  # fmt: skip
        except Skipped as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        row = run(args, data)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        print(summary(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
