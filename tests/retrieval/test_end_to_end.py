"""The whole path with the real model: sample ads -> all-MiniLM-L6-v2 -> IVF-PQ -> gRPC."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer import artifact
from indexer.ann import exact_search, normalize, recall_at_k
from indexer.build import BuildConfig, BuildResult, build
from indexer.embedding import SentenceTransformerEmbedder
from indexer.records import AdRecord
from indexer.sample import PINS_FILE, category_of, generate_catalog, generate_users, write_sample
from retrieval.client import RetrievalClient, ad_message
from retrieval.demo import user_embedding
from retrieval.server import RunningServer, ServerConfig, create_server

pytestmark = pytest.mark.slow

N_ADS = 1200  # enough for IVF-PQ with re-ranking (the small-corpus rule starts at 1,000)
N_USERS = 40


@pytest.fixture(scope="module")
def sample_index(
    real_embedder: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> BuildResult:
    root = tmp_path_factory.mktemp("e2e")
    catalog, _ = write_sample(root / "sample", n_ads=N_ADS, n_users=N_USERS)
    pins = root / "sample" / PINS_FILE  # the users' pins, embedded with the ads' model
    return build(
        BuildConfig(catalog=catalog, out=root / "index", pins=pins, threads=2),
        embedder=real_embedder,
    )


@pytest.fixture(scope="module")
def running(sample_index: BuildResult) -> Iterator[RunningServer]:
    server = create_server(ServerConfig(port=0, index=sample_index.version_dir.parent))
    yield server
    server.stop()


def test_model_is_recorded(sample_index: BuildResult) -> None:
    m = sample_index.manifest
    assert m.model.name == "all-MiniLM-L6-v2" and m.dimension == 384 and m.model.source == "text"
    assert m.model.embedder.startswith("all-MiniLM-L6-v2/onnx-fp32/")  # the default embedder
    assert m.index.factory.endswith(",Refine(SQfp16)") and "PQ" in m.index.factory


def test_recall_and_self_retrieval_with_real_embeddings(
    running: RunningServer, sample_index: BuildResult, real_embedder: SentenceTransformerEmbedder
) -> None:
    art = artifact.load(sample_index.version_dir)
    xb = np.asarray(art.exact_embeddings())
    eligible = np.array([a.status == "active" for a in art.ads])
    users = generate_users(30)
    xq = np.stack([user_embedding(real_embedder, u) for u in users])
    truth = exact_search(xb, xq, 20, eligible=eligible)[1]
    with RetrievalClient(f"127.0.0.1:{running.port}") as client:
        row = {a.ad_id: i for i, a in enumerate(art.ads)}
        found = [[row[c.ad_id] for c in client.retrieve(q, 20).candidates] for q in xq]
        assert recall_at_k(found, truth) >= 0.9
        active_rows = np.flatnonzero(eligible)[:300]
        firsts = [client.retrieve(xb[i], 1).candidates[0].ad_id for i in active_rows]
    assert firsts == [art.ads[i].ad_id for i in active_rows]


def test_user_text_finds_ads_of_their_interest(
    running: RunningServer, real_embedder: SentenceTransformerEmbedder
) -> None:
    category = {r.ad_id: category_of(r) for r in generate_catalog(N_ADS)}
    xq = real_embedder.encode(
        ["chunky knit throw blanket and a velvet sofa for a cozy living room"]
    )[0]
    with RetrievalClient(f"127.0.0.1:{running.port}") as client:
        response = client.retrieve(xq, 10)
    assert len(response.candidates) == 10
    homey = [category[c.ad_id] in {"home decor", "furniture"} for c in response.candidates]
    assert sum(homey) >= 7, [category[c.ad_id] for c in response.candidates]


def test_upserted_text_is_embedded_by_the_server_with_the_index_model(
    sample_index: BuildResult, real_embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    # A server of its own: the upsert must not leak into the shared module server.
    root = tmp_path / "index"
    shutil.copytree(sample_index.version_dir.parent, root)
    server = create_server(ServerConfig(port=0, index=root), embedder=real_embedder)
    try:
        ad = AdRecord(
            ad_id="ad-zeppelin",
            advertiser_id="adv-sky",
            campaign_id="cmp-sky-001",
            title="Vintage airship zeppelin model kit",
            description="Build a detailed brass and canvas zeppelin for your study shelf.",
            creative_text="Take flight | Shop the kit",
        )
        with RetrievalClient(f"127.0.0.1:{server.port}") as client:
            response = client.upsert([ad_message(ad)])  # no embedding: the server embeds the text
            assert response.inserted == 1
            xq = real_embedder.encode(["zeppelin airship model kit"])[0]
            assert client.retrieve(xq, 5).candidates[0].ad_id == "ad-zeppelin"
    finally:
        server.stop()


def test_engaged_pins_find_each_interest_better_than_the_average(
    running: RunningServer, sample_index: BuildResult, real_embedder: SentenceTransformerEmbedder
) -> None:
    """Users with 2-3 interests: each interest's exact top-(k / interests) (its reference query:
    the mean of the user's pins of that category), found by the averaged embedding and by the
    engaged pins (clustered by the server). docs/interests.md measures this at scale."""
    art = artifact.load(sample_index.version_dir)
    assert art.pins is not None and art.manifest.pins is not None
    assert art.manifest.pins.model == "all-MiniLM-L6-v2" and art.manifest.pins.source == "text"
    xb, k = np.asarray(art.exact_embeddings()), 30
    eligible = np.array([a.status == "active" for a in art.ads])
    row = {a.ad_id: i for i, a in enumerate(art.ads)}
    shares: dict[str, list[float]] = {"averaged": [], "pins": []}
    with RetrievalClient(f"127.0.0.1:{running.port}") as client:
        for user in (u for u in generate_users(N_USERS) if len(u.interests) >= 2):
            xp = art.pins.embeddings[[art.pins.row_of[p.pin_id] for p in user.pins]]
            cats = [p.category for p in user.pins]
            xq = np.stack([xp[[c == i for c in cats]].mean(axis=0) for i in user.interests])
            truth = exact_search(xb, normalize(xq), k // len(xq), eligible=eligible)[1]
            answers = {
                "averaged": client.retrieve(user_embedding(real_embedder, user), k),
                "pins": client.retrieve_for(k, engaged_pins=[p.pin_id for p in user.pins]),
            }
            for name, response in answers.items():
                found = {row[c.ad_id] for c in response.candidates}
                shares[name] += [len(found & set(t.tolist())) / len(t) for t in truth]
    averaged, pins = float(np.mean(shares["averaged"])), float(np.mean(shares["pins"]))
    assert len(shares["pins"]) >= 40
    assert pins >= 0.6 and pins >= averaged + 0.05, (pins, averaged)


def test_context_pin_text_is_embedded_like_the_pin_table(
    running: RunningServer, sample_index: BuildResult
) -> None:
    pin = generate_users(1)[0].pins[0]
    with RetrievalClient(f"127.0.0.1:{running.port}") as client:
        by_id = client.retrieve_for(10, context_pin_id=pin.pin_id)
        by_text = client.retrieve_for(10, context_pin_text=pin.text())  # "title. description"
    assert [c.ad_id for c in by_text.candidates] == [c.ad_id for c in by_id.candidates]
    for a, b in zip(by_text.candidates, by_id.candidates, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-5)
