"""Sharded serving through real processes on loopback: 3 leaves (``adindex serve --shard I``)
and a root (``adindex root``), compared with one unsharded server built with the same
parameters. The processes are started once for the module; the tests run in file order and
each leaves the cluster as it found it (the last one publishes a new version)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from indexer import artifact
from indexer.ann import exact_search, normalize, recall_at_k
from indexer.build import BuildConfig, build
from indexer.catalog import write_catalog_jsonl
from indexer.manifest import Manifest
from indexer.records import AdRecord, Targeting
from indexer.shards import shard_of
from retrieval.changelog import changelog_file
from retrieval.client import RetrievalClient, ad_message
from retrieval.controller import ControllerConfig
from retrieval.server import RunningServer, ServerConfig, create_server
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from support import RootProcess, ServerProcess, clustered_vectors, metric_value, scrape_metrics

N = 20_000
SHARDS = 3
K = 100
NQ = 200
COUNTRIES = {"US": 0.5, "JP": 0.01, "GB": 0.49}  # one country per ad: JP is a 1% filter
# Leaves check LATEST often and release a switched-from version after 1 s (5 s by default).
# The recall controller would move each server's default point on its own samples: the
# comparison with one unsharded index holds the build's point everywhere.
WATCH = ("--watch-interval-s", "0.2", "--release-after-s", "1", "--recall-control", "off")
Healths = Iterator[health_pb2.HealthCheckResponse]


def _records(prefix: str = "ad") -> list[AdRecord]:
    rng = np.random.default_rng(3)
    drawn = rng.choice(len(COUNTRIES), size=N, p=list(COUNTRIES.values()))
    names = list(COUNTRIES)
    return [
        AdRecord(
            ad_id=f"{prefix}-{i:05d}",
            advertiser_id=f"adv-{i % 300:03d}",
            campaign_id=f"cmp-{i % 900:03d}",
            title=f"ad {i}",
            targeting=Targeting(countries=(names[c],)),
            status="paused" if i % 20 == 3 else "active",
        )
        for i, c in enumerate(drawn)
    ]


def _build(catalog: Path, out: Path, shards: int | None = None) -> str:
    """The same parameters sharded or not; returns the version published."""
    config = BuildConfig(
        catalog=catalog,
        out=out,
        shards=shards,
        index_factory="IVF64,PQ16x4fs,Refine(SQfp16)",  # the default stage
        nprobe=16,
        # One index and each shard re-rank enough to reach the probed lists' own recall; at a
        # shallow k_factor the shards, re-ranking 3x as many candidates in all, score higher.
        k_factor=16,
        threads=1,
        eval_budget_s=5.0,
        allow_below_target=True,  # these tests compare serving paths, not the build's gate
    )
    return build(config).version_dir.name


@dataclass
class Data:
    records: list[AdRecord]
    xb: np.ndarray
    xq: np.ndarray
    root: Path  # sharded artifact root
    one: Path  # unsharded artifact root
    tmp: Path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    tmp = tmp_path_factory.mktemp("sharded")
    records = _records()
    xb = clustered_vectors(N, n_clusters=200)
    write_catalog_jsonl(records, tmp / "ads.jsonl", embeddings=xb)
    _build(tmp / "ads.jsonl", tmp / "one")
    _build(tmp / "ads.jsonl", tmp / "sharded", SHARDS)
    rng = np.random.default_rng(11)
    noise = 0.25 * rng.standard_normal((NQ, xb.shape[1]))
    xq = normalize(xb[rng.choice(N, NQ, replace=False)] + noise)
    return Data(records, xb, xq, tmp / "sharded", tmp / "one", tmp)


@dataclass
class Cluster:
    data: Data
    leaves: list[ServerProcess]
    root: RootProcess
    ports: list[int] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.root.port}"

    def restart(self, shard: int) -> None:
        """Start shard ``shard`` again on its old port (the root's --leaves name it)."""
        self.leaves[shard].close()
        self.leaves[shard] = ServerProcess(
            self.data.root, "--shard", str(shard), "--port", str(self.ports[shard]), *WATCH
        )

    def root_metric(self, name: str, **labels: str) -> float:
        assert self.root.metrics_port is not None
        return metric_value(scrape_metrics(self.root.metrics_port), name, **labels)

    def leaf_status(self, shard: int) -> retrieval_pb2.LeafStatus:
        with grpc.insecure_channel(f"127.0.0.1:{self.ports[shard]}") as channel:
            stub = retrieval_pb2_grpc.LeafServiceStub(channel)  # type: ignore[no-untyped-call]
            status: retrieval_pb2.LeafStatus = stub.GetLeafStatus(
                retrieval_pb2.LeafStatusRequest(), timeout=5
            )
            return status


@pytest.fixture(scope="module")
def cluster(data: Data) -> Iterator[Cluster]:
    leaves = [ServerProcess(data.root, "--shard", str(s), *WATCH) for s in range(SHARDS)]
    try:
        ports = [leaf.port for leaf in leaves]
        root = RootProcess(ports, "--poll-interval-s", "0.2", "--metrics-port", "0")
    except BaseException:
        for leaf in leaves:
            leaf.close()
        raise
    c = Cluster(data, leaves, root, ports)
    yield c
    root.close()
    for leaf in c.leaves:
        leaf.close()


@pytest.fixture(scope="module")
def one(data: Data) -> Iterator[RunningServer]:
    running = create_server(
        ServerConfig(port=0, index=data.one, recall_control=ControllerConfig(enabled=False))
    )
    yield running
    running.stop()


def _wait_until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    """Poll a condition that no event signals (another process's state)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"


def _rows(response: retrieval_pb2.RetrieveResponse) -> list[int]:
    return [int(c.ad_id.rsplit("-", 1)[1]) for c in response.candidates]


def _capped_truth(data: Data, eligible: np.ndarray, k: int, cap: int) -> np.ndarray:
    """Exact top k with at most ``cap`` ads per advertiser, greedily in score order."""
    _, deep = exact_search(data.xb, data.xq, 20 * k, eligible=eligible)
    out = np.full((len(deep), k), -1, dtype=np.int64)
    for q, rows in enumerate(deep):
        taken: dict[str, int] = {}
        kept = []
        for row in rows.tolist():
            advertiser = data.records[row].advertiser_id
            if row >= 0 and taken.get(advertiser, 0) < cap:
                taken[advertiser] = taken.get(advertiser, 0) + 1
                kept.append(row)
                if len(kept) == k:
                    break
        out[q, : len(kept)] = kept
    return out


CASES: dict[str, dict[str, Any]] = {
    "unfiltered": {},
    "country JP (1%)": {"country": "JP"},
    "max 2 per advertiser": {"max_per_advertiser": 2},
}


@pytest.mark.parametrize("case", CASES)
def test_root_answers_as_one_index_would(
    cluster: Cluster, one: RunningServer, data: Data, case: str
) -> None:
    kwargs: dict[str, Any] = CASES[case]
    eligible = np.array(
        [
            r.status == "active" and r.targeting.admits(country=kwargs.get("country", ""))
            for r in data.records
        ]
    )
    k = min(K, int(eligible.sum()))
    if "max_per_advertiser" in kwargs:
        truth = _capped_truth(data, eligible, k, kwargs["max_per_advertiser"])
    else:
        truth = exact_search(data.xb, data.xq, k, eligible=eligible)[1]
    found: dict[str, list[list[int]]] = {"root": [], "one": []}
    for name, target in (("root", cluster.target), ("one", f"127.0.0.1:{one.port}")):
        with RetrievalClient(target) as client:
            for q in data.xq:
                response = client.retrieve(q, K, **kwargs)
                assert len(response.candidates) == k
                if name == "root":
                    assert not response.partial
                    assert list(response.shards_answered) == [0, 1, 2]
                    assert response.shard_count == SHARDS
                found[name].append(_rows(response))
    root_recall, one_recall = recall_at_k(found["root"], truth), recall_at_k(found["one"], truth)
    assert root_recall == pytest.approx(one_recall, abs=0.005), case
    assert root_recall >= 0.9  # the comparison means something
    for row in found["root"][:20]:
        assert all(eligible[r] for r in row)


def test_root_describes_the_whole_version_and_each_leaf(cluster: Cluster, data: Data) -> None:
    with RetrievalClient(cluster.target) as client:
        info = client.info()
    manifest = Manifest.loads(info.manifest_json)  # the version's, not one shard's
    assert manifest.shards is not None and manifest.shards.index is None
    assert manifest.shards.count == SHARDS and manifest.version == info.index_version
    assert info.ad_count == manifest.counts.ads == N
    assert info.active_count == sum(r.status == "active" for r in data.records)
    assert [leaf.shard for leaf in info.leaves] == list(range(SHARDS))
    assert all(
        leaf.answering and leaf.serving_version == info.index_version for leaf in info.leaves
    )
    assert [leaf.address for leaf in info.leaves] == [f"127.0.0.1:{p}" for p in cluster.ports]


def test_pause_through_the_root_is_never_returned_afterwards(cluster: Cluster, data: Data) -> None:
    with RetrievalClient(cluster.target) as client:
        first = client.retrieve(data.xq[0], K).candidates
        ads = [c.ad_id for c in first[:6]]
        campaign, advertiser = first[10].campaign_id, first[20].advertiser_id
        assert len({shard_of(a, SHARDS) for a in ads}) > 1  # the ads span shards
        response = client.pause(ad_ids=ads, campaign_ids=[campaign], advertiser_ids=[advertiser])
        assert response.ads_changed >= len(ads)
        try:
            # acknowledged: every shard's change log has it (its ads, and the groups)
            for s in range(SHARDS):
                log = data.root / changelog_file(s)
                entry = json.loads(log.read_text().splitlines()[-1])
                assert entry["op"] == "pause" and entry["campaign_ids"] == [campaign]
                assert set(entry.get("ad_ids", [])) == {a for a in ads if shard_of(a, SHARDS) == s}
            for q in data.xq:
                for kwargs in ({}, {"country": "US"}, {"max_per_advertiser": 3}):
                    for c in client.retrieve(q, K, **kwargs).candidates:
                        assert c.ad_id not in ads
                        assert c.campaign_id != campaign and c.advertiser_id != advertiser
        finally:
            client.resume(ad_ids=ads, campaign_ids=[campaign], advertiser_ids=[advertiser])
        assert [c.ad_id for c in client.retrieve(data.xq[0], K).candidates] == [
            c.ad_id for c in first
        ]


def test_admin_calls_are_routed_to_the_owner_and_checked_on_every_leaf(
    cluster: Cluster, data: Data
) -> None:
    x = normalize(data.xb[:1] + 0.05)[0]
    new = AdRecord("new-ad-7", "adv-new", "cmp-new", title="new ad", targeting=Targeting())
    owner = shard_of(new.ad_id, SHARDS)
    with RetrievalClient(cluster.target) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.pause(ad_ids=["ad-00001", "no-such-ad"])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'no-such-ad'" in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            client.pause(campaign_ids=["cmp-nowhere"])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # an ad without advertiser, on the same shard (a leaf checks its whole part first)
        bad_id = next(f"x-{i}" for i in range(100) if shard_of(f"x-{i}", SHARDS) == owner)
        bad = ad_message(AdRecord(bad_id, "", "cmp-1", title="t"), x)
        with pytest.raises(grpc.RpcError) as err:
            client.upsert([ad_message(new, x), bad])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith("ads[1].advertiser_id")  # caller's index
        assert client.upsert([ad_message(new, x)]).inserted == 1
        try:
            top = client.retrieve(x, 5).candidates[0]
            assert (top.ad_id, top.shard) == (new.ad_id, owner)
            with RetrievalClient(f"127.0.0.1:{cluster.ports[owner]}") as leaf:
                assert leaf.retrieve(x, 1).candidates[0].ad_id == new.ad_id
            # a campaign known to one shard only pauses through the root
            assert client.pause(campaign_ids=["cmp-new"]).ads_changed == 1
            assert new.ad_id not in {c.ad_id for c in client.retrieve(x, 5).candidates}
            client.resume(campaign_ids=["cmp-new"])
            other = (owner + 1) % SHARDS
            leaf_target = f"127.0.0.1:{cluster.ports[other]}"
            with RetrievalClient(leaf_target) as leaf, pytest.raises(grpc.RpcError) as err:
                leaf.upsert([ad_message(new, x)])
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"belongs to shard {owner} of {SHARDS}" in (err.value.details() or "")
        finally:
            client.delete([new.ad_id])
        assert new.ad_id not in {c.ad_id for c in client.retrieve(x, 5).candidates}


class Load:
    """Client threads calling the root until stopped; every outcome is kept."""

    def __init__(self, target: str, xq: np.ndarray, *, threads: int = 1, timeout_s: float = 2.0):
        self.responses: list[retrieval_pb2.RetrieveResponse] = []
        self.failures: list[str] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(target, xq, i, timeout_s), daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _run(self, target: str, xq: np.ndarray, offset: int, timeout_s: float) -> None:
        with RetrievalClient(target) as client:
            i = offset
            while not self._stop.is_set():
                try:
                    response = client.retrieve(xq[i % len(xq)], K, timeout_s=timeout_s)
                except grpc.RpcError as exc:
                    with self._changed:
                        self.failures.append(f"{exc.code().name}: {exc.details()}")
                        self._changed.notify_all()
                else:
                    with self._changed:
                        self.responses.append(response)
                        self._changed.notify_all()
                i += 1

    def wait_for(
        self, condition: Callable[[retrieval_pb2.RetrieveResponse], bool], count: int = 1
    ) -> None:
        """Wait until ``count`` more responses satisfy ``condition``."""
        with self._changed:
            start = len(self.responses)
            assert self._changed.wait_for(
                lambda: sum(map(condition, self.responses[start:])) >= count or self.failures,
                timeout=60,
            ), "no such response in time"

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def _health(cluster: Cluster, channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    status: int = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    return status


def test_killed_and_frozen_leaves_give_partial_answers_in_time_then_rejoin(
    cluster: Cluster, data: Data
) -> None:
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    timeout_s = 1.0
    load = Load(cluster.target, data.xq, timeout_s=timeout_s)
    channel = grpc.insecure_channel(cluster.target)
    watch: Healths = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    try:
        assert next(watch).status == serving
        cluster.leaves[1].proc.kill()  # SIGKILL
        load.wait_for(lambda r: r.partial and list(r.shards_answered) == [0, 2], count=3)
        _wait_until(lambda: cluster.root_metric("adindex_root_leaves_answering") == 2)
        assert _health(cluster, channel) == serving  # 2 of 3 is the quorum
        cluster.leaves[2].proc.send_signal(signal.SIGSTOP)  # frozen: slow, not down
        try:
            assert next(watch).status == not_serving  # 1 of 3 is below the quorum
            load.wait_for(lambda r: list(r.shards_answered) == [0], count=2)
        finally:
            cluster.leaves[2].proc.send_signal(signal.SIGCONT)
        cluster.restart(1)
        assert next(watch).status == serving
        load.wait_for(lambda r: not r.partial, count=3)
    finally:
        load.stop()
        watch.cancel()  # type: ignore[attr-defined]
        channel.close()
    assert load.failures == []  # not one call failed, none outlived its deadline
    assert all(len(r.candidates) == K for r in load.responses)
    assert cluster.root_metric("adindex_root_partial_total") >= 5
    calls = "adindex_root_leaf_calls_total"
    assert cluster.root_metric(calls, shard="1", outcome="unavailable") >= 1
    assert cluster.root_metric(calls, shard="2", outcome="deadline_exceeded") >= 1


def test_a_version_published_under_load_swaps_on_every_leaf_without_mixing(
    cluster: Cluster, data: Data
) -> None:
    before = artifact.resolve(data.root).name
    load = Load(cluster.target, data.xq, threads=2, timeout_s=5.0)
    try:
        load.wait_for(lambda r: r.index_version == before, count=5)
        # The new version's ads are the same vectors under new ids: a response mixing
        # versions would show ids of both.
        write_catalog_jsonl(_records("v2"), data.tmp / "v2.jsonl", embeddings=data.xb)
        after = _build(data.tmp / "v2.jsonl", data.root, SHARDS)
        load.wait_for(lambda r: r.index_version == after, count=20)
    finally:
        load.stop()
    assert load.failures == []
    prefix = {before: "ad-", after: "v2-"}
    versions = [r.index_version for r in load.responses]
    for r in load.responses:
        assert not r.partial and len(r.candidates) == K
        assert all(c.ad_id.startswith(prefix[r.index_version]) for c in r.candidates)
    switched = versions.index(after)
    assert set(versions[:switched]) == {before}
    # two client threads: a call pinned to the old version may finish after the first new one
    assert versions[switched:].count(before) <= 1
    for s in range(SHARDS):  # switched, and the old version released a second later
        _wait_until(
            lambda s=s: (  # type: ignore[misc]
                (status := cluster.leaf_status(s)).serving_version == after
                and list(status.loaded_versions) == [after]
            )
        )
    freed = f"Freed index {before}"
    _wait_until(lambda: all(any(freed in line for line in leaf.lines) for leaf in cluster.leaves))
