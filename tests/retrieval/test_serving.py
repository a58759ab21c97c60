"""Serving in production: hot swap under load, refused versions, crashed builds, limits, batching."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pytest

from indexer import artifact
from indexer.build import BuildConfig, build
from indexer.catalog import write_catalog_jsonl
from indexer.manifest import Manifest
from retrieval.batching import BatchConfig, MicroBatcher
from retrieval.client import RetrievalClient
from retrieval.errors import DeadlineExceeded
from retrieval.interceptors import ErrorInterceptor
from retrieval.metrics import Metrics
from retrieval.searcher import Searcher
from retrieval.server import RunningServer, ServerConfig, create_server
from retrieval.shadow import ShadowConfig
from retrieval.validation import ValidationConfig, VersionRefused, validate
from support import clustered_vectors, make_records

N = 2000
D = 32
SOAK_S = float(os.environ.get("ADINDEX_SOAK_S", "2"))  # minimum hot-swap load duration
NO_SHADOW = ShadowConfig(sample_rate=0.0)


def _catalog(tmp: Path, seed: int = 1338) -> tuple[Path, np.ndarray]:
    path = tmp / f"ads-{seed}.jsonl"
    xb = clustered_vectors(N, seed=seed)
    if not path.exists():
        write_catalog_jsonl(make_records(N), path, embeddings=xb)
    return path, xb


def _build(catalog: Path, root: Path) -> Path:
    # nprobe 4 of 16 on purpose (searches that miss some); the recall gate is tested in indexer/.
    config = BuildConfig(
        catalog=catalog,
        out=root,
        index_factory="IVF16,Flat",
        nprobe=4,
        threads=1,
        allow_below_target=True,
    )
    return build(config).version_dir


Change = Callable[[Path, Manifest], Manifest]


def _republish(root: Path, source: Path, change: Change) -> str:
    """Publish a checksum-valid copy of ``source`` that ``change`` altered; returns its name."""
    version = artifact.new_version_name()
    manifest = artifact.read_manifest(source)
    with artifact.staging_dir(root, version) as staged:
        for f in source.iterdir():
            if f.name != artifact.MANIFEST:
                shutil.copy(f, staged / f.name)
        manifest = change(staged, manifest)
        artifact.publish(root, staged, version=version, manifest=manifest)
    return version


def _corrupt(root: Path, source: Path) -> str:
    """Copy ``source`` in as a new version, flip bytes of its index, point LATEST at it."""
    version = artifact.new_version_name()
    shutil.copytree(source, root / version)
    index_file = root / version / artifact.INDEX_FILE
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    index_file.write_bytes(bytes(data))
    artifact.set_latest(root, version)
    return version


def _wait(predicate: Callable[[], bool], timeout_s: float = 30, what: str = "") -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Load:
    """Client threads calling Retrieve until stopped; records versions seen and failures."""

    def __init__(self, target: str, xb: np.ndarray, threads: int = 4):
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.calls = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(target, xb, s)) for s in range(threads)
        ]

    def _run(self, target: str, xb: np.ndarray, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with RetrievalClient(target, timeout_s=10) as c:
            while not self._stop.is_set():
                try:
                    # a third of the calls are filtered: they take the single-query path
                    country = "US" if rng.random() < 0.33 else ""
                    response = c.retrieve(xb[rng.integers(len(xb))], 10, country=country)
                    self.versions.append(response.index_version)
                    self.calls += 1
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.fixture(scope="module")
def built_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serving")
    catalog, _ = _catalog(tmp)
    _build(catalog, tmp / "index")
    return tmp / "index"


@pytest.fixture
def root(built_root: Path, tmp_path: Path) -> Path:
    """A copy per test: tests publish versions into it."""
    shutil.copytree(built_root, tmp_path / "index")
    return tmp_path / "index"


@pytest.fixture
def server(root: Path) -> Iterator[RunningServer]:
    running = create_server(ServerConfig(port=0, index=root, index_poll_s=0.05, shadow=NO_SHADOW))
    yield running
    running.stop()


def _served(running: RunningServer) -> str:
    return running.state.current().version


def _events(running: RunningServer, event: str) -> float:
    value = running.metrics.registry.get_sample_value(
        "adindex_index_events_total", {"event": event}
    )
    return value or 0.0


def test_hot_swap_under_load_fails_no_call(
    server: RunningServer, root: Path, tmp_path: Path
) -> None:
    first = _served(server)
    first_searcher = server.state.current()
    catalog, xb = _catalog(tmp_path)
    started = time.monotonic()
    with Load(f"127.0.0.1:{server.port}", xb) as load:
        second = _build(catalog, root).name
        _wait(lambda: _served(server) == second, what="the second version")
        # replaced: marked, so that nothing new (shadow recall's queue) holds on to it
        assert first_searcher.retired and not server.state.current().retired
        del first_searcher
        bad = _corrupt(root, root / second)
        _wait(lambda: bad in server.state.refused, what="the corrupted version to be refused")
        assert server.watcher is not None
        polls = server.watcher.checks  # ten more polls while LATEST still names the bad version
        _wait(lambda: server.watcher is not None and server.watcher.checks >= polls + 10)
        third = _build(catalog, root).name
        _wait(lambda: _served(server) == third, what="the third version")
        calls_at_third = load.calls
        _wait(
            lambda: load.calls > calls_at_third + 50 and time.monotonic() - started > SOAK_S,
            what="calls on the third version",
        )
    assert load.failures == []
    assert load.calls > 100
    seen = set(load.versions)
    assert {first, second, third} <= seen and bad not in seen
    assert load.versions.index(second) < load.versions.index(third)
    assert "sha256 mismatch" in server.state.refused[bad]
    assert _events(server, "refused") == 1  # not retried while LATEST kept naming it
    assert _events(server, "swapped") == 2
    gc.collect()
    _wait(lambda: _events(server, "freed") == 2, timeout_s=10, what="old versions to be freed")


def _permute_embeddings(staged: Path, manifest: Manifest) -> Manifest:
    xb = np.load(staged / artifact.EMBEDDINGS_FILE)
    np.save(staged / artifact.EMBEDDINGS_FILE, xb[::-1].copy())  # rows no longer match ids
    return manifest


def _rename_model(staged: Path, manifest: Manifest) -> Manifest:
    return replace(manifest, model=replace(manifest.model, name="some-other-model"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [(_permute_embeddings, "smoke recall check failed"), (_rename_model, "model")],
)
def test_incompatible_or_broken_version_is_refused(
    server: RunningServer, root: Path, change: Change, reason: str
) -> None:
    first = _served(server)
    bad = _republish(root, root / first, change)  # checksums are valid: only validation can tell
    _wait(lambda: bad in server.state.refused, what="the version to be refused")
    assert reason in server.state.refused[bad]
    assert _served(server) == first
    with RetrievalClient(f"127.0.0.1:{server.port}") as c:
        assert c.retrieve([0.1] * D, 5).index_version == first
        with pytest.raises(grpc.RpcError) as err:
            c.reload()  # an explicit Reload tries again, and says why it refuses
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason in (err.value.details() or "")


def test_dimension_change_is_refused(root: Path, tmp_path: Path) -> None:
    served = artifact.load(root)
    records = make_records(N)
    catalog = tmp_path / "wide.jsonl"
    write_catalog_jsonl(records, catalog, embeddings=clustered_vectors(N, d=48))
    wide = artifact.load(_build(catalog, tmp_path / "other"))
    with pytest.raises(VersionRefused, match="dimension 48 differs"):
        validate(wide, served, ValidationConfig())
    validate(wide, None, ValidationConfig())  # a first version has nothing to be compatible with


_BUILD_THAT_STOPS = """
import logging, sys, threading
from pathlib import Path
from indexer import artifact
from indexer.build import BuildConfig, build
name, occurrence = sys.argv[3].split(":")
seen = 0
_fsync = artifact.fsync_path
def fsync_then_stop(path):  # hangs at one chosen fsync of the publish step, to be killed there
    global seen
    _fsync(path)
    seen += name in ("*", Path(path).name)
    if seen == int(occurrence):
        print("Stopped at", path, file=sys.stderr, flush=True)
        threading.Event().wait()  # until killed
artifact.fsync_path = fsync_then_stop
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
build(BuildConfig(Path(sys.argv[1]), Path(sys.argv[2]), index_factory="IVF16,Flat", threads=1))
"""

# Where the build dies, and whether LATEST has moved by then: after the first staged file,
# after the manifest, after the version directory is renamed into place (LATEST not yet
# replaced), and after LATEST is replaced (its directory not yet synced).
_KILL_POINTS = [("*:1", False), ("manifest.json:1", False), ("index:1", False), ("index:2", True)]


def _kill_during_publish(catalog: Path, root: Path, stop_at: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _BUILD_THAT_STOPS, str(catalog), str(root), stop_at],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        stopped = False
        for line in proc.stderr:
            if line.startswith("Stopped at"):
                stopped = True
                break
        assert stopped, f"the build never reached fsync {stop_at} (exit {proc.wait()})"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stderr.close()


def test_build_killed_mid_publish_leaves_a_served_loadable_version(
    server: RunningServer, root: Path, tmp_path: Path
) -> None:
    catalog, xb = _catalog(tmp_path)
    with Load(f"127.0.0.1:{server.port}", xb, threads=2) as load:
        for stop_at, latest_moved in _KILL_POINTS:
            before = artifact.resolve(root).name
            _kill_during_publish(catalog, root, stop_at)
            latest = artifact.load(root)  # LATEST names a complete, intact version
            assert (latest.version != before) == latest_moved, stop_at
            _wait(lambda v=latest.version: _served(server) == v, what="the LATEST version")  # type: ignore[misc]
        survivor = _served(server)
    assert load.failures == []
    assert set(load.versions) <= set(artifact.list_versions(root))
    assert survivor in load.versions
    assert server.state.refused == {}


# -- limits -------------------------------------------------------------------------------------


class Gate:
    """Holds searches of one searcher until opened; counts the searches that ran."""

    def __init__(self, searcher: Searcher):
        self.open = threading.Event()
        self.entered = threading.Event()
        self.searches = 0
        inner = searcher.search

        def held(*args: Any, **kwargs: Any) -> Any:
            self.searches += 1
            self.entered.set()
            self.open.wait(timeout=30)
            return inner(*args, **kwargs)

        searcher.search = held  # type: ignore[method-assign]


@pytest.fixture
def small_server(root: Path) -> Iterator[RunningServer]:
    """One worker and room for two calls: the third is refused. Batching on, so that
    unfiltered calls take the batched path while a Gate holds filtered (single-path) ones."""
    config = ServerConfig(
        port=0,
        index=root,
        workers=1,
        max_active_calls=2,
        max_k=100,
        shadow=NO_SHADOW,
        batching=BatchConfig(),
    )
    running = create_server(config)
    yield running
    running.stop()


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    code: grpc.StatusCode = err.value.code()
    return code


QUEUED_DEADLINE_S = 2.0  # room to check the full queue before it passes, even on a busy machine


def test_limits_each_get_their_status_and_the_server_keeps_serving(
    small_server: RunningServer,
) -> None:
    gate = Gate(small_server.state.current())
    q = [0.1] * D
    with RetrievalClient(f"127.0.0.1:{small_server.port}", timeout_s=10) as c:
        assert _code(lambda: c.retrieve(np.ones(400_000), 10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _code(lambda: c.retrieve(q, 10**6)) == grpc.StatusCode.INVALID_ARGUMENT
        results: dict[str, object] = {}

        def call(name: str, timeout_s: float) -> None:
            try:  # filtered: the single-query path, held by the gate
                results[name] = c.retrieve(q, 5, country="US", timeout_s=timeout_s).index_version
            except grpc.RpcError as exc:
                results[name] = exc.code()

        holder = threading.Thread(target=call, args=("holder", 30))
        holder.start()
        assert gate.entered.wait(10)  # the only worker is busy
        # Its deadline passes while it waits behind the holder: the server must not search it.
        queued = threading.Thread(target=call, args=("queued", QUEUED_DEADLINE_S))
        queued.start()
        _wait(lambda: small_server.metrics.registry.get_sample_value("adindex_rpc_active") == 2)
        assert _code(lambda: c.retrieve(q, 5)) == grpc.StatusCode.RESOURCE_EXHAUSTED  # queue full
        queued.join()
        assert results["queued"] == grpc.StatusCode.DEADLINE_EXCEEDED
        gate.open.set()
        holder.join()
        assert results["holder"] == _served(small_server)
        assert gate.searches == 1  # the call whose deadline passed in the queue was not searched
        assert len(c.retrieve(q, 5, country="US").candidates) == 5
        assert len(c.retrieve(q, 100).candidates) == 100
    rejected = small_server.metrics.registry.get_sample_value(
        "adindex_rpc_rejected_total", {"reason": "queue_full"}
    )
    assert rejected == 1


def test_expired_deadline_is_not_run() -> None:
    ran = []

    def behaviour(request: object, context: object) -> str:
        ran.append(request)
        return "searched"

    handler = grpc.unary_unary_rpc_method_handler(behaviour)
    wrapped = ErrorInterceptor().intercept_service(lambda _d: handler, cast(Any, _Details()))
    assert wrapped is not None and wrapped.unary_unary is not None
    context = _Context(time_remaining=0.0)
    with pytest.raises(_Aborted):
        wrapped.unary_unary("request", context)  # type: ignore[arg-type]
    assert context.aborted == grpc.StatusCode.DEADLINE_EXCEEDED and ran == []
    assert wrapped.unary_unary("request", _Context(time_remaining=1.0)) == "searched"  # type: ignore[arg-type]


class _Details:
    method = "/retrieval.v1.RetrievalService/Retrieve"
    invocation_metadata = ()


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self, time_remaining: float):
        self._remaining = time_remaining
        self.aborted: grpc.StatusCode | None = None

    def time_remaining(self) -> float:
        return self._remaining

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = code
        raise _Aborted(details)


# -- micro-batching -------------------------------------------------------------------------------


@pytest.fixture
def searcher(root: Path) -> Searcher:
    return Searcher(artifact.load(root), max_k=100)


def test_batched_search_matches_single_searches(searcher: Searcher, tmp_path: Path) -> None:
    _, xb = _catalog(tmp_path)
    xq = np.stack([searcher.check_query(x)[0] for x in xb[:40] + 0.1])
    for k in (1, 10, 100):
        batched = searcher.search_batch(xq, k)
        for q, hits in zip(xq, batched, strict=True):
            single = searcher.search(q, k)
            assert hits.ids.tolist() == single.ids.tolist()
            np.testing.assert_allclose(hits.scores, single.scores, rtol=1e-5)


def test_concurrent_calls_share_one_faiss_search(searcher: Searcher, tmp_path: Path) -> None:
    _, xb = _catalog(tmp_path)
    metrics = Metrics()
    batcher = MicroBatcher(BatchConfig(max_batch=64, max_wait_s=1.0), metrics)
    tickets = [batcher.arrive() for _ in range(8)]  # all arrived: the leader waits for them all
    ks = [10, 16, 9, 12, 10, 11, 15, 14]  # one k bucket (16): searched with k=16, each sliced
    out: dict[int, list[int]] = {}

    def call(i: int) -> None:
        hits = tickets[i].search(searcher, xb[i], ks[i], 0, time.monotonic() + 30)
        out[i] = hits.ids.tolist()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metrics.registry.get_sample_value("adindex_batch_size_count") == 1
    assert metrics.registry.get_sample_value("adindex_batch_size_sum") == 8
    for i in range(8):
        assert out[i] == searcher.search(xb[i], ks[i]).ids.tolist()


def test_a_call_past_its_deadline_leaves_its_batch(searcher: Searcher, tmp_path: Path) -> None:
    _, xb = _catalog(tmp_path)
    batcher = MicroBatcher(BatchConfig(), Metrics())
    with pytest.raises(DeadlineExceeded):
        batcher.arrive().search(searcher, xb[0], 10, 0, time.monotonic() - 1)
    assert len(batcher.arrive().search(searcher, xb[0], 10, 0, time.monotonic() + 5).ids) == 10


def _batch_counts(root: Path, xb: np.ndarray, batching: BatchConfig | None) -> tuple[int, int]:
    """(FAISS searches, calls answered) for one call held in its search while 4 more arrive."""
    running = create_server(ServerConfig(port=0, index=root, batching=batching, shadow=NO_SHADOW))
    searcher = running.state.current()
    release, held = threading.Event(), threading.Event()
    inner_batch, inner_one = searcher.search_batch, searcher.search

    def hold(inner: Callable[..., Any], *args: Any) -> Any:
        if not held.is_set():  # the first search waits until the others are in
            held.set()
            release.wait(30)
        return inner(*args)

    searcher.search_batch = partial(hold, inner_batch)  # type: ignore[method-assign]
    searcher.search = partial(hold, inner_one)  # type: ignore[method-assign]
    reg = running.metrics.registry
    try:
        with (
            RetrievalClient(f"127.0.0.1:{running.port}") as c,
            futures.ThreadPoolExecutor(5) as pool,
        ):
            first = pool.submit(c.retrieve, xb[0], 10)
            assert held.wait(30)
            rest = [pool.submit(c.retrieve, x, 10) for x in xb[1:5]]
            if batching is None:  # nothing waits for the held search: the others finish
                futures.wait(rest, timeout=30)
            else:  # the others join the next batch while the only search slot is busy
                _wait(lambda: reg.get_sample_value("adindex_rpc_active") == 5, what="arrivals")
            release.set()
            assert all(len(f.result(timeout=30).candidates) == 10 for f in [first, *rest])
        searches = reg.get_sample_value("adindex_batch_size_count")
        calls = reg.get_sample_value("adindex_batch_size_sum")
        assert searches is not None and calls is not None
        return int(searches), int(calls)
    finally:
        running.stop()


def test_batching_is_off_by_default_and_batches_through_the_server_when_on(
    root: Path, tmp_path: Path
) -> None:
    _, xb = _catalog(tmp_path)
    assert ServerConfig().batching is None  # measured faster on 2 cores (docs/serving.md)
    assert _batch_counts(root, xb, None) == (5, 5)  # every call its own search
    # the four calls that arrived while the only search slot was busy share one FAISS call
    assert _batch_counts(root, xb, BatchConfig(max_concurrent=1)) == (2, 5)


def test_manifest_of_a_republished_version_is_complete(root: Path) -> None:
    name = _republish(root, artifact.resolve(root), lambda _s, m: m)
    manifest = artifact.read_manifest(root / name)
    assert manifest.version == name and set(manifest.files) >= {artifact.INDEX_FILE}
    assert artifact.load(root / name).manifest == manifest
