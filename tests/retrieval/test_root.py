"""The root's merge (exact relative to its leaves), what it forwards, and a leaf's versions.

The root itself runs in-process here over a fake leaf (a generic gRPC handler that records
what it received); tests/retrieval/test_sharded_serving.py runs real leaves and a real root.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from indexer import artifact
from indexer.build import BuildConfig, build
from indexer.records import AdRecord
from retrieval.root import LeafAnswer, LeafError, RootConfig, create_root, merge
from retrieval.server import RunningServer, ServerConfig, create_server
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from support import certificate

VectorCatalog = tuple[Path, list[AdRecord], np.ndarray]
Candidate = retrieval_pb2.Candidate


def _capped(ranking: list[Candidate], k: int, cap: int) -> list[Candidate]:
    """Greedy: best first, at most ``cap`` per advertiser (0: no cap), k in all."""
    taken: dict[str, int] = {}
    out = []
    for c in ranking:
        if cap and taken.get(c.advertiser_id, 0) >= cap:
            continue
        taken[c.advertiser_id] = taken.get(c.advertiser_id, 0) + 1
        out.append(c)
        if len(out) == k:
            break
    return out


@pytest.mark.parametrize("cap", [0, 1, 2, 3])
def test_merging_each_leafs_top_k_equals_one_pass_over_everything(cap: int) -> None:
    """The module docstring of retrieval.root proves it; here 300 random cases check it."""
    rng = np.random.default_rng(cap)
    for _ in range(300):
        shards, k = int(rng.integers(2, 5)), int(rng.integers(1, 12))
        advertisers = int(rng.integers(1, 6))  # few: the cap bites, across shards too
        rankings = []
        for s in range(shards):
            n = int(rng.integers(0, 30))
            scores = np.sort(rng.random(n).astype(np.float32))[::-1]
            rankings.append(
                [
                    Candidate(
                        ad_id=f"s{s}-{i}",
                        advertiser_id=f"adv-{rng.integers(advertisers)}",
                        score=float(score),
                        shard=s,
                    )
                    for i, score in enumerate(scores)
                ]
            )
        union = sorted((c for r in rankings for c in r), key=lambda c: -c.score)
        want = [c.ad_id for c in _capped(union, k, cap)]
        answers = [
            LeafAnswer(
                s,
                retrieval_pb2.RetrieveResponse(index_version="v", candidates=_capped(r, k, cap)),
            )
            for s, r in enumerate(rankings)
        ]
        request = retrieval_pb2.RetrieveRequest(k=k, max_per_advertiser=cap)
        got = merge(request, "v", answers, shards)
        assert [c.ad_id for c in got.candidates] == want
        assert not got.partial and list(got.shards_answered) == list(range(shards))


def test_partial_answers_and_when_a_call_fails() -> None:
    def ok(shard: int, version: str = "v") -> LeafAnswer:
        candidate = Candidate(ad_id=f"a{shard}", advertiser_id="x", score=shard / 10)
        response = retrieval_pb2.RetrieveResponse(index_version=version, candidates=[candidate])
        return LeafAnswer(shard, response)

    def failed(shard: int, code: grpc.StatusCode, details: str = "no") -> LeafAnswer:
        return LeafAnswer(shard, code=code, details=details)

    request = retrieval_pb2.RetrieveRequest(k=5)
    unavailable, deadline = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
    got = merge(request, "v", [ok(0), failed(1, unavailable), ok(2), ok(3, "w")], 4)
    assert got.partial and list(got.shards_answered) == [0, 2]  # "w": another version
    assert [c.ad_id for c in got.candidates] == ["a2", "a0"]
    bad = failed(0, grpc.StatusCode.INVALID_ARGUMENT, "k: must be in [1, 1000], got 0")
    for answers, code in (
        ([bad, failed(1, unavailable)], grpc.StatusCode.INVALID_ARGUMENT),
        ([failed(0, deadline), failed(1, deadline)], deadline),
        ([failed(0, deadline), failed(1, unavailable)], unavailable),
        ([ok(0, "w")], unavailable),
    ):
        with pytest.raises(LeafError) as err:
            merge(request, "v", answers, 2)
        assert err.value.grpc_code == code
    with pytest.raises(LeafError, match=r"k: must be in \[1, 1000\], got 0"):
        merge(request, "v", [bad, failed(1, unavailable)], 2)


def test_root_config_is_checked() -> None:
    assert RootConfig(leaves=("a:1", "b:2", "c:3")).effective_quorum == 2
    assert RootConfig(leaves=("a:1", "b:2", "c:3", "d:4")).effective_quorum == 3
    with pytest.raises(ValueError, match="quorum must be in"):
        RootConfig(leaves=("a:1",), quorum=2)
    with pytest.raises(ValueError, match="distinct"):
        RootConfig(leaves=("a:1", "a:1"))
    with pytest.raises(ValueError, match="leaf_deadline_share"):
        RootConfig(leaves=("a:1",), leaf_deadline_share=1.5)


class FakeLeaf:
    """Shard 0 of 1 holding version "v": records the raw Retrieve requests and deadlines."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.remaining: list[float | None] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        handlers = {
            "/retrieval.v1.RetrievalService/Retrieve": grpc.unary_unary_rpc_method_handler(
                self._retrieve,
                response_serializer=retrieval_pb2.RetrieveResponse.SerializeToString,
            ),
            "/retrieval.v1.LeafService/GetLeafStatus": grpc.unary_unary_rpc_method_handler(
                self._status,
                request_deserializer=retrieval_pb2.LeafStatusRequest.FromString,
                response_serializer=retrieval_pb2.LeafStatus.SerializeToString,
            ),
        }
        self.server.add_generic_rpc_handlers([_ExactHandler(handlers)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _retrieve(
        self, raw: bytes, context: grpc.ServicerContext
    ) -> retrieval_pb2.RetrieveResponse:
        self.requests.append(raw)
        self.remaining.append(context.time_remaining())
        candidate = Candidate(ad_id="a", advertiser_id="x", score=0.5)
        return retrieval_pb2.RetrieveResponse(index_version="v", candidates=[candidate])

    def _status(self, request: Any, context: grpc.ServicerContext) -> retrieval_pb2.LeafStatus:
        return retrieval_pb2.LeafStatus(
            shard=0, shard_count=1, serving_version="v", loaded_versions=["v"]
        )


class _ExactHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, handlers: dict[str, Any]):
        self._handlers = handlers

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        return self._handlers.get(details.method)


@pytest.fixture
def fake_leaf() -> Iterator[FakeLeaf]:
    leaf = FakeLeaf()
    yield leaf
    leaf.server.stop(0)


def test_the_whole_request_reaches_the_leaves_with_the_pin_and_a_shorter_deadline(
    fake_leaf: FakeLeaf,
) -> None:
    """Fields a newer client sends and this root does not know (here 100 and 101) pass through."""
    request = retrieval_pb2.RetrieveRequest(user_embedding=[0.5, 0.5], k=3, max_per_advertiser=1)
    unknown = b"\xa0\x06\x07" + b"\xaa\x06\x03abc"  # field 100 varint 7; field 101 bytes "abc"
    sent = request.SerializeToString() + unknown

    async def call() -> retrieval_pb2.RetrieveResponse:
        running = await create_root(RootConfig(leaves=(f"127.0.0.1:{fake_leaf.port}",), port=0))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                retrieve = channel.unary_unary(
                    "/retrieval.v1.RetrievalService/Retrieve",
                    request_serializer=None,
                    response_deserializer=retrieval_pb2.RetrieveResponse.FromString,
                )
                response: retrieval_pb2.RetrieveResponse = await retrieve(sent, timeout=2.0)
                return response
        finally:
            await running.stop()

    response = asyncio.run(call())
    assert response.index_version == "v" and [c.ad_id for c in response.candidates] == ["a"]
    (raw,) = fake_leaf.requests
    assert unknown[:3] in raw and unknown[3:] in raw
    received = retrieval_pb2.RetrieveRequest.FromString(raw)
    assert received.index_version == "v" and received.k == 3 and received.max_per_advertiser == 1
    (remaining,) = fake_leaf.remaining
    # 0.8 of the caller's 2 s; gRPC rounds the timeout header up a little (seen: 1.609 s)
    assert remaining is not None and 1.0 < remaining <= 0.8 * 2.0 + 0.05


# --- A leaf's versions (in-process) -------------------------------------------------------------


def _shard_build(catalog: Path, out: Path, shards: int) -> str:
    config = BuildConfig(
        catalog=catalog,
        out=out,
        index_factory="IVF16,Flat",
        nprobe=4,
        threads=1,
        shards=shards,
        allow_below_target=True,  # a fixed point: these tests are about versions, not the gate
    )
    return build(config).version_dir.name


@pytest.fixture(scope="module")
def two_versions(
    vector_catalog: VectorCatalog, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """A root holding two 3-shard versions of the vector catalog (LATEST: the second)."""
    path, _, _ = vector_catalog
    root = tmp_path_factory.mktemp("leaf")
    first = _shard_build(path, root, 3)
    second = _shard_build(path, root, 3)
    return root, first, second


@pytest.fixture(params=[0.0])
def leaf(
    two_versions: tuple[Path, str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    """Shard 0 of the first version, the second not loaded yet (no watcher); it releases a
    switched-from version after ``request.param`` seconds."""
    source, first, _ = two_versions
    root = tmp_path / "index"
    shutil.copytree(source, root)
    artifact.set_latest(root, first)
    running = create_server(
        ServerConfig(port=0, index=root, shard=0, index_poll_s=0, release_after_s=request.param)
    )
    artifact.set_latest(root, two_versions[2])
    yield running
    running.stop()


def _pinned(stub: Any, x: np.ndarray, version: str) -> retrieval_pb2.RetrieveResponse:
    request = retrieval_pb2.RetrieveRequest(user_embedding=x.tolist(), k=10, index_version=version)
    response: retrieval_pb2.RetrieveResponse = stub.Retrieve(request, timeout=5)
    return response


def test_a_leaf_holds_the_next_version_until_switched_and_pauses_reach_both(
    leaf: RunningServer, two_versions: tuple[Path, str, str]
) -> None:
    _, first, second = two_versions
    with grpc.insecure_channel(f"127.0.0.1:{leaf.port}") as channel:
        search = retrieval_pb2_grpc.RetrievalServiceStub(channel)  # type: ignore[no-untyped-call]
        admin = retrieval_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        status = retrieval_pb2_grpc.LeafServiceStub(channel)  # type: ignore[no-untyped-call]
        reload = admin.Reload(retrieval_pb2.ReloadRequest(), timeout=60)
        assert (reload.index_version, reload.changed) == (second, True)
        held = status.GetLeafStatus(retrieval_pb2.LeafStatusRequest(), timeout=5)
        assert (held.shard, held.shard_count, held.serving_version) == (0, 3, first)
        assert list(held.loaded_versions) == [first, second]
        x = leaf.state.current().artifact.embeddings[0]  # an ad of shard 0
        unpinned = search.Retrieve(retrieval_pb2.RetrieveRequest(user_embedding=x.tolist(), k=10))
        assert unpinned.index_version == first and list(unpinned.shards_answered) == [0]
        top = unpinned.candidates[0].ad_id
        for version in (first, second):
            answer = _pinned(search, x, version)
            assert answer.index_version == version and answer.candidates[0].ad_id == top
        admin.Pause(retrieval_pb2.EligibilityRequest(ad_ids=[top]), timeout=5)
        for version in (first, second):  # an admin change reaches every version held
            assert top not in {c.ad_id for c in _pinned(search, x, version).candidates}
        switched = admin.SwitchVersion(
            retrieval_pb2.SwitchVersionRequest(index_version=second), timeout=5
        )
        assert (switched.serving_version, list(switched.loaded_versions)) == (second, [second])
        for call in (
            lambda: _pinned(search, x, first),
            lambda: admin.SwitchVersion(
                retrieval_pb2.SwitchVersionRequest(index_version=first), timeout=5
            ),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "is not loaded on shard 0" in (err.value.details() or "")
        assert top not in {c.ad_id for c in _pinned(search, x, second).candidates}
        info = search.GetIndexInfo(retrieval_pb2.GetIndexInfoRequest(), timeout=5)
        assert info.index_version == second and info.leaf.serving_version == second


@pytest.mark.parametrize("leaf", [1.0], indirect=True)
def test_a_switched_leaf_keeps_the_old_version_a_while_for_other_roots(
    leaf: RunningServer, two_versions: tuple[Path, str, str]
) -> None:
    _, first, second = two_versions
    x = leaf.state.current().artifact.embeddings[0]
    with grpc.insecure_channel(f"127.0.0.1:{leaf.port}") as channel:
        search = retrieval_pb2_grpc.RetrievalServiceStub(channel)  # type: ignore[no-untyped-call]
        admin = retrieval_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        status = retrieval_pb2_grpc.LeafServiceStub(channel)  # type: ignore[no-untyped-call]
        admin.Reload(retrieval_pb2.ReloadRequest(), timeout=60)
        switched = admin.SwitchVersion(
            retrieval_pb2.SwitchVersionRequest(index_version=second), timeout=5
        )
        assert switched.serving_version == second
        assert list(switched.loaded_versions) == [first, second]  # kept for other roots
        assert _pinned(search, x, first).index_version == first
        deadline = time.monotonic() + 30
        while first in status.GetLeafStatus(retrieval_pb2.LeafStatusRequest()).loaded_versions:
            assert time.monotonic() < deadline, "the old version was never released"
        with pytest.raises(grpc.RpcError) as err:
            _pinned(search, x, first)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_leaf_refuses_a_resharded_version(
    leaf: RunningServer, vector_catalog: VectorCatalog
) -> None:
    path, _, _ = vector_catalog
    root = leaf.state.current().artifact.root
    _shard_build(path, root, 2)  # LATEST: 2 shards, the leaf serves shard 0 of 3
    with grpc.insecure_channel(f"127.0.0.1:{leaf.port}") as channel:
        admin = retrieval_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as err:
            admin.Reload(retrieval_pb2.ReloadRequest(), timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "split into 2 shards" in (err.value.details() or "")


def test_an_unsharded_server_answers_only_its_own_version(
    built_index: Any, vector_catalog: VectorCatalog
) -> None:
    running = create_server(ServerConfig(port=0, index=built_index.version_dir.parent))
    version = built_index.version_dir.name
    x = vector_catalog[2][0]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            search = retrieval_pb2_grpc.RetrievalServiceStub(channel)  # type: ignore[no-untyped-call]
            admin = retrieval_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
            answer = _pinned(search, x, version)
            assert answer.shard_count == 0 and not answer.shards_answered
            for call in (
                lambda: _pinned(search, x, "another"),
                lambda: admin.SwitchVersion(
                    retrieval_pb2.SwitchVersionRequest(index_version=version), timeout=5
                ),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        running.stop()


def test_a_leafs_admin_changes_survive_its_restart_in_its_own_change_log(
    leaf: RunningServer,
) -> None:
    """Each shard logs to changes.shard-I.jsonl at the root (a root's leaves share it)."""
    searcher = leaf.state.current()
    root = searcher.artifact.root
    row = int(np.argmax(searcher.view.eligible))  # an ad served now
    ad = searcher.artifact.ads[row].ad_id
    with grpc.insecure_channel(f"127.0.0.1:{leaf.port}") as channel:
        admin = retrieval_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        admin.Pause(retrieval_pb2.EligibilityRequest(ad_ids=[ad]), timeout=5)
    leaf.stop()
    assert (root / "changes.shard-0.jsonl").is_file() and not (root / "changes.jsonl").exists()
    again = create_server(ServerConfig(port=0, index=root, shard=0, index_poll_s=0))
    try:
        restarted = again.state.current()  # (the next version, published meanwhile)
        assert not restarted.view.eligible[restarted.overlay.row_of[ad]]
    finally:
        again.stop()


def test_tls_from_caller_to_root_to_leaf_and_the_admin_token_through_to_the_leaf(
    vector_catalog: VectorCatalog, tmp_path: Path
) -> None:
    path, records, xb = vector_catalog
    index = tmp_path / "index"
    _shard_build(path, index, 1)
    cert, key = certificate(tmp_path)
    token = (("authorization", "Bearer s3cret"),)
    leaf = create_server(
        ServerConfig(port=0, index=index, shard=0, tls_cert=cert, tls_key=key, admin_token="s3cret")
    )
    ad = records[0].ad_id

    async def calls() -> retrieval_pb2.RetrieveResponse:
        config = RootConfig(
            leaves=(f"127.0.0.1:{leaf.port}",),
            port=0,
            tls_cert=cert,
            tls_key=key,
            leaf_root_cert=cert,
            admin_token="s3cret",
        )
        running = await create_root(config)
        target = f"127.0.0.1:{running.port}"
        try:
            credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            async with grpc.aio.secure_channel(target, credentials) as channel:
                search = retrieval_pb2_grpc.RetrievalServiceStub(channel)  # type: ignore[no-untyped-call]
                admin = retrieval_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
                pause = retrieval_pb2.EligibilityRequest(ad_ids=[ad])
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await admin.Pause(pause, timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                changed = await admin.Pause(pause, timeout=5, metadata=token)  # leaf: same token
                assert changed.ads_changed == 1
                request = retrieval_pb2.RetrieveRequest(user_embedding=xb[0].tolist(), k=5)
                response: retrieval_pb2.RetrieveResponse = await search.Retrieve(request, timeout=5)
            async with grpc.aio.insecure_channel(target) as plain:
                stub = retrieval_pb2_grpc.RetrievalServiceStub(plain)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Retrieve(request, timeout=2)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # TLS only
            return response
        finally:
            await running.stop()

    try:
        response = asyncio.run(calls())
    finally:
        leaf.stop()
    assert list(response.shards_answered) == [0] and len(response.candidates) == 5
    assert ad not in {c.ad_id for c in response.candidates}  # the pause went through
