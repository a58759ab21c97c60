"""The systems under test that run on FAISS: exact search, adindex (in-process and over gRPC) and
raw FAISS at adindex's parameters.

adindex is always measured through its real code path: the vectors are written as a Parquet
catalog carrying precomputed embeddings, ``indexer.build.build`` turns it into a published
artifact (in a child process, so its wall time and peak memory are its own), and
``retrieval.searcher.Searcher`` or a real ``retrieval.server`` answers the queries.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import resource
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.core import (
    SEARCH_THREADS,
    SearchOne,
    Timing,
    concurrent_qps,
    dir_bytes,
    rss_mb,
    time_queries,
)
from benchmarks.datasets import Dataset
from benchmarks.serving_memory import serving_rss
from indexer.ann import Metric, exact_search, normalize, omp_threads, search_params
from indexer.manifest import Manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Built:
    """What building (or loading) a system cost."""

    build_s: float
    index_bytes: int
    rss_mb: float  # process RSS growth from building/loading it (or a server's whole RSS)
    extra: dict[str, Any] = field(default_factory=dict)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Row-normalised float32 copy (zero rows stay zero)."""
    return normalize(x)


class System(ABC):
    """One system under test: build once, then search at several operating points."""

    name: str = ""
    truth: Metric = "ip"  # the exact neighbours its recall is measured against
    in_process = True  # searches run in this process (its CPU time is theirs)

    def __init__(self) -> None:
        self.built = Built(0.0, 0, 0.0)

    @abstractmethod
    def build(self, ds: Dataset, workdir: Path) -> Built:
        """Build or load the index over ``ds.xb``; sets and returns ``self.built``."""

    @abstractmethod
    def index_key(self) -> str:
        """The index described as a factory string (or the closest equivalent)."""

    @abstractmethod
    def points(self) -> list[dict[str, Any]]:
        """The search parameters to sweep, one dict per operating point."""

    @abstractmethod
    def searcher(self, point: dict[str, Any], xq: np.ndarray, k: int) -> SearchOne:
        """A function running query row i of xq at this point and returning ids, best first."""

    def threads(self, qps_threads: int) -> dict[str, Any]:
        """The threads behind each row: ``single`` (one query at a time), ``qps`` (the
        throughput run), ``build``, and ``how`` (what they are for this system)."""
        return {
            "single": SEARCH_THREADS,
            "qps": qps_threads,
            "build": None,
            "how": f"single queries on {SEARCH_THREADS} OpenMP thread; QPS: {qps_threads} "
            f"concurrent callers, {SEARCH_THREADS} OpenMP thread each",
        }

    def qps(self, point: dict[str, Any], xq: np.ndarray, k: int, threads: int) -> float:
        """Throughput with ``threads`` workers over all rows of xq (default: concurrent callers)."""
        return concurrent_qps(self.searcher(point, xq, k), len(xq), threads=threads)

    def measure(
        self,
        point: dict[str, Any],
        xq: np.ndarray,
        k: int,
        *,
        warmup: int,
        repeats: int,
        qps_threads: int,
    ) -> tuple[Timing, float]:
        """Single-query timing (``core.time_queries``) and throughput at one operating point."""
        search = self.searcher(point, xq, k)
        timing = time_queries(search, len(xq), warmup=warmup, repeats=repeats)
        return timing, self.qps(point, xq, k, qps_threads)

    def close(self) -> None:  # noqa: B027  (most systems hold nothing to release)
        """Release the index (and any server)."""


def _faiss_batch_qps(index: faiss.Index, xq: np.ndarray, k: int, threads: int, **kw: Any) -> float:
    with omp_threads(threads):
        t0 = time.perf_counter()
        index.search(xq, k, **kw)
        return len(xq) / (time.perf_counter() - t0)


def _faiss_batch_threads(qps_threads: int, build: int | None) -> dict[str, Any]:
    return {
        "single": SEARCH_THREADS,
        "qps": qps_threads,
        "build": build,
        "how": f"single queries on {SEARCH_THREADS} OpenMP thread; QPS: one batch call on "
        f"{qps_threads} OpenMP threads",
    }


class ExactFaiss(System):
    """Brute force: ``IndexFlatIP`` (``IndexFlatL2`` for an L2 dataset). Recall 1 by definition."""

    name = "faiss-flat"

    def __init__(self, metric: Metric) -> None:
        super().__init__()
        self.truth = metric
        self.index: faiss.Index | None = None

    def build(self, ds: Dataset, workdir: Path) -> Built:
        rss0 = rss_mb()
        t0 = time.perf_counter()
        index: faiss.Index = (
            faiss.IndexFlatIP(ds.d) if self.truth == "ip" else faiss.IndexFlatL2(ds.d)
        )
        index.add(ds.xb if self.truth == "l2" else unit_rows(ds.xb))
        self.index = index
        nbytes = ds.nb * ds.d * 4
        self.built = Built(time.perf_counter() - t0, nbytes, rss_mb() - rss0)
        return self.built

    def index_key(self) -> str:
        return "Flat"

    def threads(self, qps_threads: int) -> dict[str, Any]:
        return _faiss_batch_threads(qps_threads, None)

    def points(self) -> list[dict[str, Any]]:
        return [{}]

    def searcher(self, point: dict[str, Any], xq: np.ndarray, k: int) -> SearchOne:
        index = self.index
        assert index is not None, "build() first"

        def one(i: int) -> np.ndarray:
            _, I = index.search(xq[i : i + 1], k)
            ids: np.ndarray = I[0]
            return ids

        return one

    def qps(self, point: dict[str, Any], xq: np.ndarray, k: int, threads: int) -> float:
        assert self.index is not None, "build() first"
        return _faiss_batch_qps(self.index, xq, k, threads)

    def close(self) -> None:
        self.index = None


def exact_neighbours(xb: np.ndarray, xq: np.ndarray, k: int, metric: Metric) -> np.ndarray:
    """Ground truth: exact top-k ids by inner product of unit rows ("ip") or by L2; (nq, k)."""
    with omp_threads(2):
        if metric == "ip":
            return exact_search(unit_rows(xb), unit_rows(xq), k)[1]
        return exact_search(xb, xq, k, metric="l2")[1]


def write_vector_catalog(path: Path, xb: np.ndarray) -> None:
    """A Parquet ad catalog whose rows carry precomputed embeddings; ad_id of row i is "i"."""
    n, d = xb.shape
    ids = pa.array([str(i) for i in range(n)], type=pa.string())
    table = pa.table(
        {
            "ad_id": ids,
            "advertiser_id": pa.array([f"adv-{i % 1000}" for i in range(n)], type=pa.string()),
            "campaign_id": pa.array([f"cmp-{i % 5000}" for i in range(n)], type=pa.string()),
            "status": pa.array(["active"] * n, type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(xb, dtype=np.float32).reshape(-1)), d
            ),
        }
    )
    pq.write_table(table, path)


def _build_child(kwargs: dict[str, Any], conn: Connection) -> None:
    """Child process: indexer.build over a catalog; sends the version dir and its own peak RSS."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s build %(levelname)s %(message)s")
    try:
        import indexer  # noqa: F401  (OpenMP environment before FAISS loads)
        from indexer.build import BuildConfig, build

        t0 = time.perf_counter()
        result = build(BuildConfig(**kwargs))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send({"version_dir": str(result.version_dir), "wall_s": time.perf_counter() - t0,
                   "peak_rss_mb": peak_mb})  # fmt: skip
    except Exception as exc:  # reported to the parent, which raises
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def build_artifact(
    catalog: Path,
    out: Path,
    *,
    factory: str | None,
    k_factor: int | None,
    threads: int,
    queries: Path | None = None,
    target_recall: float | None = None,
) -> dict[str, Any]:
    """Run ``indexer.build.build`` in a spawned child; returns version_dir, wall_s, peak_rss_mb.

    ``queries`` (an .npy of held-out queries, never the measured ones) feeds the build's own
    recall evaluation. Without ``target_recall`` the gate is overridden: a benchmark measures
    every index it builds.
    """
    ctx = mp.get_context("spawn")  # FAISS (OpenMP) already ran in this process
    parent, child = ctx.Pipe(duplex=False)
    kwargs: dict[str, Any] = {"catalog": catalog, "out": out, "index_factory": factory}
    kwargs.update(threads=threads, k_factor=k_factor, queries=queries)
    if target_recall is None:
        kwargs["allow_below_target"] = True
    else:
        kwargs["target_recall"] = target_recall
    proc = ctx.Process(target=_build_child, args=(kwargs, child), name="adindex-build")
    proc.start()
    child.close()
    try:
        msg: dict[str, Any] = parent.recv()
    except EOFError:
        msg = {"error": "the build process died without a word"}
    proc.join()
    if "error" in msg:
        raise RuntimeError(f"adindex build failed (exit {proc.exitcode}): {msg['error']}")
    return msg


class AdindexInProcess(System):
    """adindex's ``Searcher`` over a published artifact, in this process, one query at a time."""

    name = "adindex"

    def __init__(
        self,
        factory: str | None,
        nprobes: tuple[int, ...],
        *,
        k_factor: int | None = None,
        build_threads: int = 2,
        held_out: np.ndarray | None = None,
        reuse: Path | None = None,
    ):
        super().__init__()
        self.reuse = reuse  # an already built artifact (root or version dir) instead of building
        self.factory, self.k_factor = factory, k_factor
        self.held_out = held_out  # queries for the build's own recall evaluation (not measured)
        self.nprobes = nprobes
        self.build_threads = build_threads
        self.version_dir: Path | None = None
        self.searcher_obj: Any = None
        self.manifest: Manifest | None = None

    def _build(self, ds: Dataset, workdir: Path) -> dict[str, Any]:
        """Catalog with the vectors -> indexer.build in a child; returns build_artifact's info."""
        catalog = workdir / "catalog.parquet"
        t0 = time.perf_counter()
        write_vector_catalog(catalog, ds.xb)
        catalog_s = time.perf_counter() - t0
        logger.info("Wrote %s (%d rows) in %.1f s", catalog, ds.nb, catalog_s)
        queries = None
        if self.held_out is not None and len(self.held_out):
            queries = workdir / "held_out_queries.npy"
            np.save(queries, np.ascontiguousarray(self.held_out, dtype=np.float32))
        info = build_artifact(
            catalog,
            workdir / "index",
            factory=self.factory,
            k_factor=self.k_factor,
            threads=self.build_threads,
            queries=queries,
        )
        info["catalog_write_s"] = round(catalog_s, 2)
        info["build_eval_queries"] = "held-out benchmark queries" if queries else "indexer default"
        return info

    def build(self, ds: Dataset, workdir: Path) -> Built:
        if (
            self.reuse is not None
        ):  # an artifact built earlier (--artifact): timings from its manifest
            from indexer.artifact import read_manifest, resolve

            self.version_dir = resolve(self.reuse)
            stages = read_manifest(self.version_dir).build.seconds
            info: dict[str, Any] = {"wall_s": float(sum(stages.values())), "peak_rss_mb": float("nan"),
                                    "reused_artifact": str(self.version_dir)}  # fmt: skip
        else:
            info = self._build(ds, workdir)
            self.version_dir = Path(info["version_dir"])
        from indexer.artifact import INDEX_FILE, load
        from retrieval.searcher import Searcher

        rss0 = rss_mb()
        t1 = time.perf_counter()
        art = load(self.version_dir)
        self.searcher_obj = Searcher(art)
        load_s = time.perf_counter() - t1
        self.manifest = art.manifest
        self.built = Built(
            build_s=info["wall_s"],
            index_bytes=(self.version_dir / INDEX_FILE).stat().st_size,
            rss_mb=rss_mb() - rss0,
            extra={
                **{
                    k: v
                    for k, v in info.items()
                    if k not in ("wall_s", "peak_rss_mb", "version_dir")
                },
                "build_peak_rss_mb": round(info["peak_rss_mb"], 1),
                "build_stages_s": art.manifest.build.seconds,
                "load_s": round(load_s, 2),
                "artifact_bytes": dir_bytes(self.version_dir),
                "default_nprobe": art.manifest.search.nprobe,
                "k_factor": art.manifest.search.k_factor,
                "serving_rss": serving_rss("adindex", self.version_dir),
            },
        )
        return self.built

    @property
    def loaded(self) -> Manifest:
        assert self.manifest is not None, "build() first"
        return self.manifest

    @property
    def nlist(self) -> int:
        return self.loaded.index.nlist

    @property
    def default_nprobe(self) -> int:
        return self.loaded.search.nprobe

    def index_key(self) -> str:
        return self.loaded.index.factory

    def threads(self, qps_threads: int) -> dict[str, Any]:
        return {**super().threads(qps_threads), "build": self.build_threads}

    def points(self) -> list[dict[str, Any]]:
        nprobes = sorted({p for p in self.nprobes if p <= self.nlist} | {self.default_nprobe})
        return [{"nprobe": p, "default": p == self.default_nprobe} for p in nprobes]

    def searcher(self, point: dict[str, Any], xq: np.ndarray, k: int) -> SearchOne:
        s, nprobe = self.searcher_obj, int(point["nprobe"])

        def one(i: int) -> np.ndarray:
            ids: np.ndarray = s.search(xq[i], k, nprobe=nprobe).ids
            return ids

        return one

    def close(self) -> None:
        self.searcher_obj = None


class RawFaiss(System):
    """The very index adindex published, searched by FAISS directly at the same parameters
    (``SearchParametersIVF`` inside ``IndexRefineSearchParameters``, same k_factor): the
    floor that adindex's own overhead is measured against."""

    name = "faiss-ivf"

    def __init__(self, adindex: AdindexInProcess) -> None:
        super().__init__()
        self.adindex = adindex

    def build(self, ds: Dataset, workdir: Path) -> Built:
        stages = self.adindex.built.extra.get("build_stages_s", {})
        train_add = next(
            (v for key, v in stages.items() if "rain" in key), self.adindex.built.build_s
        )
        self.built = Built(
            build_s=float(train_add),
            index_bytes=self.adindex.built.index_bytes,
            rss_mb=self.adindex.built.rss_mb,
            extra={
                "shares_index_with": "adindex",
                "build_s_is": "train + add stage of the adindex build",
            },
        )
        return self.built

    def index_key(self) -> str:
        return self.adindex.index_key()

    def threads(self, qps_threads: int) -> dict[str, Any]:
        return _faiss_batch_threads(qps_threads, self.adindex.build_threads)

    def points(self) -> list[dict[str, Any]]:
        return self.adindex.points()

    def _params(self, nprobe: int, k: int) -> tuple[faiss.Index, faiss.SearchParameters]:
        index = self.adindex.searcher_obj.artifact.index
        search = self.adindex.loaded.search
        params = search_params(index, nprobe, search.k_factor, k, min_rerank=search.min_rerank)
        return index, params

    def searcher(self, point: dict[str, Any], xq: np.ndarray, k: int) -> SearchOne:
        index, params = self._params(int(point["nprobe"]), k)
        xqn = unit_rows(xq)

        def one(i: int) -> np.ndarray:
            _, I = index.search(xqn[i : i + 1], k, params=params)
            ids: np.ndarray = I[0]
            return ids

        return one

    def qps(self, point: dict[str, Any], xq: np.ndarray, k: int, threads: int) -> float:
        index, params = self._params(int(point["nprobe"]), k)
        return _faiss_batch_qps(index, unit_rows(xq), k, threads, params=params)
