"""Several interests against one averaged embedding, and what each interest costs through gRPC.

    python -m benchmarks.interests --esci-dir ../shared/data/esci_us_subset500
    python -m benchmarks.publish --from benchmarks/results/interests/results.jsonl \\
        --to docs/results/interests.jsonl && make docs   # docs/interests.md's tables

Quality: the share of each interest's relevant ads found in the top k.

- ``sample``: the sample catalog (``indexer.sample``) embedded with all-MiniLM-L6-v2, and the
  sample users with 2 or 3 interests (each pin is written from one of the user's categories).
  An interest's reference query is the normalised mean of the user's pins of that category; its
  relevant ads are its exact top-(k / interests) among the eligible ads
  (``indexer.ann.exact_search``). Also reported: the worst interest's share per user, and the
  share of candidates whose category is one of the user's.
- ``esci``: users made of 2 or 3 different ESCI queries, each query an interest; its relevant
  products are its human judgements of grade >= 2 (Exact or Substitute).

Methods, all through a real gRPC server over one artifact: ``averaged`` (one Retrieve with the
normalised mean of the user's pins or queries, what the demo used to do), ``averaged-exact``
(the same query, exact search: is the loss the average's or the index's?), ``interests`` (one
Retrieve with the reference queries, weighted by pin counts), ``pins-medoid`` and
``pins-mean`` (one Retrieve with the user's pin ids and engagement times: the server clusters
them; a cluster searches with its medoid or its mean; ``-<cost>``: the Ward merge cost) and
``pins@untimed`` (the same pins without times: clustering without recency weighting, which
the relevance defined here ignores too).

Latency: Retrieve with 1, 2, 4 and 8 interests (interests drawn from random pins, k=100) from
one client, one call at a time, to an ``adindex serve`` subprocess, interleaved over the counts
call by call; the single user_embedding call and the engaged-pins call beside them. recall is
each interest's exact top-(its quota) found anywhere in the answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

import indexer  # noqa: F401  (first: OpenMP settings before FAISS loads)
from benchmarks.config import RESULTS_DIR
from benchmarks.core import dir_bytes, rss_mb
from benchmarks.load import Server
from benchmarks.provenance import command, load_avg, provenance
from benchmarks.text_data import ESCI_DIR, RELEVANT_GRADE, load_esci
from indexer.ann import exact_search, normalize
from indexer.build import BuildConfig, BuildResult, build
from indexer.catalog import write_catalog_jsonl
from indexer.records import AdRecord
from retrieval.client import RetrievalClient, engaged_pin
from retrieval.interests import InterestConfig
from retrieval.pin_interests import PinVector
from retrieval.server import ServerConfig, create_server
from retrieval.shadow import ShadowConfig
from retrieval.v1 import retrieval_pb2

logger = logging.getLogger("benchmarks.interests")

Ask = Callable[[RetrievalClient, "User", int], retrieval_pb2.RetrieveResponse]


@dataclass(frozen=True)
class InterestsBenchConfig:
    n_ads: int = 10_000
    n_users: int = 600  # sample users generated; those with 2-3 interests are measured
    ks: tuple[int, ...] = (30, 100)
    esci_users: int = 300  # per number of interests
    esci_ks: tuple[int, ...] = (10, 30)
    latency_k: int = 100
    latency_calls: int = 300  # timed calls per setting
    counts: tuple[int, ...] = (1, 2, 4, 8)
    merge_costs: tuple[float, ...] = (0.5, 0.65, 0.8, 1.0)  # pin clustering variants measured
    esci_dir: Path = ESCI_DIR
    seed: int = 1338
    workdir: Path = RESULTS_DIR / "interests"
    cache_dir: Path = RESULTS_DIR / "cache"
    out: Path = RESULTS_DIR / "interests" / "results.jsonl"
    command: str = "python -m benchmarks.interests"  # the command line, as rows record it


@dataclass(frozen=True)
class User:
    """One user: reference queries per interest, their weights, the averaged query, pins."""

    interests: np.ndarray  # (m, d) unit rows
    weights: np.ndarray  # (m,)
    averaged: np.ndarray  # (d,) unit
    relevant: list[set[int]]  # per interest: relevant ad rows
    pins: list[retrieval_pb2.EngagedPin]
    categories: tuple[str, ...] = ()


# -- data ---------------------------------------------------------------------------------------


def _embedded(cfg: InterestsBenchConfig) -> tuple[list[AdRecord], np.ndarray, np.ndarray]:
    """Sample ads and every sample user's pins, embedded (cached under cfg.cache_dir)."""
    from indexer.sample import generate_catalog, generate_users

    records = generate_catalog(cfg.n_ads)
    users = generate_users(cfg.n_users)
    path = cfg.cache_dir / f"interests-sample-{cfg.n_ads}-{cfg.n_users}.npz"
    if path.is_file():
        with np.load(path) as z:
            return records, z["xb"], z["xp"]
    from indexer.embedding import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    xb = embedder.encode([r.text() for r in records], progress=True)
    xp = embedder.encode([p.text() for u in users for p in u.pins], progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, xb=xb, xp=xp)
    return records, xb, xp


def build_sample(
    cfg: InterestsBenchConfig,
) -> tuple[list[AdRecord], np.ndarray, BuildResult, float]:
    """The sample artifact, with the users' pins as its pin table (precomputed embeddings), and
    the seconds the build took (embedding the texts, cached, not counted)."""
    from indexer.embedding import default_model_path
    from indexer.sample import generate_users

    records, xb, xp = _embedded(cfg)
    root = cfg.workdir / "sample"
    root.mkdir(parents=True, exist_ok=True)
    write_catalog_jsonl(records, root / "ads.jsonl", embeddings=xb)
    pins = [p for u in generate_users(cfg.n_users) for p in u.pins]
    with (root / "pins.jsonl").open("w", encoding="utf-8") as f:
        for pin, x in zip(pins, xp, strict=True):
            row = {"pin_id": pin.pin_id, "title": pin.title, "embedding": x.tolist()}
            f.write(json.dumps(row) + "\n")
    config = BuildConfig(
        catalog=root / "ads.jsonl",
        out=root / "index",
        pins=root / "pins.jsonl",
        model=default_model_path(),  # records the model the vectors came from
        threads=2,
    )
    t0 = time.perf_counter()
    result = build(config)
    return records, xb, result, time.perf_counter() - t0


def sample_users(
    cfg: InterestsBenchConfig, xb: np.ndarray, eligible: np.ndarray, k: int
) -> list[User]:
    from indexer.sample import generate_users

    _, _, xp = _embedded(cfg)
    out, start = [], 0
    for u in generate_users(cfg.n_users):
        rows = np.arange(start, start + len(u.pins))
        start += len(u.pins)
        if len(u.interests) < 2:
            continue
        cats = [p.category for p in u.pins]
        groups = [rows[[c == name for c in cats]] for name in u.interests]
        xq = normalize(np.stack([xp[g].mean(axis=0) for g in groups]))
        t = k // len(groups)
        truth = exact_search(xb, xq, t, eligible=eligible)[1]
        out.append(
            User(
                interests=xq,
                weights=np.array([len(g) for g in groups], dtype=np.float64),
                averaged=normalize(xp[rows].mean(axis=0, keepdims=True))[0],
                relevant=[set(r[r >= 0].tolist()) for r in truth],
                pins=[engaged_pin(p.pin_id, p.engaged_at_unix_s) for p in u.pins],
                categories=u.interests,
            )
        )
    return out


def esci_users(
    cfg: InterestsBenchConfig, xq: np.ndarray, qrels: list[dict[int, int]]
) -> list[User]:
    rng = np.random.default_rng(cfg.seed)
    relevant = [{p for p, g in grades.items() if g >= RELEVANT_GRADE} for grades in qrels]
    candidates = np.array([i for i, r in enumerate(relevant) if r])
    out: list[User] = []
    for m in (2, 3):
        while sum(len(u.relevant) == m for u in out) < cfg.esci_users:
            q = rng.choice(candidates, size=m, replace=False)
            if len(set().union(*(relevant[i] for i in q))) < sum(len(relevant[i]) for i in q):
                continue  # queries sharing a relevant product are one interest, not two
            out.append(
                User(
                    interests=xq[q],
                    weights=np.ones(m),
                    averaged=normalize(xq[q].mean(axis=0, keepdims=True))[0],
                    relevant=[relevant[i] for i in q],
                    pins=[],
                )
            )
    return out


# -- quality ------------------------------------------------------------------------------------


def _rows(response: retrieval_pb2.RetrieveResponse, row_of: dict[str, int]) -> list[int]:
    return [row_of[c.ad_id] for c in response.candidates]


METHODS: dict[str, Ask] = {
    "averaged": lambda c, u, k: c.retrieve(u.averaged, k),
    "interests": lambda c, u, k: c.retrieve_for(k, interests=u.interests, weights=list(u.weights)),
    "pins": lambda c, u, k: c.retrieve_for(k, engaged_pins=u.pins),
    # the same pins without engagement times: clustering alone, no recency weighting
    "pins@untimed": lambda c, u, k: c.retrieve_for(k, engaged_pins=[p.pin_id for p in u.pins]),
}


def quality(
    users: list[User],
    clients: dict[str, RetrievalClient],
    k: int,
    row_of: dict[str, int],
    exact: Callable[[np.ndarray, int], list[int]],
    category: Callable[[int], str] | None,
) -> list[dict[str, Any]]:
    """Per method and number of interests: per-interest share of relevant ads found, etc."""
    out = []
    for m in sorted({len(u.relevant) for u in users}):
        group = [u for u in users if len(u.relevant) == m]
        for method, client in clients.items():
            if method.startswith("pins") and not group[0].pins:
                continue
            shares, worst, on_topic = [], [], []
            for u in group:
                if method == "averaged-exact":
                    found = set(exact(u.averaged, k))
                else:
                    ask = METHODS[method.split("-")[0]]
                    found = set(_rows(ask(client, u, k), row_of))
                per = [len(found & r) / len(r) for r in u.relevant]
                shares += per
                worst.append(min(per))
                if category is not None:
                    on_topic.append(np.mean([category(r) in u.categories for r in found]))
            out.append(
                {
                    "method": method,
                    "n_interests": m,
                    "k": k,
                    "users": len(group),
                    "interest_recall": round(float(np.mean(shares)), 4),
                    "worst_interest_recall": round(float(np.mean(worst)), 4),
                    "on_topic": round(float(np.mean(on_topic)), 4) if on_topic else None,
                }
            )
            logger.info("%s", out[-1])
    return out


def server_threads() -> dict[str, int]:
    """The threads behind every row: the server's defaults (``ServerConfig``), one client."""
    config = ServerConfig()
    return {"server_omp": config.omp_threads, "server_alone_omp": config.alone_omp_threads,
            "clients": 1}  # fmt: skip


def _described(
    cfg: InterestsBenchConfig, name: str, kind: str, xb: np.ndarray, row: dict[str, Any]
) -> dict[str, Any]:
    """One self-describing row (``benchmarks.docs.REQUIRED``), stamped when it was measured."""
    return {"benchmark": "interests", "kind": kind, "dataset": name, "nb": len(xb),
            "d": xb.shape[1], **row, "threads": server_threads(), **provenance(cfg.command)}  # fmt: skip


def _configs(cfg: InterestsBenchConfig) -> dict[str, InterestConfig]:
    """Server settings measured: the default, and pin clustering variants (method suffix)."""
    out = {"": InterestConfig()}
    for cost in cfg.merge_costs:
        for vector in get_args(PinVector):
            out[f"-{vector}-{cost}"] = InterestConfig(merge_cost=cost, pin_vector=vector)
    return out


def run_quality(
    cfg: InterestsBenchConfig,
    name: str,
    index: Path,
    xb: np.ndarray,
    eligible: np.ndarray,
    ids: list[str],
    make_users: Callable[[int], list[User]],
    ks: Sequence[int],
    category: Callable[[int], str] | None,
) -> list[dict[str, Any]]:
    row_of = {a: i for i, a in enumerate(ids)}
    no_shadow = ShadowConfig(sample_rate=0)
    servers = {
        suffix: create_server(ServerConfig(port=0, index=index, shadow=no_shadow, interests=c))
        for suffix, c in _configs(cfg).items()
    }
    try:
        channels = {s: RetrievalClient(f"127.0.0.1:{r.port}") for s, r in servers.items()}
        clients = {name: channels[""] for name in ("averaged", "averaged-exact", "interests")}
        clients.update({f"pins{s}": c for s, c in channels.items()})
        clients["pins@untimed"] = channels[""]

        def exact(x: np.ndarray, k: int) -> list[int]:
            I = exact_search(xb, x.reshape(1, -1), k, eligible=eligible)[1][0]
            return [int(i) for i in I if i >= 0]

        rows = []
        for k in ks:
            for r in quality(make_users(k), clients, k, row_of, exact, category):
                row = {"name": "interests-quality", **r}
                rows.append(_described(cfg, name, "quality", xb, row))
        for c in channels.values():
            c.close()
        return rows
    finally:
        for s in servers.values():
            s.stop()


# -- latency ------------------------------------------------------------------------------------


def _interests_call(
    queries: list[np.ndarray], k: int
) -> Callable[[RetrievalClient, int], retrieval_pb2.RetrieveResponse]:
    return lambda c, i: c.retrieve_for(k, interests=queries[i])


def run_latency(
    cfg: InterestsBenchConfig,
    index: Path,
    xb: np.ndarray,
    eligible: np.ndarray,
    xp: np.ndarray,
    users: list[User],
    ids: list[str],
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(cfg.seed)
    k, calls = cfg.latency_k, cfg.latency_calls
    row_of = {a: i for i, a in enumerate(ids)}
    queries = {
        m: [xp[rng.choice(len(xp), m, replace=False)] for _ in range(calls)] for m in cfg.counts
    }
    pin_users = [users[i % len(users)] for i in range(calls)]
    settings: dict[str, Callable[[RetrievalClient, int], retrieval_pb2.RetrieveResponse]] = {
        "user_embedding": lambda c, i: c.retrieve(queries[1][i][0], k)
    }
    for m in cfg.counts:
        settings[f"interests-{m}"] = _interests_call(queries[m], k)
    settings["engaged_pins"] = lambda c, i: c.retrieve_for(k, engaged_pins=pin_users[i].pins)
    server = Server(index, batching=False, workers=16)
    try:
        with RetrievalClient(server.target, timeout_s=30) as client:
            for call in settings.values():  # warm up each setting
                for i in range(20):
                    call(client, i)
            lat: dict[str, list[float]] = {name: [] for name in settings}
            answers: dict[str, list[retrieval_pb2.RetrieveResponse]] = {
                name: [] for name in settings
            }
            load0 = load_avg()[0]
            for i in range(calls):
                for name, call in settings.items():  # interleaved: drift hits every setting
                    t0 = time.perf_counter()
                    response = call(client, i)
                    lat[name].append((time.perf_counter() - t0) * 1e3)
                    answers[name].append(response)
            server_rss = rss_mb(server.pid)
            info = client.info()
    finally:
        server.close()
    rows = []
    for name in settings:
        m = int(name.split("-")[1]) if name.startswith("interests-") else 1
        recall = None
        if name != "engaged_pins":
            per = []
            for i, response in enumerate(answers[name]):
                xq = queries[m][i]
                quota = [q.quota for q in response.interests] or [k]
                found = set(_rows(response, row_of))
                for x, t in zip(xq, quota, strict=True):
                    truth = exact_search(xb, normalize(x.reshape(1, -1)), t, eligible=eligible)[1][
                        0
                    ]
                    per.append(len(found & set(truth.tolist())) / t)
            recall = round(float(np.mean(per)), 4)
        a = np.array(lat[name])
        row = {
            "name": "interests-latency",
            "setting": name,
            "n_interests": m,
            "k": k,
            "nq": calls,
            "recall_per_interest": recall,
            "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "qps": round(float(1e3 / a.mean()), 1),
            "server_rss_mb": round(server_rss, 1),
            "index_key": info.index_factory,
            "nprobe": info.default_nprobe,
            "load_avg_1m_start": round(load0, 2),
        }  # load_avg_1m (provenance): read after the timed calls
        rows.append(_described(cfg, "sample", "latency", xb, row))
        logger.info("%s", rows[-1])
    return rows


# -- main ---------------------------------------------------------------------------------------


def run(cfg: InterestsBenchConfig) -> list[dict[str, Any]]:
    from indexer import artifact
    from indexer.sample import category_of, generate_users

    records, xb, result, build_s = build_sample(cfg)
    art = artifact.load(result.version_dir)
    eligible = np.array([a.status == "active" for a in art.ads])
    ids = [a.ad_id for a in art.ads]
    cats = [category_of(r) for r in records]
    rows = run_quality(
        cfg, "sample", result.version_dir, xb, eligible, ids,
        lambda k: sample_users(cfg, xb, eligible, k), cfg.ks, lambda r: cats[r],
    )  # fmt: skip
    esci = load_esci(cfg.esci_dir, cfg.cache_dir)
    if esci is None:
        print(f"ESCI part skipped: {cfg.esci_dir} not found")
    else:
        rows += run_esci(cfg, esci.dataset.xb, esci.dataset.xq, esci.qrels, esci.product_ids)
    users = sample_users(cfg, xb, eligible, cfg.latency_k)
    _, _, xp = _embedded(cfg)
    rows += run_latency(cfg, result.version_dir, xb, eligible, xp, users, ids)
    m = result.manifest
    common = {
        "index_key": m.index.factory,
        "nprobe": m.search.nprobe,
        "k_factor": m.search.k_factor,
        "pins": m.pins.count if m.pins else 0,
        "build_s": round(build_s, 1),
        "index_bytes": dir_bytes(result.version_dir),
        "interest_config": {k: v for k, v in vars(InterestConfig()).items()},
        "sample_users": len(generate_users(cfg.n_users)),
    }
    return [{**r, **({} if r["dataset"] == "esci" else common)} for r in rows]


def run_esci(
    cfg: InterestsBenchConfig,
    xb: np.ndarray,
    xq: np.ndarray,
    qrels: list[dict[int, int]],
    product_ids: list[str],
) -> list[dict[str, Any]]:
    root = cfg.workdir / "esci"
    root.mkdir(parents=True, exist_ok=True)
    records = [AdRecord(ad_id=p, advertiser_id=p, campaign_id=p) for p in product_ids]
    write_catalog_jsonl(records, root / "ads.jsonl", embeddings=xb)
    result = build(BuildConfig(catalog=root / "ads.jsonl", out=root / "index", threads=2))
    users = esci_users(cfg, xq, qrels)
    eligible = np.ones(len(xb), dtype=bool)
    rows = run_quality(
        cfg,
        "esci",
        result.version_dir,
        xb,
        eligible,
        product_ids,
        lambda k: users,
        cfg.esci_ks,
        None,
    )
    m = result.manifest
    for r in rows:
        r.update(
            {"index_key": m.index.factory, "nprobe": m.search.nprobe, "k_factor": m.search.k_factor}
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    d = InterestsBenchConfig
    p.add_argument("--ads", type=int, default=d.n_ads, help="sample ads (default: %(default)s)")
    p.add_argument(
        "--users", type=int, default=d.n_users, help="sample users (default: %(default)s)"
    )
    p.add_argument(
        "--latency-calls",
        type=int,
        default=d.latency_calls,
        help="timed calls per setting (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, default=d.out, help="JSON lines (default: %(default)s)")
    p.add_argument(
        "--esci-dir", type=Path, default=d.esci_dir, help="ESCI subset (default: %(default)s)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = InterestsBenchConfig(
        n_ads=args.ads,
        n_users=args.users,
        latency_calls=args.latency_calls,
        out=args.out,
        esci_dir=args.esci_dir,
        command=command(argv, module="benchmarks.interests"),
    )
    rows = run(cfg)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    with cfg.out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"{len(rows)} rows written to {cfg.out}; docs/interests.md's tables: make docs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
