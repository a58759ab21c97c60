"""Systems under test beyond in-process FAISS: adindex over gRPC, hnswlib and LanceDB."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from tqdm import tqdm

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
from benchmarks.systems import AdindexInProcess, Built, System
from indexer.ann import Metric

logger = logging.getLogger(__name__)

# Lance logs every k-means iteration with empty clusters at WARN on small data; errors only.
os.environ.setdefault("LANCE_LOG", "error")


def _serve_child(index: str, alone_threads: int, conn: Connection, stop: Event) -> None:
    """Child process: the real server (retrieval.server.create_server) on 127.0.0.1, port 0."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s server %(levelname)s %(message)s"
    )
    try:
        from retrieval.server import ServerConfig, create_server

        config = ServerConfig(
            host="127.0.0.1", port=0, index=Path(index), alone_omp_threads=alone_threads
        )
        running = create_server(config)
        conn.send({"port": running.port, "loaded": running.state.loaded})
    except Exception as exc:
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    stop.wait()
    running.stop(0)


def _server_settings(alone_threads: int) -> str:
    from retrieval.server import ServerConfig

    c = ServerConfig(alone_omp_threads=alone_threads)
    batching = "on" if c.batching is not None else "off"
    return (
        f"{c.workers} gRPC workers, {c.omp_threads} OpenMP thread per search "
        f"({c.alone_omp_threads} while alone), batching {batching}, "
        f"shadow recall {c.shadow.sample_rate:.0%}"
    )


class AdindexGrpc(System):
    """The real gRPC server in its own process over adindex's artifact; one call at a time
    through ``retrieval.client.RetrievalClient``.

    ``alone_threads`` is the server's ``--alone-threads``: 1 (the default here) gives a lone
    call's search one OpenMP thread, as every other system's single queries get; the server
    ships with 2 (docs/serving.md measures both).
    """

    name = "adindex-grpc"
    in_process = False  # the server's process does the searching

    def __init__(self, adindex: AdindexInProcess, *, alone_threads: int = SEARCH_THREADS) -> None:
        super().__init__()
        self.adindex = adindex
        self.alone_threads = alone_threads
        self._ctx = mp.get_context("spawn")
        self._stop = self._ctx.Event()
        self._proc: Any = None
        self.client: Any = None

    def build(self, ds: Dataset, workdir: Path) -> Built:
        from retrieval.client import RetrievalClient

        assert self.adindex.version_dir is not None, "build adindex first"
        parent, child = self._ctx.Pipe(duplex=False)
        t0 = time.perf_counter()
        self._proc = self._ctx.Process(
            target=_serve_child,
            args=(str(self.adindex.version_dir), self.alone_threads, child, self._stop),
        )
        self._proc.start()
        child.close()
        msg: dict[str, Any] = parent.recv()
        if "error" in msg or not msg.get("loaded"):
            self.close()
            raise RuntimeError(f"gRPC server did not start with the index: {msg}")
        self.client = RetrievalClient(f"127.0.0.1:{msg['port']}", timeout_s=30.0)
        self.client.wait_ready()
        start_s = time.perf_counter() - t0
        self.built = Built(
            build_s=self.adindex.built.build_s,
            index_bytes=self.adindex.built.index_bytes,
            rss_mb=rss_mb(self._proc.pid),
            extra={"server_start_s": round(start_s, 2), "rss_is": "whole server process",
                   "server": f"retrieval.server.create_server, {_server_settings(self.alone_threads)}"},
        )  # fmt: skip
        return self.built

    def index_key(self) -> str:
        return self.adindex.index_key()

    def points(self) -> list[dict[str, Any]]:
        return self.adindex.points()

    def threads(self, qps_threads: int) -> dict[str, Any]:
        return {
            "single": self.alone_threads,
            "qps": qps_threads,
            "build": self.adindex.build_threads,
            "how": f"one client call at a time, the server searching it on {self.alone_threads} "
            f"OpenMP thread(s) (--alone-threads); QPS: {qps_threads} concurrent client calls, "
            f"1 OpenMP thread per search; server: {_server_settings(self.alone_threads)}",
        }

    def searcher(self, point: dict[str, Any], xq: np.ndarray, k: int) -> SearchOne:
        client, nprobe = self.client, int(point["nprobe"])
        rows = [q.tolist() for q in xq]  # what a caller holds: a list of floats

        def one(i: int) -> np.ndarray:
            response = client.retrieve(rows[i], k=k, nprobe=nprobe)
            return np.fromiter((int(c.ad_id) for c in response.candidates), dtype=np.int64)

        return one

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._proc is not None:
            self._stop.set()
            self._proc.join(timeout=30)
            if self._proc.is_alive():
                self._proc.terminate()
            self._proc = None


class Hnsw(System):
    """hnswlib (``M`` links, ``ef_construction``), swept over efSearch."""

    name = "hnswlib"

    def __init__(
        self,
        metric: Metric,
        ef_search: tuple[int, ...],
        *,
        m: int = 32,
        ef_construction: int = 200,
        fallback_ef_construction: int = 100,
        max_build_min: float = 40.0,
        threads: int = 2,
        cache: Path | None = None,
    ) -> None:
        super().__init__()
        self.cache = cache  # reuse (or save) the built index here: sets sharing a base
        self.truth = metric
        self.ef_search, self.m, self.ef_construction = ef_search, m, ef_construction
        self.fallback_ef_construction, self.max_build_min = fallback_ef_construction, max_build_min
        self.build_threads = threads
        self.index: Any = None

    def _new(self, n: int, d: int, efc: int) -> Any:
        import hnswlib

        index = hnswlib.Index(space="ip" if self.truth == "ip" else "l2", dim=d)
        index.init_index(max_elements=n, M=self.m, ef_construction=efc, random_seed=100)
        index.set_num_threads(self.build_threads)
        return index

    def _choose_ef_construction(self, xb: np.ndarray) -> tuple[int, dict[str, Any]]:
        """Time a pilot build on a prefix; project the full build (~ n log n)."""
        nb = len(xb)
        pilot_n = min(20_000, nb // 10)
        if pilot_n < 2_000:
            return self.ef_construction, {}
        pilot = self._new(pilot_n, xb.shape[1], self.ef_construction)
        t0 = time.perf_counter()
        pilot.add_items(xb[:pilot_n], np.arange(pilot_n))
        pilot_s = time.perf_counter() - t0
        projected_min = pilot_s * (nb / pilot_n) * math.log(nb) / math.log(pilot_n) / 60
        info = {"pilot_n": pilot_n, "pilot_s": round(pilot_s, 1),
                "projected_build_min_at_ef_construction": round(projected_min, 1)}  # fmt: skip
        if projected_min > self.max_build_min:
            logger.warning(
                "hnswlib: efConstruction %d projects %.0f min > %.0f min; using %d",
                self.ef_construction, projected_min, self.max_build_min,
                self.fallback_ef_construction,
            )  # fmt: skip
            info["ef_construction_reduced_from"] = self.ef_construction
            return self.fallback_ef_construction, info
        return self.ef_construction, info

    def build(self, ds: Dataset, workdir: Path) -> Built:
        xb = ds.xb if self.truth == "l2" else _unit(ds.xb)
        path = self.cache or workdir / "hnswlib.bin"
        reused = self._load_cached(xb, path)
        if reused is None:
            build_s, index_bytes, rss, extra = self._build(xb, path)
        else:
            build_s, index_bytes, rss, extra = reused
        space = "ip" if self.truth == "ip" else "l2"
        extra["serving_rss"] = serving_rss("hnswlib", path, space=space, dim=ds.d)
        self.built = Built(build_s, index_bytes, rss, extra)
        return self.built

    def _build(self, xb: np.ndarray, path: Path) -> tuple[float, int, float, dict[str, Any]]:
        """Build over xb, save to path (with a JSON sidecar naming what it holds)."""
        nb, d = xb.shape
        efc, info = self._choose_ef_construction(xb)
        rss0 = rss_mb()
        t0 = time.perf_counter()
        index = self._new(nb, d, efc)
        step = 50_000
        for start in tqdm(range(0, nb, step), desc="hnswlib add", unit="50k", mininterval=10):
            stop = min(nb, start + step)
            index.add_items(xb[start:stop], np.arange(start, stop))
        build_s = time.perf_counter() - t0
        self.index, self.efc = index, efc
        extra = {"ef_construction": efc, "M": self.m, "hnswlib": _version("hnswlib"), **info}
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save_index(str(path))
        sidecar = {"vectors": _fingerprint(xb), "build_s": build_s, "extra": extra}
        path.with_suffix(".json").write_text(json.dumps(sidecar), encoding="utf-8")
        return build_s, int(index.index_file_size()), rss_mb() - rss0, extra

    def _load_cached(
        self, xb: np.ndarray, path: Path
    ) -> tuple[float, int, float, dict[str, Any]] | None:
        """The index saved at ``self.cache`` when it was built over these very vectors."""
        sidecar = path.with_suffix(".json")
        if self.cache is None or not path.is_file() or not sidecar.is_file():
            return None
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta["vectors"] != _fingerprint(xb) or meta["extra"]["M"] != self.m:
            logger.warning("hnswlib: %s holds another index; building anew", path)
            return None
        import hnswlib

        rss0 = rss_mb()
        index = hnswlib.Index(space="ip" if self.truth == "ip" else "l2", dim=xb.shape[1])
        index.load_index(str(path), max_elements=len(xb))
        self.index, self.efc = index, int(meta["extra"]["ef_construction"])
        extra = {**meta["extra"], "reused_index": str(path)}
        return float(meta["build_s"]), int(index.index_file_size()), rss_mb() - rss0, extra

    def index_key(self) -> str:
        return f"HNSW{self.m},efC{self.efc}"

    def threads(self, qps_threads: int) -> dict[str, Any]:
        return {
            "single": SEARCH_THREADS,
            "qps": qps_threads,
            "build": self.build_threads,
            "how": f"single queries: set_num_threads({SEARCH_THREADS}); QPS: one knn_query "
            f"batch with num_threads={qps_threads}",
        }

    def points(self) -> list[dict[str, Any]]:
        return [{"ef_search": ef} for ef in self.ef_search]

    def searcher(self, point: dict[str, Any], xq: np.ndarray, k: int) -> SearchOne:
        index = self.index
        index.set_ef(max(k, int(point["ef_search"])))
        index.set_num_threads(SEARCH_THREADS)
        xqn = xq if self.truth == "l2" else _unit(xq)

        def one(i: int) -> np.ndarray:
            labels, _ = index.knn_query(xqn[i : i + 1], k=k)
            ids: np.ndarray = labels[0].astype(np.int64)
            return ids

        return one

    def qps(self, point: dict[str, Any], xq: np.ndarray, k: int, threads: int) -> float:
        self.index.set_ef(max(k, int(point["ef_search"])))
        xqn = xq if self.truth == "l2" else _unit(xq)
        t0 = time.perf_counter()
        self.index.knn_query(xqn, k=k, num_threads=threads)
        return len(xq) / (time.perf_counter() - t0)

    def close(self) -> None:
        self.index = None


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _fingerprint(xb: np.ndarray) -> str:
    """Shape and a digest of a sample of rows: which vectors an index was built over."""
    rows = np.ascontiguousarray(xb[:: max(1, len(xb) // 1000)])
    return f"{xb.shape}:{hashlib.sha256(rows.tobytes()).hexdigest()[:16]}"


def _unit(x: np.ndarray) -> np.ndarray:
    """Unit rows; the array itself when it already has them (a 1M x 384 copy is 1.5 GB)."""
    from benchmarks.systems import unit_rows

    norms = np.linalg.norm(x[:: max(1, len(x) // 1000)], axis=1)
    if x.dtype == np.float32 and x.flags.c_contiguous and np.allclose(norms, 1.0, atol=1e-4):
        return x
    return unit_rows(x)


def _lance_threads(threads: int) -> None:
    """Limit LanceDB's runtimes to ``threads`` in this process; read once, when lancedb first
    runs: its tokio workers (``TOKIO_WORKER_THREADS``) and its compute pool
    (``LANCE_CPU_THREADS``, which on 2 cores otherwise defaults to 1, after reserving 2 for I/O)."""
    os.environ["TOKIO_WORKER_THREADS"] = str(threads)
    os.environ["LANCE_CPU_THREADS"] = str(threads)


def _lance_search(
    table: Any, distance: str, point: dict[str, Any], xq: np.ndarray, k: int
) -> SearchOne:
    nprobes, refine = int(point["nprobes"]), int(point["refine_factor"])

    def one(i: int) -> np.ndarray:
        q = table.search(xq[i], vector_column_name="vector").distance_type(distance)
        q = q.nprobes(nprobes)
        if refine > 0:
            q = q.refine_factor(refine)
        ids: np.ndarray = q.limit(k).select(["id", "_distance"]).to_arrow()["id"].to_numpy()
        return ids

    return one


def _lance_worker(db_dir: str, threads: int, conn: Connection) -> None:
    """Child process: LanceDB searches on ``threads`` threads (set before lancedb loads), timed
    here; answers ("time", point, xq, k, warmup, repeats) and ("qps", point, xq, k, callers)."""
    _lance_threads(threads)
    os.environ.setdefault("LANCE_LOG", "error")
    import lancedb

    table = lancedb.connect(db_dir).open_table("vectors")
    while (msg := conn.recv()) is not None:
        op, distance, point, xq, k, *rest = msg
        search = _lance_search(table, distance, point, xq, k)
        if op == "time":
            conn.send(time_queries(search, len(xq), warmup=rest[0], repeats=rest[1]))
        else:
            conn.send(concurrent_qps(search, len(xq), threads=rest[0]))
    conn.close()


class Lance(System):
    """LanceDB (embedded, on local disk) with an IVF_PQ index, swept over nprobes and refine.

    LanceDB sizes its thread pools once per process, so its searches are timed in child
    processes whose pools are limited to the row's thread count (``_lance_threads``): one for
    single queries, ``qps_threads`` for the concurrent callers, like every other system. The
    build runs here on ``build_threads``.
    """

    name = "lancedb"

    def __init__(
        self,
        metric: Metric,
        nprobes: tuple[int, ...],
        refine_factors: tuple[int, ...],
        *,
        num_partitions: int | None = None,
        build_threads: int = 2,
    ) -> None:
        super().__init__()
        self.truth = metric
        self.nprobes, self.refine_factors = nprobes, refine_factors
        self.num_partitions = num_partitions
        self.build_threads = build_threads
        self.table: Any = None
        self.db_dir: Path | None = None
        self.key = ""
        self._workers: dict[int, tuple[Any, Connection]] = {}

    def build(self, ds: Dataset, workdir: Path) -> Built:
        _lance_threads(self.build_threads)  # (no effect if lancedb already ran in this process)
        import lancedb

        xb = ds.xb if self.truth == "l2" else _unit(ds.xb)
        parts = self.num_partitions or max(1, round(math.sqrt(ds.nb)))
        sub = ds.d // 8 if ds.d % 8 == 0 else ds.d // 4
        rss0 = rss_mb()
        t0 = time.perf_counter()
        self.db_dir = workdir / "lancedb"
        db = lancedb.connect(self.db_dir)
        data = pa.table({"id": pa.array(np.arange(ds.nb, dtype=np.int64)),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(xb.reshape(-1)), ds.d)})  # fmt: skip
        table = db.create_table("vectors", data=data)
        write_s = time.perf_counter() - t0
        from lancedb.index import IvfPq

        distance: Literal["dot", "l2"] = "dot" if self.truth == "ip" else "l2"
        config = IvfPq(distance_type=distance, num_partitions=parts, num_sub_vectors=sub)
        table.create_index("vector", config=config)
        build_s = time.perf_counter() - t0
        self.table = table
        self.key = f"IVF_PQ(partitions={parts},sub_vectors={sub},bits=8)"
        root = self.db_dir / "vectors.lance"
        index_bytes = dir_bytes(root / "_indices") if (root / "_indices").is_dir() else 0
        self.built = Built(build_s, index_bytes, rss_mb() - rss0,
                           {"table_write_s": round(write_s, 2), "table_bytes": dir_bytes(root),
                            "lancedb": lancedb.__version__})  # fmt: skip
        return self.built

    def index_key(self) -> str:
        return self.key

    def threads(self, qps_threads: int) -> dict[str, Any]:
        return {
            "single": SEARCH_THREADS,
            "qps": qps_threads,
            "build": self.build_threads,
            "how": f"timed in a child process with TOKIO_WORKER_THREADS = LANCE_CPU_THREADS = "
            f"{SEARCH_THREADS} (single queries) or {qps_threads} ({qps_threads} concurrent callers)",
        }

    def points(self) -> list[dict[str, Any]]:
        return [
            {"nprobes": p, "refine_factor": r} for r in self.refine_factors for p in self.nprobes
        ]

    def _distance(self) -> str:
        return "dot" if self.truth == "ip" else "l2"

    def searcher(self, point: dict[str, Any], xq: np.ndarray, k: int) -> SearchOne:
        """In this process (on the build's thread pools): for checks, not for timing."""
        xqn = xq if self.truth == "l2" else _unit(xq)
        return _lance_search(self.table, self._distance(), point, xqn, k)

    def _worker(self, threads: int) -> Connection:
        if threads not in self._workers:
            assert self.db_dir is not None, "build() first"
            ctx = mp.get_context("spawn")  # FAISS (OpenMP) already ran in this process
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_lance_worker, args=(str(self.db_dir), threads, child))
            proc.start()
            child.close()
            self._workers[threads] = (proc, parent)
        return self._workers[threads][1]

    def _ask(self, threads: int, msg: tuple[Any, ...]) -> Any:
        conn = self._worker(threads)
        conn.send(msg)
        try:
            return conn.recv()
        except EOFError as exc:
            raise RuntimeError(f"the LanceDB worker on {threads} thread(s) died") from exc

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
        xqn = np.ascontiguousarray(xq if self.truth == "l2" else _unit(xq))
        common = (self._distance(), point, xqn, k)
        timing: Timing = self._ask(SEARCH_THREADS, ("time", *common, warmup, repeats))
        qps: float = self._ask(qps_threads, ("qps", *common, qps_threads))
        return timing, qps

    def close(self) -> None:
        for proc, conn in self._workers.values():
            conn.send(None)
            conn.close()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        self._workers.clear()
        self.table = None
