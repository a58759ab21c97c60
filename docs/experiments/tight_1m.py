"""The tightly-packed 1M case: a default ``adindex build`` of 1,000,000 x 384 precomputed vectors.

``benchmarks.datasets.tight`` (queries whose 1st / 100th neighbours sit at cosine ~0.54 /
~0.44) is written as a Parquet catalog with an ``embedding`` column, built with the real CLI and
default flags, and, when published, its own queries are searched at the published point.
Run from the repository root with the project's venv (several minutes; ~6 GB of scratch)::

    python docs/experiments/tight_1m.py --work /tmp/tight1m --out benchmarks/results/tight_1m.jsonl

One JSON line per step (``kind``): the set's neighbour statistics (data), the build (exit code,
wall time, the published point or the refusal message), the served recall of the set's queries
(served); each self-describing (``benchmarks.provenance``), published to docs/results/ for
docs/index-parameters.md 3.8 (``make docs``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import indexer  # noqa: F401  (first: OpenMP environment before FAISS loads)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.*

from benchmarks.provenance import command, provenance


def emit(base: dict[str, Any], row: dict[str, Any], out: Path | None) -> None:
    """Print and append one self-describing row (``benchmarks.docs.REQUIRED``), stamped now."""
    line = json.dumps({"benchmark": "tight_1m", **row, **base, **provenance(command())})
    print(line, flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(line + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="scratch directory")
    p.add_argument("--out", type=Path, help="append the JSON lines here")
    p.add_argument("--nb", type=int, default=1_000_000)
    p.add_argument("--nq", type=int, default=500)
    args = p.parse_args()
    import faiss

    from benchmarks.datasets import TIGHT_STATS, tight
    from benchmarks.systems import write_vector_catalog
    from indexer import artifact
    from indexer.ann import exact_search, recall_interval, recall_per_query, search_params
    from indexer.build import BuildConfig

    args.work.mkdir(parents=True, exist_ok=True)
    catalog, index_root = args.work / "ads.parquet", args.work / "index"
    build_threads = BuildConfig(catalog=catalog, out=index_root).threads  # adindex build's default
    t0 = time.perf_counter()
    ds = tight(args.nb, args.nq)
    D, truth = exact_search(ds.xb, ds.xq, 100)
    base = {"dataset": ds.name, "nb": ds.nb, "d": ds.d,
            "threads": {"process": faiss.omp_get_max_threads(), "build": build_threads,
                        "how": "exact search and the served search on FAISS's OpenMP default; "
                        "adindex build at its default --threads"}}  # fmt: skip
    emit(base, {"kind": "data", "nq": ds.nq,
          "cos_1st": round(float(D[:, 0].mean()), 4), "cos_kth": round(float(D[:, 99].mean()), 4),
          "target": TIGHT_STATS, "gen_s": round(time.perf_counter() - t0, 1)}, args.out)  # fmt: skip
    write_vector_catalog(catalog, ds.xb)
    cmd = ["adindex", "build", "--catalog", str(catalog), "--out", str(index_root)]
    t0 = time.perf_counter()
    run = subprocess.run([str(Path(sys.executable).parent / cmd[0]), *cmd[1:]],
                         capture_output=True, text=True, check=False)  # fmt: skip
    wall = round(time.perf_counter() - t0, 1)
    row: dict[str, Any] = {"kind": "build", "build_command": " ".join(cmd), "exit_code": run.returncode,
                           "wall_s": wall, "stdout": run.stdout.strip(),
                           "stderr_tail": run.stderr.strip().splitlines()[-8:]}  # fmt: skip
    if run.returncode != 0:
        emit(base, row, args.out)
        return
    art = artifact.load(index_root / (index_root / "LATEST").read_text().strip())
    m = art.manifest
    q = m.quality
    assert q is not None
    row.update(factory=m.index.factory, nprobe=m.search.nprobe, k_factor=m.search.k_factor,
               estimate=q.chosen.recall, estimate_low=q.chosen.recall_low,
               estimate_high=q.chosen.recall_high, p50_ms=q.chosen.p50_ms,
               build_seconds=m.build.seconds, truncated=q.truncated,
               curve=[[c.k_factor, c.nprobe, c.recall] for c in q.curve],
               probes=[[r.k_factor, r.nprobe, r.recall] for r in q.probes])  # fmt: skip
    emit(base, row, args.out)
    params = search_params(art.index, m.search.nprobe, m.search.k_factor, 100, min_rerank=64)
    _, I = art.index.search(ds.xq, 100, params=params)
    per_query = recall_per_query(I, truth)
    lo, hi = recall_interval(per_query)
    emit(base, {"kind": "served", "queries": f"the set's own {ds.nq} queries",
          "nprobe": m.search.nprobe, "k_factor": m.search.k_factor,
          "recall": round(float(per_query.mean()), 4), "low": round(lo, 4),
          "high": round(hi, 4)}, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
