"""Memory of a system as it serves: the RSS of a fresh process that loaded its index.

A build's peak or a benchmark process's growth says little about what a serving machine needs:
both hold the base vectors besides the index. Here a spawned child imports what serving needs,
records its RSS (``baseline_mb``), loads the index as a server would (adindex: the artifact and a
``retrieval.searcher.Searcher`` over it, ads metadata included; hnswlib: ``load_index``), runs
a few searches (lazy structures), and records its RSS again (``rss_mb``).
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

Loader = Literal["adindex", "hnswlib"]
PROBE_QUERIES = 20


def _rss_mb() -> float:
    import gc

    import psutil

    gc.collect()
    return float(psutil.Process().memory_info().rss) / 2**20


def _child(loader: Loader, path: str, spec: dict[str, Any], conn: Connection) -> None:
    try:
        import numpy as np

        if loader == "adindex":
            import indexer  # noqa: F401  (OpenMP environment before FAISS loads)
            from indexer.artifact import load
            from retrieval.searcher import Searcher

            baseline = _rss_mb()
            searcher = Searcher(load(Path(path)))
            xq = np.random.default_rng(0).standard_normal((PROBE_QUERIES, searcher.dimension))
            for q in xq:
                searcher.search(q.astype(np.float32), 100)
        else:
            import hnswlib

            baseline = _rss_mb()
            index = hnswlib.Index(space=spec["space"], dim=spec["dim"])
            index.load_index(path)
            index.set_ef(128)
            index.knn_query(
                np.random.default_rng(0).standard_normal((PROBE_QUERIES, spec["dim"])), k=100
            )
        conn.send({"rss_mb": round(_rss_mb(), 1), "baseline_mb": round(baseline, 1)})
    except Exception as exc:  # reported to the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def serving_rss(loader: Loader, path: Path, **spec: Any) -> dict[str, Any]:
    """RSS of a fresh process serving the index at ``path``.

    Args:
        loader: "adindex" (path: an artifact version directory) or "hnswlib" (path: a saved
            index; ``space`` and ``dim`` in spec).

    Returns:
        ``rss_mb`` (whole process, loaded), ``baseline_mb`` (before loading), ``loaded_mb``
        (their difference), ``how`` (what was measured).
    """
    ctx = mp.get_context("spawn")  # FAISS (OpenMP) may already run in this process
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(loader, str(path), spec, child), name="serving-rss")
    proc.start()
    child.close()
    try:
        msg: dict[str, Any] = parent.recv()
    except EOFError:
        proc.join()
        msg = {"error": f"the {loader} process died (exit {proc.exitcode})"}
    proc.join()
    if "error" in msg:
        raise RuntimeError(f"serving RSS of {path}: {msg['error']}")
    msg["loaded_mb"] = round(msg["rss_mb"] - msg["baseline_mb"], 1)
    msg["how"] = f"fresh process: {loader} index loaded, {PROBE_QUERIES} searches, then RSS"
    return msg
