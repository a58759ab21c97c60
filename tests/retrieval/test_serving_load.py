"""The load generator (benchmarks/load.py): loopback only, bounded, honest percentiles."""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks.load import LoadRun, drive, process_cpu_s, summarize
from benchmarks.load_report import record, table
from indexer.build import BuildResult
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
