"""AdminService through the real server: pause/resume/upsert/delete, durability, concurrency."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import pytest

from indexer.build import BuildConfig, build
from indexer.catalog import write_catalog_jsonl
from indexer.embedding import DEFAULT_BACKEND, DEFAULT_QUANTIZE, backend_of
from indexer.records import AdRecord, Targeting
from retrieval.changelog import CHANGELOG_FILE
from retrieval.client import RetrievalClient, ad_message
from retrieval.server import RunningServer, ServerConfig, create_server
from retrieval.v1 import retrieval_pb2
from support import HashEmbedder, clustered_vectors, make_records

N = 3000
TOKEN = "s3cret-token"
IndexRoot = tuple[Path, list[AdRecord], np.ndarray]


@pytest.fixture(scope="session")
def built_root(
    tmp_path_factory: pytest.TempPathFactory,
) -> IndexRoot:
    """Built once per session; tests change state, so each gets a copy (``index_root``)."""
    tmp = tmp_path_factory.mktemp("admin")
    records = make_records(N)
    xb = clustered_vectors(N)
    catalog = tmp / "ads.jsonl"
    write_catalog_jsonl(records, catalog, embeddings=xb)
    root = tmp / "index"
    build(BuildConfig(catalog=catalog, out=root, index_factory="IVF16,Flat", nprobe=16, threads=1))
    return root, records, xb


@pytest.fixture
def index_root(built_root: IndexRoot, tmp_path: Path) -> IndexRoot:
    """A fresh copy of the built index (and of its change log) per test."""
    root, records, xb = built_root
    shutil.copytree(root, tmp_path / "index", symlinks=True)
    return tmp_path / "index", records, xb


@pytest.fixture
def server(index_root: IndexRoot) -> Iterator[RunningServer]:
    running = create_server(ServerConfig(port=0, index=index_root[0], admin_token=TOKEN))
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[RetrievalClient]:
    with RetrievalClient(f"127.0.0.1:{server.port}", admin_token=TOKEN) as c:
        yield c


def _ids(response: retrieval_pb2.RetrieveResponse) -> list[str]:
    return [c.ad_id for c in response.candidates]


def test_pause_and_resume_by_ad_campaign_and_advertiser(
    client: RetrievalClient, index_root: IndexRoot
) -> None:
    _, records, xb = index_root
    top = client.retrieve(xb[0], 10).candidates
    ad, campaign, advertiser = top[0].ad_id, top[1].campaign_id, top[2].advertiser_id
    response = client.pause(ad_ids=[ad], campaign_ids=[campaign], advertiser_ids=[advertiser])
    expected = {
        r.ad_id
        for r in records
        if r.status == "active"
        and (r.ad_id == ad or r.campaign_id == campaign or r.advertiser_id == advertiser)
    }
    assert response.ads_changed == len(expected)
    after = client.retrieve(xb[0], 200).candidates
    assert not expected & {c.ad_id for c in after}
    assert all(c.campaign_id != campaign and c.advertiser_id != advertiser for c in after)
    assert client.info().active_count == sum(r.status == "active" for r in records) - len(expected)
    client.resume(ad_ids=[ad], campaign_ids=[campaign], advertiser_ids=[advertiser])
    assert _ids(client.retrieve(xb[0], 10)) == [c.ad_id for c in top]


def test_resume_by_ad_id_overrides_catalog_pause(
    client: RetrievalClient, index_root: IndexRoot
) -> None:
    _, records, xb = index_root
    i = next(i for i, r in enumerate(records) if r.status == "paused")
    assert records[i].ad_id not in _ids(client.retrieve(xb[i], 5))
    client.resume(ad_ids=[records[i].ad_id])
    assert _ids(client.retrieve(xb[i], 5))[0] == records[i].ad_id


def test_upsert_new_and_changed_ads_and_delete(
    client: RetrievalClient, index_root: IndexRoot
) -> None:
    _, records, xb = index_root
    probe = (xb[100] + xb[2000]) / np.linalg.norm(
        xb[100] + xb[2000]
    )  # no indexed ad has this vector
    new = AdRecord(
        ad_id="ad-new", advertiser_id="adv-new", campaign_id="cmp-new", title="brand new"
    )
    response = client.upsert([ad_message(new, probe)])
    assert (response.inserted, response.updated) == (1, 0)
    assert _ids(client.retrieve(probe, 3))[0] == "ad-new"
    # change an existing ad: new targeting and a new vector
    old = records[100]
    moved = AdRecord(
        old.ad_id,
        old.advertiser_id,
        old.campaign_id,
        title="moved",
        targeting=Targeting(countries=("FR",)),
    )
    response = client.upsert([ad_message(moved, xb[200])])
    assert (response.inserted, response.updated) == (0, 1)
    assert old.ad_id not in _ids(client.retrieve(xb[200], 5, country="US"))
    assert old.ad_id in _ids(client.retrieve(xb[200], 5, country="FR"))
    client.delete(["ad-new", old.ad_id])
    for q in (probe, xb[200]):
        ids = _ids(client.retrieve(q, 50))
        assert "ad-new" not in ids and old.ad_id not in ids
    assert client.info().ad_count == N - 1


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (
            lambda c: c.pause(ad_ids=["ad-00001", "nope"]),
            grpc.StatusCode.NOT_FOUND,
            r"ad_ids: unknown 'nope'",
        ),
        (
            lambda c: c.pause(campaign_ids=["cmp-zzz"]),
            grpc.StatusCode.NOT_FOUND,
            "campaign_ids: unknown",
        ),
        (
            lambda c: c.resume(advertiser_ids=["adv-zzz"]),
            grpc.StatusCode.NOT_FOUND,
            "advertiser_ids: unknown",
        ),
        (lambda c: c.pause(), grpc.StatusCode.INVALID_ARGUMENT, "name at least one"),
        (lambda c: c.delete(["ad-00001", "ghost"]), grpc.StatusCode.NOT_FOUND, "ghost"),
        (
            lambda c: c.upsert(
                [
                    retrieval_pb2.Ad(
                        ad_id="x", advertiser_id="a", campaign_id="c", embedding=[0.1] * 31
                    )
                ]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            r"ads\[0\].embedding: has 31 values, the index dimension is 32",
        ),
        (
            lambda c: c.upsert(
                [retrieval_pb2.Ad(advertiser_id="a", campaign_id="c", embedding=[0.1] * 32)]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            r"ads\[0\].ad_id: required",
        ),
        (
            lambda c: c.upsert(
                [
                    retrieval_pb2.Ad(
                        ad_id="x",
                        advertiser_id="a",
                        campaign_id="c",
                        status="live",
                        embedding=[0.1] * 32,
                    )
                ]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            r"ads\[0\].status",
        ),
        (
            lambda c: c.upsert(
                [
                    retrieval_pb2.Ad(
                        ad_id="x",
                        advertiser_id="a",
                        campaign_id="c",
                        targeting=retrieval_pb2.Targeting(devices=["phone"]),
                        embedding=[0.1] * 32,
                    )
                ]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            r"ads\[0\].targeting.devices",
        ),
    ],
)
def test_bad_admin_input_changes_nothing(
    client: RetrievalClient,
    index_root: IndexRoot,
    call: object,
    code: grpc.StatusCode,
    message: str,
) -> None:
    root, _, xb = index_root
    before = (_ids(client.retrieve(xb[1], 50)), client.info().active_count)
    with pytest.raises(grpc.RpcError) as err:
        call(client)  # type: ignore[operator]
    assert err.value.code() == code
    assert re.search(message, err.value.details() or "")
    assert (_ids(client.retrieve(xb[1], 50)), client.info().active_count) == before
    assert not (root / CHANGELOG_FILE).exists()  # nothing was logged


def test_admin_token_is_required(server: RunningServer) -> None:
    for token, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("wrong", grpc.StatusCode.PERMISSION_DENIED),
    ):
        with RetrievalClient(f"127.0.0.1:{server.port}", admin_token=token) as c:
            with pytest.raises(grpc.RpcError) as err:
                c.pause(ad_ids=["ad-00001"])
            assert err.value.code() == code
            assert len(c.retrieve([0.1] * 32, 5).candidates) == 5  # Retrieve needs no token


def test_pause_under_concurrent_retrieves_takes_effect_immediately(
    client: RetrievalClient, index_root: IndexRoot
) -> None:
    _, _, xb = index_root
    target = client.retrieve(xb[42], 1).candidates[0]
    advertiser = target.advertiser_id
    paused_at: list[float] = []
    violations: list[str] = []
    calls = {"before": 0, "after": 0}  # calls finished that started before / after the pause
    counted = threading.Condition()
    stop = threading.Event()

    def hammer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with RetrievalClient(client.target) as c:
            while not stop.is_set():
                q = xb[42] + 0.05 * rng.standard_normal(xb.shape[1])
                started = time.monotonic()
                ids = c.retrieve(q, 20).candidates
                after = bool(paused_at) and started > paused_at[0]
                if after and any(x.advertiser_id == advertiser for x in ids):
                    violations.append(
                        f"a call {started - paused_at[0]:.6f}s after the pause saw {advertiser}"
                    )
                with counted:
                    calls["after" if after else "before"] += 1
                    counted.notify_all()

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        with counted:  # the pause lands among calls in flight
            assert counted.wait_for(lambda: calls["before"] >= 200, timeout=120), calls
        client.pause(advertiser_ids=[advertiser])
        paused_at.append(time.monotonic())
        with counted:
            assert counted.wait_for(lambda: calls["after"] >= 1000, timeout=120), calls
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert violations == []


@contextmanager
def _serve(root: Path) -> Iterator[int]:
    """``adindex serve`` in its own process; yields its port; SIGKILLs it at the end."""
    env = {**os.environ, "ADINDEX_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "serve", "--index", str(root), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    try:
        port = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            match = re.search(r"Listening on 127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else port
            if "Serving index" in line or not line:
                break
        assert port, "server did not start"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)  # keep the pipe from filling
        drain.start()
        yield port
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown hook runs: only what was fsynced survives
        proc.wait()
        proc.stderr.close()


def test_changes_survive_sigkill_and_a_rebuild_does_not_resurrect(
    index_root: IndexRoot, tmp_path: Path
) -> None:
    root, records, xb = index_root
    fresh = (xb[30] + xb[31]) / np.linalg.norm(xb[30] + xb[31])
    with _serve(root) as port, RetrievalClient(f"127.0.0.1:{port}", admin_token=TOKEN) as c:
        paused = c.retrieve(xb[10], 1).candidates[0].ad_id
        deleted = c.retrieve(xb[20], 1).candidates[0].ad_id
        c.pause(ad_ids=[paused])
        c.delete([deleted])
        c.upsert([ad_message(AdRecord("ad-up", "adv-up", "cmp-up", title="up"), fresh)])

    def check(port: int) -> None:
        with RetrievalClient(f"127.0.0.1:{port}", admin_token=TOKEN) as c:
            assert paused not in _ids(c.retrieve(xb[10], 50))
            assert deleted not in _ids(c.retrieve(xb[20], 50))
            assert _ids(c.retrieve(fresh, 1)) == ["ad-up"]

    with _serve(root) as port:
        check(port)
        # A rebuild from a catalog exported before those changes: they are replayed on top.
        catalog = tmp_path / "rebuild.jsonl"
        write_catalog_jsonl(records, catalog, embeddings=xb)
        snapshot = datetime.fromtimestamp(time.time() - 3600, UTC)
        build(
            BuildConfig(
                catalog=catalog,
                out=root,
                index_factory="IVF16,Flat",
                threads=1,
                snapshot_at=snapshot,
            )
        )
        with RetrievalClient(f"127.0.0.1:{port}", admin_token=TOKEN) as c:
            response = c.reload()
        assert response.changed
        check(port)


def test_upsert_embeds_the_fields_the_version_was_built_with(tmp_path: Path) -> None:
    """An upserted ad's text is embedded as the build embedded its ads (--text-fields)."""
    embedder = HashEmbedder()
    records = make_records(1200)
    catalog = tmp_path / "ads.jsonl"
    write_catalog_jsonl(records, catalog)
    fields = ("title", "creative_text")  # not the default: description is left out
    config = BuildConfig(
        catalog=catalog, out=tmp_path / "index", text_fields=fields, index_factory="IVF8,Flat"
    )
    build(config, embedder=embedder)
    new = AdRecord(
        "ad-new",
        "adv-new",
        "cmp-new",
        title="walnut sideboard",
        description="words that only the description holds",
        creative_text="mid century",
    )
    # what a build with these fields embeds for this ad
    built = embedder.encode([new.text(fields, config.text_separator)])[0]
    running = create_server(ServerConfig(port=0, index=tmp_path / "index"), embedder=embedder)
    try:
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            client.upsert([ad_message(new)])  # no embedding: the server embeds the text
            top = client.retrieve(built, 5).candidates[0]
    finally:
        running.stop()
    assert top.ad_id == "ad-new"
    assert top.score == pytest.approx(1.0, abs=1e-5)  # the very vector the build would make


class _OtherEmbedder(HashEmbedder):
    """Same dimension, another embedder: its vectors must not join a hash-bow version."""

    embedder_id = "other/onnx-int8/000000000000"


def test_text_from_another_embedder_is_refused_not_mixed(tmp_path: Path) -> None:
    records = make_records(1200)
    catalog = tmp_path / "ads.jsonl"
    write_catalog_jsonl(records, catalog)
    config = BuildConfig(catalog=catalog, out=tmp_path / "index", index_factory="IVF8,Flat")
    assert build(config, embedder=HashEmbedder()).manifest.model.embedder == "hash-bow"
    running = create_server(
        ServerConfig(port=0, index=tmp_path / "index", model=tmp_path), embedder=_OtherEmbedder()
    )
    new = AdRecord("ad-new", "adv-new", "cmp-new", title="walnut sideboard")
    try:
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            with pytest.raises(grpc.RpcError) as err:
                client.upsert([ad_message(new)])
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "embedded by hash-bow" in (err.value.details() or "")
            assert client.info().ad_count == len(records)  # nothing changed
    finally:
        running.stop()


def test_backend_of_reads_an_embedder_id() -> None:
    assert backend_of("all-MiniLM-L6-v2/onnx-int8/3f2a9c01b7de") == ("onnx", "int8")
    assert backend_of("all-MiniLM-L6-v2/torch-fp32/3f2a9c01b7de") == ("torch", None)
    assert backend_of("hash-bow") == (DEFAULT_BACKEND, DEFAULT_QUANTIZE)
