"""Several interests, engaged pins and context pins through the real server.

The catalog has 40 well-separated topics (seeded synthetic vectors, d = 32), and pins are drawn
around the same topic centres, so "a user with two interests" is two known topics. Quality is
recall against exact search (``indexer.ann.exact_search``), per interest.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from indexer.ann import exact_search, normalize
from indexer.build import BuildConfig, BuildResult, build
from indexer.catalog import write_catalog_jsonl
from indexer.records import AdRecord, Targeting
from retrieval import cli
from retrieval.client import RetrievalClient, engaged_pin
from retrieval.interests import InterestConfig, quotas
from retrieval.server import RunningServer, ServerConfig, create_server
from support import HashEmbedder, ServerProcess

N, D, TOPICS = 6000, 32, 40
PINS_PER_TOPIC = 5
K = 40
RARE = "IS"  # targeted by only 30 ads


class World:
    """The catalog and pins: topic centres, ad vectors and topics, pin vectors and topics."""

    def __init__(self, root: Path):
        rng = np.random.default_rng(1338)
        self.centres = normalize(rng.standard_normal((TOPICS, D)).astype(np.float32))
        self.topic = rng.integers(0, TOPICS, N)
        self.xb = normalize(self.centres[self.topic] + 0.35 * rng.standard_normal((N, D)))
        self.records = [
            AdRecord(
                ad_id=f"ad-{i:05d}",
                advertiser_id=f"adv-{i % 150:03d}",
                campaign_id=f"cmp-{i % 450:03d}",
                targeting=Targeting(countries=(RARE,)) if i % 200 == 7 else Targeting(),
                status="paused" if i % 25 == 3 else "active",
            )
            for i in range(N)
        ]
        write_catalog_jsonl(self.records, root / "ads.jsonl", embeddings=self.xb)
        self.pin_topic = np.repeat(np.arange(TOPICS), PINS_PER_TOPIC)
        self.xp = normalize(
            self.centres[self.pin_topic] + 0.12 * rng.standard_normal((len(self.pin_topic), D))
        )
        with (root / "pins.jsonl").open("w") as f:
            for j, x in enumerate(self.xp):
                f.write(json.dumps({"pin_id": self.pin_id(j), "embedding": x.tolist()}) + "\n")
        self.active = np.array([r.status == "active" for r in self.records])
        self.row = {r.ad_id: i for i, r in enumerate(self.records)}

    @staticmethod
    def pin_id(j: int) -> str:
        return f"pin-{j:04d}"

    def pins_of(self, topic: int) -> list[str]:
        return [self.pin_id(int(j)) for j in np.flatnonzero(self.pin_topic == topic)]

    def truth(self, xq: np.ndarray, k: int, eligible: np.ndarray | None = None) -> set[int]:
        mask = self.active if eligible is None else self.active & eligible
        return set(
            exact_search(self.xb, normalize(xq.reshape(1, -1)), k, eligible=mask)[1][0].tolist()
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, BuildResult]:
    root = tmp_path_factory.mktemp("interests")
    w = World(root)
    result = build(
        BuildConfig(
            catalog=root / "ads.jsonl",
            out=root / "index",
            pins=root / "pins.jsonl",
            index_factory="IVF64,PQ16x4fs,RFlat",
            nprobe=32,
            k_factor=8,
            threads=1,
            recall_k=K,
            allow_below_target=True,  # a fixed point: the tests measure recall themselves
        )
    )
    return w, result


@pytest.fixture(scope="module")
def client(world: tuple[World, BuildResult]) -> Iterator[RetrievalClient]:
    running: RunningServer = create_server(
        ServerConfig(port=0, index=world[1].version_dir.parent, exact_max_rows=500),
        embedder=HashEmbedder(),  # the server's model for context pin text (32-d)
    )
    with RetrievalClient(f"127.0.0.1:{running.port}") as c:
        yield c
    running.stop()


def _rows(w: World, response: object) -> list[int]:
    return [w.row[c.ad_id] for c in response.candidates]  # type: ignore[attr-defined]


def test_several_interests_return_k_deduped_with_quotas_by_weight(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    for topics, weights in [((3, 17), (3.0, 1.0)), ((5, 9, 30), (2.0, 1.0, 1.0))]:
        xq = w.centres[list(topics)]
        response = client.retrieve_for(K, interests=xq, weights=weights)
        rows = _rows(w, response)
        assert len(rows) == K == len(set(rows))
        expected = quotas(np.array(weights), K, InterestConfig().min_share)
        assert [i.quota for i in response.interests] == expected.tolist()
        assert [i.contributed for i in response.interests] == expected.tolist()
        assert [round(i.weight, 4) for i in response.interests] == [
            round(x / sum(weights), 4) for x in weights
        ]
        for i, quota in enumerate(expected.tolist()):
            own = [r for r, c in zip(rows, response.candidates, strict=True) if c.interests[0] == i]
            assert len(own) == quota
            recall = len(set(own) & w.truth(xq[i], quota)) / quota
            assert recall >= 0.9, (topics, i, recall)


def test_overlapping_interests_are_deduped_credited_and_still_fill_k(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    rng = np.random.default_rng(4)
    xq = normalize(w.centres[[8, 8]] + 0.05 * rng.standard_normal((2, D)))
    response = client.retrieve_for(60, interests=xq)
    rows = _rows(w, response)
    assert len(rows) == 60 == len(set(rows))
    both = [c for c in response.candidates if len(c.interests) == 2]
    assert len(both) > 10  # near-identical interests find the same ads
    for c, row in zip(response.candidates, rows, strict=True):
        scores = w.xb[row] @ normalize(xq).T
        assert c.score == pytest.approx(float(scores[list(c.interests)].max()), abs=1e-4)
        assert scores[c.interests[0]] == pytest.approx(c.score, abs=1e-4)  # best first
    # Both interests together: their union's exact top 60 is what a good merge returns.
    truth = w.truth(xq[0], 30) | w.truth(xq[1], 30)
    assert len(set(rows) & truth) / len(truth) >= 0.9


def test_one_interest_equals_the_single_embedding_call(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    rng = np.random.default_rng(7)
    filters: list[dict[str, object]] = [
        {},
        {"max_per_advertiser": 1},
        {"country": RARE},
        {"exclude_advertiser_ids": ["adv-001", "adv-002"], "max_per_advertiser": 2},
    ]
    for q in range(12):
        x = w.xb[q * 97] + 0.3 * rng.standard_normal(D).astype(np.float32)
        flt = filters[q % len(filters)]
        single = client.retrieve(x, K, **flt)  # type: ignore[arg-type]
        multi = client.retrieve_for(K, interests=[x], weights=[5.0], **flt)  # type: ignore[arg-type]
        assert [c.ad_id for c in multi.candidates] == [c.ad_id for c in single.candidates]
        assert [c.score for c in multi.candidates] == [c.score for c in single.candidates]
        assert (multi.plan, multi.nprobe) == (single.plan, single.nprobe)
        assert [list(c.interests) for c in multi.candidates] == [[0]] * len(single.candidates)


def test_cap_and_filters_hold_across_interests(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    xq = w.centres[[1, 2, 3]]
    excluded_ads = [w.records[i].ad_id for i in range(0, 300, 3)]
    response = client.retrieve_for(
        K,
        interests=xq,
        max_per_advertiser=1,
        exclude_ad_ids=excluded_ads,
        exclude_advertiser_ids=["adv-004"],
        device="mobile",
    )
    rows = _rows(w, response)
    assert len(rows) == K == len(set(rows))
    advertisers = Counter(c.advertiser_id for c in response.candidates)
    assert max(advertisers.values()) == 1 and "adv-004" not in advertisers
    assert not set(excluded_ads) & {c.ad_id for c in response.candidates}
    assert all(w.active[r] for r in rows)
    # A targeting filter and an exclusion: per interest, recall against exact search over
    # the eligible ads only.
    keep = np.array([r.targeting.admits(RARE) and r.advertiser_id != "adv-007" for r in w.records])
    response = client.retrieve_for(
        K, interests=xq, country=RARE, exclude_advertiser_ids=["adv-007"]
    )
    rows = _rows(w, response)
    assert len(rows) == K and all(keep[r] and w.active[r] for r in rows)
    for i, interest in enumerate(response.interests):
        own = [r for r, c in zip(rows, response.candidates, strict=True) if c.interests[0] == i]
        assert len(own) == interest.quota
        truth = w.truth(xq[i], interest.quota, eligible=keep)
        assert len(set(own) & truth) / len(truth) >= 0.9


def test_small_eligible_set_returns_every_eligible_ad(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    keep = w.active & np.array([r.advertiser_id == "adv-010" for r in w.records])
    assert 0 < keep.sum() < 50
    others = sorted({r.advertiser_id for r in w.records} - {"adv-010"})
    response = client.retrieve_for(50, interests=w.centres[[0, 1]], exclude_advertiser_ids=others)
    assert sorted(_rows(w, response)) == np.flatnonzero(keep).tolist()


def test_engaged_pins_are_resolved_clustered_and_unknown_ids_reported(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    a, b = w.pins_of(11), w.pins_of(25)[:3]
    response = client.retrieve_for(K, engaged_pins=[a[0], "nope", *b, *a[1:], "gone"])
    assert list(response.unknown_pin_ids) == ["nope", "gone"]
    assert [sorted(i.pin_ids) for i in response.interests] == [sorted(a), sorted(b)]
    assert [round(i.weight, 3) for i in response.interests] == [0.625, 0.375]  # by size
    rows = _rows(w, response)
    assert len(rows) == K == len(set(rows))
    for i, topic in enumerate((11, 25)):
        own = [r for r, c in zip(rows, response.candidates, strict=True) if c.interests[0] == i]
        # The interest searched with its pins' mean (InterestConfig.pin_vector).
        pins = [int(p.removeprefix("pin-")) for p in response.interests[i].pin_ids]
        mean = w.xp[pins].mean(axis=0)
        assert len(set(own) & w.truth(mean, len(own))) / len(own) >= 0.9
        assert Counter(w.topic[own].tolist()).most_common(1)[0][0] == topic


def test_engaged_pins_recency_weights_and_max_interests(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    day = 86_400
    old = [engaged_pin(p, 1_000 * day) for p in w.pins_of(4)]
    new = [engaged_pin(p, 1_060 * day, weight=1.0) for p in w.pins_of(6)]
    response = client.retrieve_for(K, engaged_pins=[*old, *new], recency_half_life_s=30 * day)
    weights = {sorted(i.pin_ids)[0]: i.weight for i in response.interests}
    assert weights[w.pins_of(6)[0]] == pytest.approx(0.8, abs=1e-4)  # 1 : 2^-2
    assert weights[w.pins_of(4)[0]] == pytest.approx(0.2, abs=1e-4)
    one = client.retrieve_for(K, engaged_pins=[*old, *new], max_interests=1)
    assert len(one.interests) == 1 and sorted(one.interests[0].pin_ids) == sorted(w.pins_of(6))
    # The same pin engaged twice adds up: it outweighs a cluster of two others.
    twice = client.retrieve_for(K, engaged_pins=[w.pins_of(9)[0]] * 3 + w.pins_of(30)[:2])
    assert list(twice.interests[0].pin_ids) == [w.pins_of(9)[0]]
    assert twice.interests[0].weight == pytest.approx(0.6, abs=1e-4)


def test_context_pin_by_id_and_by_text(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    by_id = client.retrieve_for(K, context_pin_id=w.pin_id(17), country="US")
    direct = client.retrieve(w.xp[17], K, country="US")
    assert [c.ad_id for c in by_id.candidates] == [c.ad_id for c in direct.candidates]
    assert len(by_id.candidates) == K and not by_id.interests
    text = "w1 w2 w3 autumn"
    by_text = client.retrieve_for(K, context_pin_text=text, max_per_advertiser=1)
    direct = client.retrieve(HashEmbedder().encode([text])[0], K, max_per_advertiser=1)
    assert [c.ad_id for c in by_text.candidates] == [c.ad_id for c in direct.candidates]


def test_index_info_reports_pins_and_limits(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    info = client.info()
    assert info.pin_count == TOPICS * PINS_PER_TOPIC
    assert (info.max_interests, info.max_engaged_pins) == (8, 500)


def _status(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), info.value.details() or ""


def test_bad_requests_name_the_field(
    world: tuple[World, BuildResult], client: RetrievalClient
) -> None:
    w, _ = world
    x = w.centres[0]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases = [
        (lambda: client.retrieve_for(K, interests=[x, x], weights=[1.0, 0.0]), "interests[1].weight: must be > 0"),
        (lambda: client.retrieve_for(K, interests=[x, x], weights=[1.0, float("nan")]), "interests[1].weight: must be > 0"),
        (lambda: client.retrieve_for(K, interests=[x, x[:5]]), "interests[1].embedding: has 5 values, the index dimension is 32"),
        (lambda: client.retrieve_for(K, interests=[x, 0 * x]), "interests[1].embedding: is the zero vector"),
        (lambda: client.retrieve_for(K, interests=[x] * 9), "interests: at most 8 per request, got 9"),
        (lambda: client.retrieve_for(K, engaged_pins=["p"] * 501), "engaged_pins: at most 500 per request, got 501"),
        (lambda: client.retrieve_for(K, engaged_pins=["pin-0001", " "]), "engaged_pins[1].pin_id: must not be empty"),
        (lambda: client.retrieve_for(K, engaged_pins=[engaged_pin("pin-0001", -5)]), "engaged_pins[0].engaged_at_unix_s: must be >= 0"),
        (lambda: client.retrieve_for(K, engaged_pins=[engaged_pin("pin-0001", weight=-1)]), "engaged_pins[0].weight: must be > 0"),
        (lambda: client.retrieve_for(K, engaged_pins=["pin-0001"], max_interests=9), "max_interests: must be in [0, 8]"),
        (lambda: client.retrieve_for(K, interests=[x], max_interests=2), "max_interests: only applies to a request with engaged_pins"),
        (lambda: client.retrieve_for(K, interests=[x], engaged_pins=["pin-0001"]), "engaged_pins: send one of user_embedding, interests, engaged_pins or context_pin"),
        (lambda: client.retrieve_for(K, context_pin_id="pin-0001", context_pin_text="hi"), "context_pin: set exactly one of pin_id and text"),
        (lambda: client.retrieve_for(0, interests=[x]), "k: must be in [1, 1000], got 0"),
        (lambda: client.retrieve_for(K, interests=[x], country="USA"), "context.country"),
    ]  # fmt: skip
    for call, message in cases:
        code, details = _status(call)
        assert (code, details[: len(message)]) == (invalid, message)
    code, details = _status(lambda: client.retrieve_for(K, engaged_pins=["nope", "gone"]))
    assert code == grpc.StatusCode.NOT_FOUND and "none of the 2 pin id(s)" in details
    assert "'nope', 'gone'" in details
    code, details = _status(lambda: client.retrieve_for(K, context_pin_id="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("context_pin.pin_id: 'nope'")


def test_a_version_without_pins_answers_pin_requests_failed_precondition(
    built_index: BuildResult,
) -> None:
    running = create_server(ServerConfig(port=0, index=built_index.version_dir.parent))
    try:
        with RetrievalClient(f"127.0.0.1:{running.port}") as c:
            code, details = _status(lambda: c.retrieve_for(5, engaged_pins=["p1"]))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "has no pin table" in details
            assert c.info().pin_count == 0
            # Interests need no pins.
            xq = np.eye(D, dtype=np.float32)[:2]
            assert len(c.retrieve_for(5, interests=xq).candidates) == 5
    finally:
        running.stop()


def test_cli_retrieves_by_pins_interests_file_and_context_pin(
    world: tuple[World, BuildResult],
    client: RetrievalClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    w, _ = world
    target = client.target
    pins = ",".join([*w.pins_of(3)[:2], f"{w.pins_of(3)[2]}@1700000000", "nope"])
    assert cli.main(["retrieve", "--server", target, "--pins", pins, "--k", "7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["candidates"]) == 7 and out["unknown_pin_ids"] == ["nope"]
    assert sorted(out["interests"][0]["pin_ids"]) == w.pins_of(3)[:3]
    interests = [
        {"embedding": w.centres[1].tolist(), "weight": 3},
        {"embedding": w.centres[2].tolist()},
    ]
    (tmp_path / "interests.json").write_text(json.dumps(interests))
    argv = ["retrieve", "--server", target, "--interests-file", str(tmp_path / "interests.json")]
    assert cli.main([*argv, "--k", "20"]) == 0
    text = capsys.readouterr().out
    assert "interest 0: weight 0.75, 15 of quota 15" in text
    assert "interest 1: weight 0.25, 5 of quota 5" in text
    assert cli.main(["retrieve", "--server", target, "--pin", w.pin_id(0), "--json"]) == 0
    expected = [c.ad_id for c in client.retrieve(w.xp[0], 10).candidates]
    assert [c["ad_id"] for c in json.loads(capsys.readouterr().out)["candidates"]] == expected


def test_serve_flags_set_the_request_limits(
    world: tuple[World, BuildResult], serve_process: Callable[..., ServerProcess]
) -> None:
    w, result = world
    server = serve_process(
        result.version_dir.parent, "--max-interests", "2", "--pin-interests", "1"
    )
    with RetrievalClient(f"127.0.0.1:{server.port}") as c:
        assert c.info().max_interests == 2
        code, details = _status(lambda: c.retrieve_for(5, interests=w.centres[:3]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == "interests: at most 2 per request, got 3"
        pins = w.pins_of(1) + w.pins_of(2)
        assert len(c.retrieve_for(5, engaged_pins=pins).interests) == 1  # --pin-interests
        assert len(c.retrieve_for(5, engaged_pins=pins, max_interests=2).interests) == 2
