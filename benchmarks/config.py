"""What one benchmark run measures (``BenchConfig``) and the per-dataset presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SYSTEMS = ("faiss-flat", "adindex", "faiss-ivf", "adindex-grpc", "hnswlib", "lancedb")
DATASETS = (
    "calibrated-1m",
    "calibrated-100k",
    "calibrated",
    "tight-1m",
    "realtext",
    "fashion-mnist",
    "sample",
    "esci",
)


@dataclass(frozen=True)
class BenchConfig:
    """One ``python -m benchmarks.recall_latency`` run (faiss ``bench_fw``-style)."""

    dataset: str
    nb: int = 100_000  # synthetic sets; "sample": ads; "realtext": at most this many texts
    nq: int = 1_000  # queries generated (synthetic) or users (sample)
    d: int = 384
    seed: int = 1338
    k: int = 100
    nq_eval: int = 1_000  # first nq_eval queries: recall, latency and QPS are measured on them
    warmup: int = 100
    repeats: int = 2  # timed passes over the nq_eval queries
    qps_threads: int = 2  # throughput run: 2 concurrent callers (or one batch on 2 threads)
    grpc_alone_threads: int = 1  # adindex-grpc's --alone-threads: 1 = equal to the other systems
    systems: tuple[str, ...] = SYSTEMS
    factory: str | None = None  # adindex index; None: indexer.params chooses
    k_factor: int | None = None  # adindex re-ranking depth; None: indexer.params chooses
    tag: str = ""  # results go to <dataset>-<tag>/ when set (e.g. a second adindex config)
    nprobes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    ef_search: tuple[int, ...] = (100, 128, 192, 256, 384, 512)
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_max_build_min: float = 40.0
    hnsw_cache: Path | None = None  # reuse the hnswlib index saved here (same vectors), or save it
    lance_nprobes: tuple[int, ...] = (8, 16, 32, 64, 128)
    lance_refine: tuple[int, ...] = (0, 10)  # 0: no refine stage
    lance_partitions: int | None = None  # None: sqrt(nb)
    stats: bool = True
    stats_nlist: int | None = None  # None: nb / 53 (the real measurement's list density)
    stats_train_points: int | None = None
    stats_niter: int = 20
    out: Path = RESULTS_DIR
    workdir: Path | None = None  # None: a temporary directory, removed afterwards
    artifact: Path | None = None  # reuse this adindex artifact (built over the same vectors)
    command: str = ""  # the command line that asked for this run (recorded in every row)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}; got {self.dataset!r}")
        unknown = set(self.systems) - set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems {sorted(unknown)}; choose from {SYSTEMS}")
        if {"faiss-ivf", "adindex-grpc"} & set(self.systems) and "adindex" not in self.systems:
            raise ValueError("faiss-ivf and adindex-grpc search adindex's artifact: add adindex")
        for name in (
            "nb",
            "nq",
            "k",
            "nq_eval",
            "repeats",
            "qps_threads",
            "hnsw_m",
            "grpc_alone_threads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0; got {self.warmup}")

    @property
    def name(self) -> str:
        """Results folder name."""
        name = f"calibrated-{self.nb}x{self.d}" if self.dataset == "calibrated" else self.dataset
        return f"{name}-{self.tag}" if self.tag else name

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["out"], out["workdir"] = str(self.out), str(self.workdir) if self.workdir else None
        out["artifact"] = str(self.artifact) if self.artifact else None
        out["hnsw_cache"] = str(self.hnsw_cache) if self.hnsw_cache else None
        return out


# Per dataset: defaults that command-line flags override.
PRESETS: dict[str, dict[str, Any]] = {
    "calibrated-1m": {
        "nb": 1_000_000,
        "nq": 10_000,
        # adindex builds what indexer.params chooses for 1M x 384 (IVF2048,PQ192x4fs,Refine(SQfp16),
        # 64 training points per list) and its build-time tuning picks the default point.
        "nprobes": (64, 128, 192, 256, 320, 384, 512, 768),
        # efConstruction 100: 200 projects well past ~40 min on 2 shared cores (Hnsw's pilot
        # build records its projection in each row's extra), as the benchmark brief allows.
        "hnsw_ef_construction": 100,
        "ef_search": (100, 128, 192, 256, 384, 512, 768, 1024),
        "lance_nprobes": (20, 50, 100, 200, 400),
        "lance_refine": (0, 20),
        "stats_nlist": 4096,
        "stats_train_points": 4096 * 39,
        "stats_niter": 10,
    },
    "calibrated-100k": {"nb": 100_000, "nq": 10_000},
    # The calibrated 1M catalog with the tightly packed queries of benchmarks.datasets.tight
    # (1st / 100th neighbour at cosine ~0.54 / ~0.44): recall 0.95 needs deeper probing.
    "tight-1m": {
        "nb": 1_000_000,
        "nq": 10_000,
        "nprobes": (128, 192, 256, 320, 384, 512, 768),
        "hnsw_ef_construction": 100,
        "ef_search": (128, 256, 384, 512, 768, 1024, 1536, 2048),
        "lance_nprobes": (20, 50, 100, 200, 400),
        "lance_refine": (0, 20),
        "stats_nlist": 4096,
        "stats_train_points": 4096 * 39,
        "stats_niter": 10,
    },
    # benchmarks.realtext: ~256k WordNet/GCIDE definitions embedded with the real model, WordNet
    # usage examples as queries (nb: at most this many base texts; all of them).
    # Both sweeps step ~12% around recall@100 0.95, where the cheapest-point comparison falls.
    "realtext": {
        "nb": 1_000_000,
        "nq": 10_000,
        "nprobes": (16, 32, 64, 96, 112, 128, 144, 160, 176, 192, 256, 384),
        "ef_search": (64, 80, 96, 112, 128, 144, 160, 192, 256, 384),
    },
    "sample": {"nb": 5_000, "nq": 1_000},
    "esci": {},
    "fashion-mnist": {"d": 784, "nq_eval": 1_000},
    "calibrated": {},
}
