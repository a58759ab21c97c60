"""The build's recall estimate against what real queries get from the real server.

Default builds (default held-out queries, default operating point) of real all-MiniLM-L6-v2
catalogs; the real queries are then sent through a real gRPC server at the published default:
the estimate must not be above their recall@100 by more than 0.01, and the interval the
manifest reports must contain it (docs/index-parameters.md, section 3.1).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer import artifact
from indexer.ann import exact_search, recall_per_query
from indexer.build import BuildConfig, BuildResult, build
from indexer.catalog import write_catalog_jsonl
from indexer.embedding import SentenceTransformerEmbedder
from indexer.records import AdRecord
from indexer.sample import generate_users, write_sample
from retrieval.client import RetrievalClient
from retrieval.demo import user_embedding
from retrieval.server import RunningServer, ServerConfig, create_server

pytestmark = pytest.mark.slow

N_ADS = 2000  # 32 lists: enough for the curve to have a choice, a minute of embedding
N_USERS = 300
K = 100
# shared/data beside the repository (CI's layout); ADINDEX_SHARED_DATA overrides it.
SHARED_DATA = Path(
    os.environ.get("ADINDEX_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
ESCI = SHARED_DATA / "esci_us_subset500"


@pytest.fixture(scope="module")
def sample_build(
    real_embedder: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> BuildResult:
    root = tmp_path_factory.mktemp("estimate-sample")
    catalog, _ = write_sample(root / "sample", n_ads=N_ADS, n_users=1)
    return build(
        BuildConfig(catalog=catalog, out=root / "index", threads=2), embedder=real_embedder
    )


@pytest.fixture(scope="module")
def esci_build(
    real_embedder: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BuildResult, np.ndarray]:
    """ESCI products as ads (their title embedded by the build), its queries embedded."""
    if not all((ESCI / f).is_file() for f in ("products.csv", "queries.csv")):
        pytest.skip(f"ESCI data not found at {ESCI} (set ADINDEX_SHARED_DATA)")
    with (ESCI / "products.csv").open(encoding="utf-8", newline="") as f:
        products = list(csv.DictReader(f))
    with (ESCI / "queries.csv").open(encoding="utf-8", newline="") as f:
        queries = [row["query"] for row in csv.DictReader(f)]
    records = [
        AdRecord(
            ad_id=p["product_id"],
            advertiser_id=f"adv-{i % 50}",
            campaign_id=f"cmp-{i % 100}",
            title=p["product_title_trunc200"],
        )
        for i, p in enumerate(products)
    ]
    root = tmp_path_factory.mktemp("estimate-esci")
    write_catalog_jsonl(records, root / "ads.jsonl")
    result = build(
        BuildConfig(catalog=root / "ads.jsonl", out=root / "index", threads=2),
        embedder=real_embedder,
    )
    return result, real_embedder.encode(queries)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[RunningServer]]:
    started: list[RunningServer] = []
    yield started
    for server in started:
        server.stop()


def served_recall(result: BuildResult, xq: np.ndarray, started: list[RunningServer]) -> float:
    """Recall@K of xq through a real server at the version's default operating point, against
    exact search over the ads it may serve (active ones)."""
    server = create_server(ServerConfig(port=0, index=result.version_dir.parent))
    started.append(server)
    art = artifact.load(result.version_dir)
    eligible = np.array([a.status == "active" for a in art.ads])
    truth = exact_search(art.exact_embeddings(), xq, K, eligible=eligible)[1]
    row = {a.ad_id: i for i, a in enumerate(art.ads)}
    with RetrievalClient(f"127.0.0.1:{server.port}") as client:
        found = [[row[c.ad_id] for c in client.retrieve(q, K).candidates] for q in xq]
    return float(recall_per_query(found, truth).mean())


def check_estimate(result: BuildResult, served: float) -> None:
    q = result.manifest.quality
    assert q is not None and q.reached and q.interval is not None
    c = q.chosen
    print(f"estimate {c.recall} [{c.recall_low}, {c.recall_high}] at nprobe {c.nprobe}, "
          f"k_factor {c.k_factor}; served {served:.4f}")  # fmt: skip
    assert c.recall_low is not None and c.recall_high is not None
    assert c.recall_low >= q.target_recall, "the gate reads the interval's lower end"
    assert c.recall - served <= 0.01, (c, served)
    assert c.recall_low <= served <= c.recall_high, (c, served)


def test_sample_estimate_holds_for_pin_based_users(
    sample_build: BuildResult,
    real_embedder: SentenceTransformerEmbedder,
    servers: list[RunningServer],
) -> None:
    xq = np.stack([user_embedding(real_embedder, u) for u in generate_users(N_USERS)])
    check_estimate(sample_build, served_recall(sample_build, xq, servers))


def test_esci_estimate_holds_for_real_shopping_queries(
    esci_build: tuple[BuildResult, np.ndarray], servers: list[RunningServer]
) -> None:
    result, xq = esci_build
    check_estimate(result, served_recall(result, xq, servers))
