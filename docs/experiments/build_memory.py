"""Peak RSS of each stage of a 1M x 384 build from a Parquet catalog with embeddings.

    python docs/experiments/build_memory.py /tmp/mem

Writes ``catalog.parquet`` (the calibrated 1M x 384 vectors, as the benchmark does) and 500
held-out queries under the work directory once, then builds with the default parameters and
prints the largest RSS seen (sampled every 50 ms) during each stage the build logs.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

from indexer.build import BuildConfig, build


def rss_mb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("workdir", type=Path)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    catalog, queries = args.workdir / "catalog.parquet", args.workdir / "queries.npy"
    if not catalog.exists():  # in a child: the generator's memory must not count below
        import subprocess

        code = (
            "import sys, numpy as np; sys.path.insert(0, sys.argv[3]);"
            "from benchmarks import datasets; from benchmarks.systems import write_vector_catalog;"
            "ds = datasets.calibrated(1_000_000, 10_000); write_vector_catalog(sys.argv[1], ds.xb);"
            "np.save(sys.argv[2], ds.xq[5000:5500])"
        )
        root = str(Path(__file__).resolve().parents[2])
        subprocess.run([sys.executable, "-c", code, catalog, queries, root], check=True)
    stage = [""]
    peaks: dict[str, int] = {}

    class Stages(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.endswith("..."):
                stage[0] = message

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger().addHandler(Stages())
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peaks[stage[0]] = max(peaks.get(stage[0], 0), rss_mb())
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    out = args.workdir / "index"
    shutil.rmtree(out, ignore_errors=True)
    build(BuildConfig(catalog, out, threads=2, queries=queries))
    done.set()
    time.sleep(0.1)
    for name, mb in peaks.items():
        print(f"{mb:7d} MB  {name or '(start)'}")
    print(f"peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
