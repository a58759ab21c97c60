"""Embedder throughput and relevance: torch fp32 vs ONNX fp32 vs ONNX int8 (all-MiniLM-L6-v2).

Every variant is a (backend, precision, threads, batch size, order) row:

- speed: texts/s embedding a fixed text set (``--n-ads`` sample-catalog ad texts plus the ESCI
  product titles) through ``SentenceTransformerEmbedder.encode``. "sorted" is one encode call
  over all texts (both backends batch texts of similar length together); "unsorted" is one
  encode call per consecutive batch, so every batch keeps the input order and pads to its
  longest text. Rounds are interleaved (every variant once per round, the backends alternating
  within each setting and rotating across rounds) and the median round is reported, because
  the machine is shared.
- relevance: ESCI products embedded as ads and queries as users with that row's own vectors,
  exact inner-product search (top 100), NDCG@10 with the graded qrels and recall of grade >= 2
  products in the top 10 and 100 (``benchmarks.text_data.relevance``).
- fidelity: cosine between the row's vector and torch fp32's for the same text (mean and min
  over every text embedded), and the deltas of the relevance figures against torch fp32.

Usage::

    python -m benchmarks.embedders                            # -> benchmarks/results/embedders.jsonl

Every row is self-describing (``benchmarks.provenance``); docs/embedders.md's table is generated
from the rows published to docs/results/embedders.jsonl by ``make docs`` (the ``embedders``
view of ``benchmarks.doc_views_features``, which also prints the table after a run). Exported
ONNX models are cached outside the repository (``indexer.embedding_onnx.cache_root()``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.doc_views import Spec
from benchmarks.doc_views_features import embedders_view, speedup_rounds, torch_twin
from benchmarks.provenance import command, load_avg, provenance
from benchmarks.text_data import ESCI_DIR, RELEVANT_GRADE, relevance

logger = logging.getLogger(__name__)

TOLERANCE = (
    0.005  # a variant qualifies when NDCG@10 and recall@10/100 stay this close to torch fp32
)
MIN_SPEEDUP = 1.5  # ... and the default must also embed this much faster than torch fp32
REFERENCE = ("torch", None, 2, 64, "sorted")  # what adindex shipped: torch fp32, 2 cores, batch 64
THREADS_HOW = (
    "torch.set_num_threads for torch; ONNX Runtime intra_op_num_threads (inter_op 1) for onnx"
)


@dataclass(frozen=True)
class EmbedBenchConfig:
    """One benchmark run."""

    n_ads: int = 2000
    rounds: int = 3
    threads: tuple[int, ...] = (1, 2)
    batch_sizes: tuple[int, ...] = (32, 64)
    out: Path = Path("benchmarks/results/embedders.jsonl")
    esci_dir: Path = ESCI_DIR
    command: str = "python -m benchmarks.embedders"  # the command line, as rows record it

    def __post_init__(self) -> None:
        if self.n_ads < 0 or self.rounds < 1:
            raise ValueError(f"need n_ads >= 0 and rounds >= 1; got {self.n_ads}, {self.rounds}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads must be >= 1; got {self.threads}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be >= 1; got {self.batch_sizes}")


@dataclass(frozen=True)
class Variant:
    backend: Literal["torch", "onnx"]
    quantize: Literal["int8"] | None
    threads: int
    batch_size: int
    order: Literal["sorted", "unsorted"]

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.backend, self.quantize, self.threads, self.batch_size, self.order)

    @property
    def embedder_key(self) -> tuple[Any, ...]:
        """Order is a way of calling encode, not a different embedder."""
        return self.key[:4]

    @property
    def name(self) -> str:
        prec = self.quantize or "fp32"
        return f"{self.backend}-{prec} t{self.threads} b{self.batch_size} {self.order}"


@dataclass
class Texts:
    """What every variant embeds: timed texts (ads, then ESCI products) and untimed queries."""

    timed: list[str]
    n_ads: int
    queries: list[str] = field(default_factory=list)
    qrels: list[dict[int, int]] = field(default_factory=list)  # query row -> product row -> grade

    @property
    def has_esci(self) -> bool:
        return bool(self.queries)


def load_texts(n_ads: int, esci_dir: Path) -> Texts:
    """Sample-catalog ad texts plus, when the ESCI subset is present, its products and queries."""
    from benchmarks.text_data import read_esci
    from indexer.sample import generate_catalog

    ads = [r.text() for r in generate_catalog(n_ads)] if n_ads else []
    esci = read_esci(esci_dir)
    if esci is None:
        return Texts(ads, len(ads))
    return Texts(ads + esci.titles, len(ads), esci.queries, esci.qrels)


def variants(cfg: EmbedBenchConfig) -> list[Variant]:
    """Every setting, backends innermost: consecutive runs compare backends under similar load."""
    out = []
    for order in ("sorted", "unsorted"):
        for bs in cfg.batch_sizes:
            for t in cfg.threads:
                for backend, q in (("torch", None), ("onnx", None), ("onnx", "int8")):
                    out.append(Variant(backend, q, t, bs, order))  # type: ignore[arg-type]
    return out


def make_embedder(v: Variant) -> Any:
    from indexer.embedding import SentenceTransformerEmbedder

    threads = v.threads if v.backend == "onnx" else None
    return SentenceTransformerEmbedder(
        batch_size=v.batch_size, backend=v.backend, quantize=v.quantize, threads=threads
    )


def embed(embedder: Any, v: Variant, texts: Sequence[str]) -> np.ndarray:
    """The variant's vectors for texts: (len(texts), d) float32, unit rows, in input order."""
    import torch

    if v.backend == "torch":
        torch.set_num_threads(v.threads)  # process-wide; ONNX Runtime sessions have their own pools
    if v.order == "sorted":
        x: np.ndarray = embedder.encode(texts)
        return x
    bs = v.batch_size
    return np.concatenate([embedder.encode(texts[i : i + bs]) for i in range(0, len(texts), bs)])


def esci_metrics(xb: np.ndarray, xq: np.ndarray, qrels: list[dict[int, int]]) -> dict[str, float]:
    """NDCG@10 and recall of grade >= 2 products in the top 10/100, by exact search."""
    import faiss

    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    _, I = index.search(xq, min(100, len(xb)))
    r = relevance(list(I), qrels, at=10)
    return {
        "ndcg_at_10": r["ndcg_at_10"],
        "recall_at_10": r["relevant_recall_at_10"],
        "recall_at_100": r["relevant_recall_at_k"],
        "esci_queries": r["queries"],
    }


def run(cfg: EmbedBenchConfig) -> list[dict[str, Any]]:
    """Measure every variant; returns one record per variant (also appended to ``cfg.out``)."""
    texts = load_texts(cfg.n_ads, cfg.esci_dir)
    vs = variants(cfg)
    load_start = load_avg()
    embedders = {v.embedder_key: make_embedder(v) for v in vs}
    for v in vs:  # warm-up: first calls allocate arenas and pick kernels
        embed(embedders[v.embedder_key], v, texts.timed[:64])
    seconds: dict[tuple[Any, ...], list[float]] = {v.key: [] for v in vs}
    vectors: dict[tuple[Any, ...], np.ndarray] = {}
    for rnd in range(cfg.rounds):
        for i in range(0, len(vs), 3):  # rotate the backend order within each setting per round
            group = vs[i : i + 3]
            for v in group[rnd % 3 :] + group[: rnd % 3]:
                t0 = time.perf_counter()
                vectors[v.key] = embed(embedders[v.embedder_key], v, texts.timed)
                seconds[v.key].append(time.perf_counter() - t0)
                print(
                    f"round {rnd + 1}/{cfg.rounds} {v.name:32s} "
                    f"{len(texts.timed) / seconds[v.key][-1]:7.1f} texts/s",
                    flush=True,
                )
    queries = {}
    if texts.has_esci:
        queries = {v.key: embed(embedders[v.embedder_key], v, texts.queries) for v in vs}
    records = _records(cfg, vs, texts, seconds, vectors, queries, load_start)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    with cfg.out.open("a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return records


def _records(
    cfg: EmbedBenchConfig,
    vs: Sequence[Variant],
    texts: Texts,
    seconds: dict[tuple[Any, ...], list[float]],
    vectors: dict[tuple[Any, ...], np.ndarray],
    queries: dict[tuple[Any, ...], np.ndarray],
    load_start: tuple[float, float, float],
) -> list[dict[str, Any]]:
    import onnxruntime
    import sentence_transformers
    import torch

    from indexer.embedding import model_hash

    ref_key = REFERENCE if REFERENCE in vectors else vs[0].key
    ref_all = np.concatenate([vectors[ref_key], queries.get(ref_key, vectors[ref_key][:0])])
    common = {
        "benchmark": "embedders",
        "kind": "variant",
        "dataset": (
            f"{texts.n_ads} indexer.sample ad texts + {len(texts.timed) - texts.n_ads} ESCI "
            f"product titles timed; {len(texts.queries)} ESCI queries for relevance"
        ),
        "nb": len(texts.timed),  # texts timed
        "d": int(vectors[ref_key].shape[1]),
        "rounds": cfg.rounds,
        "reference": Variant(*ref_key).name,
        "software": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "load_avg_start": load_start,
        "load_avg_end": load_avg(),
        **provenance(cfg.command),
    }
    records = []
    for v in vs:
        all_x = np.concatenate([vectors[v.key], queries.get(v.key, vectors[v.key][:0])])
        cos = np.sum(all_x * ref_all, axis=1)
        med = statistics.median(seconds[v.key])
        rec: dict[str, Any] = {
            "name": v.name,
            **asdict(v),
            "threads": {"embed": v.threads, "how": THREADS_HOW},
            "quantize": v.quantize or "none",
            "embedder_id": f"all-MiniLM-L6-v2/{v.backend}-{v.quantize or 'fp32'}/"
            f"{model_hash(_model_path())}",
            "texts_per_s": round(len(texts.timed) / med, 1),
            "texts_per_s_rounds": [round(len(texts.timed) / s, 1) for s in seconds[v.key]],
            "cos_to_torch_fp32_mean": float(cos.mean()),
            "cos_to_torch_fp32_min": float(cos.min()),
        }
        if texts.has_esci:
            rec |= esci_metrics(vectors[v.key][texts.n_ads :], queries[v.key], texts.qrels)
        records.append(rec | common)
    _compare(records)
    return records


def _model_path() -> Path:
    from indexer.embedding import default_model_path

    return default_model_path()


def _compare(records: list[dict[str, Any]]) -> None:
    """Add speed-up (against torch fp32 in the same setting) and relevance deltas (against REFERENCE)."""
    by_key = {
        (r["backend"], r["quantize"], r["threads"]["embed"], r["batch_size"], r["order"]): r
        for r in records
    }
    ref = by_key.get((REFERENCE[0], "none", *REFERENCE[2:]))
    for r in records:
        if twin := torch_twin(records, r):
            r["speedup_vs_torch_same_setting"] = speedup_rounds(r, twin)
        if ref and "ndcg_at_10" in r:
            deltas = {m: r[m] - ref[m] for m in ("ndcg_at_10", "recall_at_10", "recall_at_100")}
            r["delta_vs_reference"] = deltas
            r["qualifies"] = all(abs(d) <= TOLERANCE for d in deltas.values())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Embedding throughput (texts/s) and ESCI relevance of torch fp32, ONNX fp32 "
        "and ONNX int8 all-MiniLM-L6-v2, by threads, batch size and length-sorted order.",
    )
    p.add_argument("--n-ads", type=int, default=EmbedBenchConfig.n_ads,
                   help="sample-catalog ad texts to time, besides the ESCI products (default %(default)s)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=EmbedBenchConfig.rounds,
                   help="interleaved rounds; the median is reported (default %(default)s)")  # fmt: skip
    p.add_argument("--threads", type=int, nargs="+", default=list(EmbedBenchConfig.threads))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(EmbedBenchConfig.batch_sizes))
    p.add_argument("--out", type=Path, default=EmbedBenchConfig.out, help="JSON lines, appended")
    p.add_argument("--esci-dir", type=Path, default=ESCI_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cfg = EmbedBenchConfig(
        n_ads=args.n_ads,
        rounds=args.rounds,
        threads=tuple(args.threads),
        batch_sizes=tuple(args.batch_sizes),
        out=args.out,
        esci_dir=args.esci_dir,
        command=command(argv, module="benchmarks.embedders"),
    )
    records = run(cfg)
    print("\n" + embedders_view(records, Spec("table", "embedders")))
    print(f"{len(records)} rows appended to {cfg.out}; relevant = grade >= {RELEVANT_GRADE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
