"""The load generator (benchmarks/load.py): loopback only, bounded, honest percentiles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.load import LoadRun, Server, drive, parse_args, process_cpu_s, settings, summarize
from benchmarks.load_report import record, setting_label, table
from indexer.build import BuildResult
from retrieval.client import RetrievalClient
from retrieval.server import ServerConfig, create_server
from retrieval.shadow import ShadowConfig


def _run(**overrides: object) -> LoadRun:
    fields: dict[str, object] = {
        "target": "127.0.0.1:1",
        "mode": "saturate",
        "clients": 2,
        "procs": 1,
        "duration_s": 2.0,
        "warmup_s": 0.5,
        "max_calls": 10_000,
        "k": 10,
    }
    return LoadRun(**{**fields, **overrides})  # type: ignore[arg-type]


def test_only_loopback_and_bounded_runs() -> None:
    with pytest.raises(ValueError, match="loopback"):
        _run(target="10.0.0.1:50051")
    with pytest.raises(ValueError, match="duration_s"):
        _run(duration_s=3600)
    with pytest.raises(ValueError, match="rate_qps"):
        _run(mode="rate")


def test_summary_counts_the_window_and_charges_late_completions() -> None:
    run = _run(duration_s=2.0, warmup_s=1.0)
    samples = [(0.5, 0.01, "OK")]  # warm-up: left out
    samples += [(1.0 + i / 100, 0.01, "OK") for i in range(100)]  # 100 calls in the window
    samples += [(1.5, 0.02, "RESOURCE_EXHAUSTED")]
    result = summarize(run, samples)
    assert result.ok == 100 and result.errors == {"RESOURCE_EXHAUSTED": 1}
    assert result.qps == pytest.approx(100 / 1.0, rel=0.02)  # last completion at ~2.0 s
    assert result.p50_ms == pytest.approx(10.0)
    late = summarize(run, [(1.0 + i / 100, 1.0, "OK") for i in range(100)])
    assert late.qps == pytest.approx(100 / 1.99, rel=0.02)  # completions spread over ~2 s


def test_drive_a_real_server(built_index: BuildResult) -> None:
    config = ServerConfig(port=0, index=built_index.version_dir, shadow=ShadowConfig(sample_rate=0))
    running = create_server(config)
    try:
        xq = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
        result = drive(
            _run(target=f"127.0.0.1:{running.port}", duration_s=1.5), xq, server_pid=os.getpid()
        )
    finally:
        running.stop()
    assert result.ok > 10 and result.errors == {}
    assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms
    # The server runs in this process here; each call costs it and its clients some CPU.
    assert result.client_cpu_ms is not None and result.client_cpu_ms > 0
    if process_cpu_s(os.getpid()) is not None:  # Linux /proc
        assert result.server_cpu_ms is not None and result.server_cpu_ms > 0
    row = record(result, batching="on")
    assert row["qps"] > 0 and row["machine"]["cores"]
    assert "saturate" in table([row])


def test_settings_name_every_server_compared(tmp_path: Path) -> None:
    args = parse_args(
        ["run", "--index", str(tmp_path), "--batching", "off", "--alone-threads", "1,2",
         "--code", f"base={tmp_path}", "--bare", "--bare-threads", "1,2", "--bare-processes", "1,2"]
    )  # fmt: skip
    names = [s.name for s in settings(args)]
    assert names == [
        "base:off/a1", "base:off/a2", "bare/p1", "bare/t2/p1", "bare/p2", "bare/t2/p2",
    ]  # fmt: skip
    assert all(s.code == tmp_path for s in settings(args) if not s.bare)
    # legends and doc tables spell them out
    assert setting_label("base:off/a2") == "base: batching off, alone threads 2"
    assert setting_label("bare/t2/p2") == "bare server, 2 OpenMP threads, 2 processes"
    assert setting_label("off") == "batching off"


def test_bare_server_answers_through_the_load_tool(built_index: BuildResult) -> None:
    """The floor row: a real bare server process on the same artifact, one process and two
    sharing the port (their CPU summed over the process tree)."""
    xq = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    art = built_index.version_dir
    for processes in (1, 2):
        server = Server(art, False, 4, ["--processes", str(processes)], bare=True)
        try:
            with RetrievalClient(server.target) as client:
                response = client.retrieve(xq[0], 10)
                assert len(response.candidates) == 10 and response.plan == "ivf"
                assert response.index_version == art.name
            result = drive(_run(target=server.target, duration_s=1.5), xq, server.pid)
        finally:
            server.close()
        assert result.ok > 10 and result.errors == {}
        if process_cpu_s(os.getpid()) is not None:  # Linux /proc
            assert result.server_cpu_ms is not None and result.server_cpu_ms > 0
