"""Build-time recall estimates against the recall real queries get (docs/index-parameters.md).

Real all-MiniLM-L6-v2 embeddings of three catalogs, each with queries of its own that never
entered the catalog:

- ``sample``: the sample catalog (``indexer.sample.generate_catalog``) with its pin-based users
  (``generate_users``; a user is the normalised mean of their pins' embeddings, as the demo and
  the server's users are).
- ``esci``: the 658 ESCI product titles of shared/data with their 500 real shopping queries.
- ``wordnet``: WordNet 3.0 noun glosses ("lemmas: definition") as the catalog, and the usage
  examples of some of those synsets (real sentences, written apart from the definitions) as
  queries: short real text against longer real text, like shopping queries against titles.

Embeddings are cached under ``~/.cache/adindex/recall-estimates/`` (the model embeds ~100
texts/s on this machine). Run from the repository root with the project's venv::

    python docs/experiments/recall_estimates.py embed  # once: sample 20k + 1k users, esci, wordnet 20k
    python docs/experiments/recall_estimates.py compare --out benchmarks/results/recall_estimates.jsonl
    python docs/experiments/recall_estimates.py curves sample-20000 --out ...  # nprobe by nprobe

``compare`` builds each catalog's default index (``indexer.params`` rules), runs the build's
own evaluation (``indexer.tuning.tune`` on the default held-out queries) and then measures the
real queries at the operating point the build chose: one JSON line per dataset (``kind``
compare); ``curves`` one per query set (``kind`` curve). Rows are self-describing
(``benchmarks.provenance``); docs/index-parameters.md's tables are generated from the rows
published to docs/results/ by ``make docs``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import indexer  # noqa: F401  (first: OpenMP environment before FAISS loads)
from indexer.ann import exact_search, recall_per_query, search_params
from indexer.ann import recall_interval as interval
from indexer.build import train_index
from indexer.params import choose_params
from indexer.queries import QueryRecipe, QuerySet, catalog_queries
from indexer.tuning import TuningConfig, tune

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.*

from benchmarks.provenance import command, provenance

CACHE = Path.home() / ".cache" / "adindex" / "recall-estimates"
WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")  # Debian package wordnet-base
# shared/data beside the repository (CI's layout); ADINDEX_SHARED_DATA overrides it (worktrees).
SHARED_DATA = Path(
    os.environ.get("ADINDEX_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
ESCI_DIR = SHARED_DATA / "esci_us_subset500"


# --- Data ---------------------------------------------------------------------------------------


def _save(name: str, xb: np.ndarray, xq: np.ndarray) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE / f"{name}.npz", xb=xb, xq=xq)
    print(f"{name}: {xb.shape[0]} catalog vectors, {xq.shape[0]} queries -> {CACHE}", flush=True)


def embed_sample(n_ads: int, n_users: int) -> None:
    from indexer.ann import normalize
    from indexer.embedding import SentenceTransformerEmbedder
    from indexer.records import DEFAULT_TEXT_FIELDS
    from indexer.sample import generate_catalog, generate_users

    emb = SentenceTransformerEmbedder()
    records = generate_catalog(n_ads)
    xb = emb.encode([r.text(DEFAULT_TEXT_FIELDS, ". ") for r in records], progress=True)
    users = generate_users(n_users)
    pins = emb.encode([p.text() for u in users for p in u.pins], progress=True)
    bounds = np.cumsum([0] + [len(u.pins) for u in users])
    xq = np.stack([normalize(pins[a:b].mean(axis=0, keepdims=True))[0]
                   for a, b in itertools.pairwise(bounds)])  # fmt: skip
    _save(f"sample-{n_ads}", xb, xq.astype(np.float32))


def embed_esci() -> None:
    from benchmarks.text_data import load_esci

    esci = load_esci(ESCI_DIR, CACHE)
    if esci is None:
        print(f"esci skipped: {ESCI_DIR} not found", flush=True)
        return
    _save("esci", esci.dataset.xb, esci.dataset.xq)


def wordnet_texts(n_docs: int, n_queries: int, seed: int = 5) -> tuple[list[str], list[str]]:
    """(catalog texts, query texts): glosses of n_docs noun synsets, and one usage example from
    each of n_queries of those synsets (an example is never part of the catalog text)."""
    synsets = []
    for line in WORDNET_NOUNS.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue  # the licence header
        head, gloss = line.split("|", 1)
        fields = head.split()
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(int(fields[3], 16))]
        examples = re.findall(r'"([^"]{12,})"', gloss)
        definition = gloss.split(";")[0].strip()
        synsets.append((f"{', '.join(words)}: {definition}", examples))
    rng = random.Random(seed)
    docs = rng.sample(synsets, n_docs)
    with_examples = [s for s in docs if s[1]]
    queries = [rng.choice(ex) for _, ex in rng.sample(with_examples, n_queries)]
    return [d for d, _ in docs], queries


def embed_wordnet(n_docs: int, n_queries: int) -> None:
    from indexer.embedding import SentenceTransformerEmbedder

    if not WORDNET_NOUNS.is_file():
        print(f"wordnet skipped: {WORDNET_NOUNS} not found (apt-get install wordnet-base)")
        return
    docs, queries = wordnet_texts(n_docs, n_queries)
    emb = SentenceTransformerEmbedder()
    _save(f"wordnet-{n_docs}", emb.encode(docs, progress=True), emb.encode(queries, progress=True))


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(CACHE / f"{name}.npz") as z:
        return np.ascontiguousarray(z["xb"]), np.ascontiguousarray(z["xq"])


# --- Measuring ----------------------------------------------------------------------------------


def described(kind: str, xb: np.ndarray, row: dict[str, Any]) -> dict[str, Any]:
    """A self-describing row (``benchmarks.docs.REQUIRED``) for the running command, stamped now."""
    import faiss

    threads = {"train": faiss.omp_get_max_threads(), "timed_search": 1,
               "how": "training and batched recall searches on FAISS's OpenMP default; "
               "indexer.tuning times one query at a time on 1 thread"}  # fmt: skip
    head = {"benchmark": "recall_estimates", "kind": kind, "dataset": row.pop("dataset"),
            "nb": len(xb), "d": xb.shape[1]}  # fmt: skip
    return {**head, **row, "threads": threads, **provenance(command())}


def emit(row: dict[str, Any], out: Path | None) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with out.open("a") as f:
            f.write(line + "\n")


def served(
    index: Any, xb: np.ndarray, xq: np.ndarray, nprobe: int, k_factor: int, k: int
) -> np.ndarray:
    """Per-query recall@k of the real queries at one operating point (as the server searches)."""
    _, truth = exact_search(xb, xq, k)
    _, I = index.search(xq, k, params=search_params(index, nprobe, k_factor, k, min_rerank=64))
    return recall_per_query(I, truth)


def compare(args: argparse.Namespace) -> None:
    for name in args.datasets:
        if not (CACHE / f"{name}.npz").is_file():
            print(f"{name} skipped: not embedded (run 'embed' first)", flush=True)
            continue
        xb, xq_real = load(name)
        n, d = xb.shape
        params = choose_params(n, d)
        t0 = time.perf_counter()
        index = train_index(xb, params, seed=1234)
        build_s = time.perf_counter() - t0
        queries = catalog_queries(xb, min(500, n), seed=1234)
        t = tune(index, xb, queries, params.nlist, TuningConfig(time_budget_s=args.budget))
        c = t.chosen or t.best
        real = served(index, xb, xq_real, c.nprobe, c.k_factor, t.recall_k)
        lo, hi = interval(real)
        row = {
            "dataset": name, "factory": params.index_factory,
            "nq_real": len(xq_real), "nprobe": c.nprobe, "k_factor": c.k_factor,
            "reached": t.reached, "estimate": c.recall, "estimate_low": c.recall_low,
            "estimate_high": c.recall_high, "served": round(float(real.mean()), 4),
            "served_low": round(lo, 4), "served_high": round(hi, 4),
            "build_s": round(build_s, 1),
        }  # fmt: skip
        row["estimate_minus_served"] = round(row["estimate"] - row["served"], 4)
        # The same build given its real queries (--queries): no calibration margin.
        own = QuerySet(xq_real[:500], "file", f"{name} real queries")
        t_own = tune(index, xb, own, params.nlist, TuningConfig(time_budget_s=args.budget))
        c_own = t_own.chosen or t_own.best
        row["with_real_queries"] = {"nprobe": c_own.nprobe, "k_factor": c_own.k_factor,
                                    "recall": c_own.recall, "recall_low": c_own.recall_low,
                                    "p50_ms": c_own.p50_ms, "default_p50_ms": c.p50_ms}  # fmt: skip
        emit(described("compare", xb, row), args.out)


def curves(args: argparse.Namespace) -> None:
    """Recall by nprobe at one k_factor: the real queries, the recipe before the specific part
    (``residuals=0``), and the default recipe; one JSON line per query set."""
    xb, xq_real = load(args.dataset)
    params = choose_params(*xb.shape)
    index = train_index(xb, params, seed=1234)
    nq = min(500, len(xb))
    sets = {
        "real": xq_real,
        "recipe without specific part": catalog_queries(
            xb, nq, seed=1234, recipe=QueryRecipe(residuals=0, residual_weight=0.0)
        ).xq,
        "default recipe": catalog_queries(xb, nq, seed=1234).xq,
    }
    k_factor = args.k_factor if "RFlat" in params.index_factory else 1
    for label, xq in sets.items():
        D, truth = exact_search(xb, xq, 100)
        curve = {}
        for nprobe in [p for p in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128) if p <= params.nlist]:
            sp = search_params(index, nprobe, k_factor, 100, min_rerank=64)
            _, I = index.search(xq, 100, params=sp)
            curve[nprobe] = round(float(recall_per_query(I, truth).mean()), 4)
        row = {"dataset": args.dataset, "factory": params.index_factory, "k_factor": k_factor,
               "queries": label, "nq": len(xq), "cos_1st": round(float(D[:, 0].mean()), 3),
               "cos_100th": round(float(D[:, 99].mean()), 3), "recall_by_nprobe": curve}  # fmt: skip
        emit(described("curve", xb, row), args.out)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--ads", type=int, default=20_000)
    e.add_argument("--users", type=int, default=1_000)
    e.add_argument("--wordnet-docs", type=int, default=20_000)
    e.add_argument("--wordnet-queries", type=int, default=1_000)
    c = sub.add_parser("compare")
    c.add_argument("datasets", nargs="*", default=["sample-20000", "esci", "wordnet-20000"])
    c.add_argument("--budget", type=float, default=40.0, help="sweep time budget, s")
    c.add_argument("--out", type=Path, help="append the JSON lines here")
    v = sub.add_parser("curves")
    v.add_argument("dataset")
    v.add_argument("--k-factor", type=int, default=4)
    v.add_argument("--out", type=Path, help="append the JSON lines here")
    args = p.parse_args()
    if args.command == "embed":
        embed_esci()
        embed_sample(args.ads, args.users)
        embed_wordnet(args.wordnet_docs, args.wordnet_queries)
    else:
        {"compare": compare, "curves": curves}[args.command](args)


if __name__ == "__main__":
    main()
