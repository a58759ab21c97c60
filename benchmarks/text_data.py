"""Datasets embedded with the real model (all-MiniLM-L6-v2), and the ESCI relevance check.

- ``sample``: the deterministic sample catalog (``indexer.sample``), ads embedded from their text,
  users (``generate_users``) embedded as the normalised mean of their pins, as the demo does.
- ``esci``: products of ``shared/data/esci_us_subset500`` embedded as ads and its search queries
  as users; its graded judgements (``qrels.csv``) give NDCG@10 and the recall of relevant
  products (grade >= 2) through the adindex index and through exact search.

Embeddings are cached under ``benchmarks/results/cache/`` (the model embeds ~100 texts/s here).
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.datasets import Dataset

logger = logging.getLogger(__name__)

ESCI_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "esci_us_subset500"
RELEVANT_GRADE = 2  # ESCI: 3 exact, 2 substitute, 1 complement, 0 irrelevant


def _cached(
    path: Path, make: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    if path.is_file():
        with np.load(path) as z:
            return z["xb"], z["xq"]
    t0 = time.perf_counter()
    xb, xq = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, xb=xb, xq=xq)
    logger.info(
        "Embedded %d + %d texts in %.0f s (cached in %s)",
        len(xb),
        len(xq),
        time.perf_counter() - t0,
        path,
    )
    return xb, xq


def load_sample(n_ads: int, n_users: int, cache_dir: Path) -> Dataset:
    """The sample catalog's ads and users embedded with the real model (metric ``"ip"``)."""
    from indexer.ann import normalize
    from indexer.embedding import SentenceTransformerEmbedder
    from indexer.sample import generate_catalog, generate_users

    def make() -> tuple[np.ndarray, np.ndarray]:
        embedder = SentenceTransformerEmbedder()
        records = generate_catalog(n_ads)
        xb = embedder.encode([r.text() for r in records], progress=True)
        users = generate_users(n_users)
        pins = embedder.encode([p.text() for u in users for p in u.pins], progress=True)
        bounds = np.cumsum([0] + [len(u.pins) for u in users])
        xq = normalize(np.stack([pins[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)]))
        return xb, xq

    xb, xq = _cached(cache_dir / f"sample-{n_ads}-{n_users}.npz", make)
    return Dataset(
        name="sample",
        xb=xb,
        xq=xq,
        metric="ip",
        description=(
            f"indexer.sample catalog ({n_ads} ads, all active here) and {n_users} generate_users "
            "users (mean of their pins), embedded with all-MiniLM-L6-v2"
        ),
    )


@dataclass(frozen=True)
class Esci:
    """The ESCI subset as vectors plus graded judgements by row."""

    dataset: Dataset
    qrels: list[dict[int, int]]  # per query row: product row -> grade
    product_ids: list[str]
    query_ids: list[str]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class EsciTexts:
    """The ESCI subset's texts, ids and graded judgements by row (nothing embedded)."""

    titles: list[str]
    product_ids: list[str]
    queries: list[str]
    query_ids: list[str]
    qrels: list[dict[int, int]]  # per query row: product row -> grade


def read_esci(root: Path) -> EsciTexts | None:
    """Products, queries and judged pairs of the ESCI subset; None (logged) when absent."""
    files = [root / n for n in ("products.csv", "queries.csv", "qrels.csv")]
    if not all(p.is_file() for p in files):
        logger.warning(
            "ESCI relevance check skipped: %s not found (need products.csv, queries.csv, qrels.csv)",
            root,
        )
        return None
    products, queries, judged = (_read_csv(p) for p in files)
    title_key = next(k for k in products[0] if k != "product_id")
    prow = {p["product_id"]: i for i, p in enumerate(products)}
    qrow = {q["query_id"]: i for i, q in enumerate(queries)}
    qrels: list[dict[int, int]] = [{} for _ in queries]
    for j in judged:
        if j["query_id"] in qrow and j["product_id"] in prow:
            qrels[qrow[j["query_id"]]][prow[j["product_id"]]] = int(j["relevance"])
    return EsciTexts(
        [p[title_key] for p in products],
        [p["product_id"] for p in products],
        [q["query"] for q in queries],
        [q["query_id"] for q in queries],
        qrels,
    )


def load_esci(root: Path, cache_dir: Path) -> Esci | None:
    """Products as ads, queries as users, judged pairs as qrels; None (logged) when absent."""
    texts = read_esci(root)
    if texts is None:
        return None

    def make() -> tuple[np.ndarray, np.ndarray]:
        from indexer.embedding import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
        xb = embedder.encode(texts.titles, progress=True)
        return xb, embedder.encode(texts.queries, progress=True)

    nb, nq = len(texts.titles), len(texts.queries)
    xb, xq = _cached(cache_dir / f"esci-{nb}-{nq}.npz", make)
    ds = Dataset(name="esci", xb=xb, xq=xq, metric="ip",
                 description=f"ESCI subset {root.name}: {nb} product titles, {nq} queries, all-MiniLM-L6-v2")  # fmt: skip
    return Esci(ds, texts.qrels, texts.product_ids, texts.query_ids)


def ndcg_at(ranked: np.ndarray, grades: Mapping[int, int], at: int = 10) -> float:
    """NDCG@at with gain 2^grade - 1; unjudged products count as grade 0."""
    dcg = sum(
        (2 ** grades.get(int(pid), 0) - 1) / math.log2(r + 2) for r, pid in enumerate(ranked[:at])
    )
    ideal = sorted(grades.values(), reverse=True)[:at]
    idcg = sum((2**g - 1) / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def relevance(found: list[np.ndarray], qrels: list[dict[int, int]], at: int = 10) -> dict[str, Any]:
    """Mean NDCG@at over queries with a positive judgement, and recall of grade >= 2 products
    in the top ``at`` and in everything returned."""
    ndcg, rec_at, rec_all = [], [], []
    for ranked, grades in zip(found, qrels, strict=True):
        if not any(g > 0 for g in grades.values()):
            continue
        ndcg.append(ndcg_at(ranked, grades, at))
        relevant = {p for p, g in grades.items() if g >= RELEVANT_GRADE}
        if relevant:
            rec_at.append(len(relevant & set(ranked[:at].tolist())) / len(relevant))
            rec_all.append(len(relevant & set(ranked.tolist())) / len(relevant))
    return {
        f"ndcg_at_{at}": float(np.mean(ndcg)),
        f"relevant_recall_at_{at}": float(np.mean(rec_at)),
        "relevant_recall_at_k": float(np.mean(rec_all)),
        "queries": len(ndcg),
        "queries_with_relevant": len(rec_at),
    }


def grade_counts(qrels: list[dict[int, int]]) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for grades in qrels:
        for g in grades.values():
            counts[g] += 1
    return dict(sorted(counts.items()))
