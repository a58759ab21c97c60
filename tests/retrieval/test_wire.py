"""Retrieve responses concatenated from pre-serialised candidates (retrieval/wire.py) are the
same bytes as the message built candidate by candidate, through the real server too."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.artifact import AdMeta, load
from indexer.build import BuildConfig, BuildResult, build
from indexer.records import Targeting
from retrieval.client import RetrievalClient
from retrieval.eligibility import RequestFilter
from retrieval.interest_requests import InterestRetrieval
from retrieval.searcher import Hits, Searcher
from retrieval.server import ServerConfig, create_server
from retrieval.service import response_bytes, response_message
from retrieval.v1 import retrieval_pb2
from retrieval.wire import MAX_HEAD_BYTES, CandidateTable, scalar_fields, varint


def _ad(ad_id: str, advertiser_id: str = "adv-1", campaign_id: str = "cmp-1") -> AdMeta:
    return AdMeta(ad_id, advertiser_id, campaign_id, "active", Targeting(), "a title")


def _message(ads: list[AdMeta], ids: list[int], scores: list[float], shard: int) -> bytes:
    response = retrieval_pb2.RetrieveResponse()
    for i, score in zip(ids, scores, strict=True):
        a = ads[i]
        response.candidates.add(
            ad_id=a.ad_id,
            advertiser_id=a.advertiser_id,
            campaign_id=a.campaign_id,
            score=score,
            shard=shard,
        )
    return response.SerializeToString()


@pytest.mark.parametrize("shard", [0, 1, 300])
def test_table_bytes_equal_the_message_bytes(shard: int) -> None:
    rng = np.random.default_rng(3)
    ads = [
        _ad("1"),
        _ad("ad-" + "x" * 150, "adv-é漢字", ""),  # a long id (2-byte length), UTF-8, an empty id
        *(_ad(f"ad-{i}", f"adv-{i % 7}", f"cmp-{i % 13}") for i in range(200)),
    ]
    table = CandidateTable(ads, shard)
    for m in (1, 2, 100):
        ids = rng.choice(len(ads), m, replace=False).astype(np.int64)
        scores = rng.uniform(-1, 1, m).astype(np.float32)
        scores[0] = -0.0  # negative zero is not omitted by protobuf either
        got = table.encode(ids, scores)
        assert got == _message(ads, ids.tolist(), scores.tolist(), shard)
        parsed = retrieval_pb2.RetrieveResponse.FromString(got or b"")
        assert [c.ad_id for c in parsed.candidates] == [ads[i].ad_id for i in ids]
        np.testing.assert_array_equal([c.score for c in parsed.candidates], scores)
    assert table.encode(np.zeros(0, np.int64), np.zeros(0, np.float32)) == b""


def test_what_the_table_cannot_express_goes_to_the_message_path() -> None:
    ads = [_ad("a"), _ad("b" * MAX_HEAD_BYTES), _ad("c")]
    table = CandidateTable(ads, 0)
    ok = np.array([0.5, 0.25], np.float32)
    assert table.encode(np.array([0, 2]), ok) is not None
    assert table.encode(np.array([0, 1]), ok) is None  # too long for the table
    assert table.encode(np.array([0, 3]), ok) is None  # an upserted ad (row >= ntotal)
    assert table.encode(np.array([0, 2]), np.array([0.5, 0.0], np.float32)) is None  # omitted 0


def test_scalar_fields_equal_the_message_bytes() -> None:
    cases: list[dict[str, Any]] = [
        {"index_version": "v1", "nprobe": 300, "plan": "ivf", "k_factor": 4},
        {"index_version": "v2", "nprobe": 0, "plan": "exact"},
        {
            "index_version": "v3",
            "nprobe": 8,
            "plan": "ivf",
            "shards_answered": [2],
            "shard_count": 3,
            "k_factor": 200,
        },
    ]
    for fields in cases:
        expected = retrieval_pb2.RetrieveResponse(**fields).SerializeToString()
        assert scalar_fields(**fields) == expected
    assert varint(300) == b"\xac\x02" and varint(-1) == b"\xff" * 9 + b"\x01"


def test_served_hits_answer_the_same_bytes(built_index: BuildResult) -> None:
    """Real searches, unfiltered, filtered, capped and exact, on a real version and a shard-like
    one: response_bytes is the serialised response_message."""
    searcher = Searcher(load(built_index.version_dir))
    rng = np.random.default_rng(5)
    xq = rng.standard_normal((20, searcher.dimension)).astype(np.float32)
    filters = [
        RequestFilter(),
        RequestFilter(country="US"),
        RequestFilter(max_per_advertiser=1),
        RequestFilter(exclude_advertiser_ids=frozenset({"adv-001"})),
    ]
    plans = set()
    for i, q in enumerate(xq):
        hits: Hits = searcher.search(q, 1 + 7 * i, 0, filters[i % len(filters)])
        plans.add(hits.plan)
        assert (
            response_bytes(searcher, hits) == response_message(searcher, hits).SerializeToString()
        )
    assert plans == {"ivf", "exact"}


def test_upserted_ads_and_the_table_through_the_server(
    built_index: BuildResult, tmp_path: Path
) -> None:
    """Through gRPC: answers equal the message built from the same search, with and without
    an upserted ad among the candidates (the message path)."""
    shutil.copytree(built_index.version_dir.parent, tmp_path / "index", symlinks=True)
    running = create_server(ServerConfig(port=0, index=tmp_path / "index"))
    try:
        searcher = running.state.current()
        q = searcher.artifact.embeddings[11].copy()
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            served = client.retrieve(q, 20)
            expected = response_message(searcher, searcher.search(q, 20))
            assert (
                served == expected and served.candidates[0].ad_id == searcher.artifact.ads[11].ad_id
            )
            ad = retrieval_pb2.Ad(
                ad_id="upserted-1",
                advertiser_id="adv-new",
                campaign_id="cmp-new",
                title="new",
                embedding=q.tolist(),
            )
            client.upsert([ad])
            served = client.retrieve(q, 20)
        assert "upserted-1" in [c.ad_id for c in served.candidates[:2]]  # tied with ad 11
        assert served == response_message(searcher, searcher.search(q, 20))
    finally:
        running.stop()


def test_a_leaf_answers_the_same_bytes_with_its_shard_fields(
    vector_catalog: tuple[Path, Any, np.ndarray], tmp_path: Path
) -> None:
    """Shard 1 of a 3-shard build through gRPC: every candidate's ``shard`` and the response's
    ``shards_answered``/``shard_count`` come out of the table path as the message has them."""
    path, _, xb = vector_catalog
    config = BuildConfig(
        catalog=path,
        out=tmp_path / "index",
        index_factory="IVF16,Flat",
        nprobe=4,
        threads=1,
        shards=3,
        allow_below_target=True,  # a fixed point: this test is about bytes, not the gate
    )
    build(config)
    running = create_server(ServerConfig(port=0, index=tmp_path / "index", shard=1))
    try:
        searcher = running.state.current()
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            for i in range(5):
                q = xb[i * 31].copy()
                served = client.retrieve(q, 10)
                hits = searcher.search(q, 10)
                assert searcher.candidates.encode(hits.ids, hits.scores) is not None
                assert served == response_message(searcher, hits)
        assert list(served.shards_answered) == [1] and served.shard_count == 3
        assert {c.shard for c in served.candidates} == {1}
    finally:
        running.stop()


def test_interest_requests_take_the_message_path_through_the_server(
    built_index: BuildResult, tmp_path: Path
) -> None:
    """Several interests (each candidate's ``interests``, the response's ``interests``): the
    server sends the message InterestRetrieval builds, serialised as it is."""
    shutil.copytree(built_index.version_dir.parent, tmp_path / "index", symlinks=True)
    running = create_server(ServerConfig(port=0, index=tmp_path / "index"))
    try:
        searcher = running.state.current()
        xq = searcher.artifact.embeddings[[3, 400]].copy()
        request = retrieval_pb2.RetrieveRequest(k=20)
        for x, w in zip(xq, (2.0, 1.0), strict=True):
            request.interests.add(embedding=x.tolist(), weight=w)
        expected = InterestRetrieval(running.state).retrieve(request, "interests")
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            served = client.retrieve_for(20, interests=xq, weights=[2.0, 1.0])
        assert served == expected
        assert len(served.interests) == 2 and all(c.interests for c in served.candidates)
    finally:
        running.stop()
