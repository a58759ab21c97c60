"""An adindex artifact from the calibrated synthetic set, for load tests (``benchmarks.load``).

``make-index`` writes the vectors as a Parquet catalog with precomputed embeddings and builds it
with ``indexer.build`` (the real build, its recall gate and its tuned defaults, measured on
held-out queries), publishing ``OUT/index/<version>``; it also saves ``OUT/queries.npy`` and
``OUT/truth.npy`` (exact top-100 rows by inner product) for ``served_recall``, and
``OUT/dataset.json`` (what the rows of a load run name as their dataset). Ad ids are the row
numbers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from indexer.ann import recall_at_k

logger = logging.getLogger(__name__)

HELD_OUT = 200  # the last queries tune the build; the load run measures the first ones


def served_recall(target: str, xq: np.ndarray, truth: np.ndarray, k: int, nprobe: int = 0) -> float:
    """recall@k of the server's answers against exact top-k rows (ad id = row number)."""
    from retrieval.client import RetrievalClient

    found = []
    with RetrievalClient(target, timeout_s=30) as client:
        for q in xq:
            response = client.retrieve(q, k, nprobe=nprobe)
            found.append(np.array([int(c.ad_id) for c in response.candidates], dtype=np.int64))
    return recall_at_k(found, truth[:, :k])


def make_index(
    nb: int,
    nq: int,
    out: Path,
    factory: str | None,
    target_recall: float = 0.95,
    dataset: str = "calibrated",
) -> Path:
    """Publish ``out/index/<version>`` built from ``calibrated(nb, nq)``, or from the sample
    catalog embedded with the real model (``dataset="sample"``: nb ads, nq users, embeddings
    cached under ``benchmarks/results/cache/``); returns its directory. ``factory`` None:
    the build's own choice for the size."""
    from benchmarks.datasets import calibrated
    from benchmarks.systems import build_artifact, exact_neighbours, write_vector_catalog
    from benchmarks.text_data import load_sample

    t0 = time.perf_counter()
    if dataset == "sample":
        ds = load_sample(nb, nq, Path("benchmarks/results/cache"))
    elif dataset == "calibrated":
        ds = calibrated(nb, nq)
    else:
        raise ValueError(f"dataset must be 'calibrated' or 'sample'; got {dataset!r}")
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "queries.npy", ds.xq)
    np.save(out / "truth.npy", exact_neighbours(ds.xb, ds.xq, 100, "ip"))
    np.save(out / "held_out.npy", ds.xq[-HELD_OUT:])
    facts = {"dataset": ds.name, "nb": ds.nb, "nq": ds.nq, "d": ds.d}
    (out / "dataset.json").write_text(json.dumps(facts) + "\n", encoding="utf-8")
    write_vector_catalog(out / "catalog.parquet", ds.xb)
    logger.info("%s: generated, exact top-100 in %.0f s", ds.name, time.perf_counter() - t0)
    info = build_artifact(
        out / "catalog.parquet",
        out / "index",
        factory=factory,
        k_factor=None,
        threads=os.cpu_count() or 1,
        queries=out / "held_out.npy",
        target_recall=target_recall,
    )
    return Path(info["version_dir"])
