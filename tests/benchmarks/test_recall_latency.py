"""The benchmark end to end at tiny sizes: every system, real build, real server, real outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.config import SYSTEMS, BenchConfig
from benchmarks.recall_latency import parse_args, run
from benchmarks.report import mark_pareto
from benchmarks.text_data import ndcg_at

FIELDS = {
    "name", "index_key", "params", "k", "nq", "recall_at_10", "recall_at_100", "p50_ms", "p99_ms",
    "qps", "build_s", "index_bytes", "rss_mb", "threads", "git_sha", "machine", "dataset", "nb",
    "d", "command", "load_avg_1m", "time_utc", "benchmark", "kind",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(
        dataset="calibrated", nb=3000, nq=40, d=32, nq_eval=40, warmup=5, repeats=1,
        factory="IVF16,PQ8x4fs,RFlat", nprobes=(4, 16), ef_search=(100,),
        lance_nprobes=(8,), lance_refine=(10,), out=out,
    )  # fmt: skip
    rows = run(cfg)
    return rows, out / cfg.name


def test_every_system_writes_complete_json_lines(
    tiny_run: tuple[list[dict[str, Any]], Path],
) -> None:
    rows, out_dir = tiny_run
    lines = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len(rows) > 0
    assert {r["name"] for r in lines} == set(SYSTEMS)
    for r in lines:
        assert r.keys() >= FIELDS, FIELDS - r.keys()
        assert r["k"] == 100 and r["nq"] == 40 and r["nb"] == 3000 and r["d"] == 32
        assert r["machine"]["cores"] >= 1 and r["git_sha"]
        # Equal threads in every system: one per single query, 2 for the throughput run.
        assert (r["threads"]["single"], r["threads"]["qps"]) == (1, 2), r["name"]
    assert any(r["pareto"] for r in lines)
    for r in lines:  # CPU per search where it runs in this process; memory of a serving process
        in_process = r["name"] != "adindex-grpc"
        assert (r["cpu_ms_mean"] is not None and r["cpu_ms_mean"] > 0) == in_process, r["name"]
        if r["name"] in ("adindex", "hnswlib"):
            rss = r["extra"]["serving_rss"]
            assert rss["rss_mb"] > rss["baseline_mb"] > 0 and rss["loaded_mb"] > 0, rss
    for name in ("results.md", "run.json", "recall_vs_p50.png", "recall_vs_qps.png"):
        assert (out_dir / name).stat().st_size > 0
    assert "cos_1st" in json.loads((out_dir / "run.json").read_text())["neighbour_stats"]
    extras = [json.loads(line) for line in (out_dir / "extras.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in extras] == ["run", "neighbour_stats"]


def test_exact_search_is_exact_and_adindex_finds_most_neighbours(
    tiny_run: tuple[list[dict[str, Any]], Path],
) -> None:
    rows, _ = tiny_run
    (flat,) = [r for r in rows if r["name"] == "faiss-flat"]
    assert flat["recall_at_10"] == 1.0 and flat["recall_at_100"] == 1.0
    for name in ("adindex", "adindex-grpc", "faiss-ivf"):
        best = max(r["recall_at_100"] for r in rows if r["name"] == name)
        assert best >= 0.9, (name, best)
    ad = {r["params"]["nprobe"]: r for r in rows if r["name"] == "adindex"}
    grpc = {r["params"]["nprobe"]: r for r in rows if r["name"] == "adindex-grpc"}
    for nprobe, r in ad.items():  # the server searches the same artifact the same way
        # (up to near-ties between equal scores)
        assert grpc[nprobe]["recall_at_100"] == pytest.approx(r["recall_at_100"], abs=0.005)


def test_presets_and_flags() -> None:
    cfg = parse_args(["--dataset", "calibrated-1m", "--nprobes", "8,16", "--systems", "adindex"])
    assert cfg.nb == 1_000_000 and cfg.nprobes == (8, 16) and cfg.systems == ("adindex",)
    assert cfg.factory is None  # adindex builds what indexer.params chooses
    flagged = parse_args(["--dataset", "calibrated-1m", "--factory", "IVF4096,PQ192x4fs,RFlat"])
    assert flagged.factory == "IVF4096,PQ192x4fs,RFlat"  # flags win over the preset
    with pytest.raises(ValueError, match="add adindex"):
        BenchConfig(dataset="calibrated", systems=("faiss-ivf",))


def test_pareto_keeps_points_that_no_faster_point_beats() -> None:
    rows = [
        {"name": "a", "p50_ms": 1.0, "recall_at_100": 0.9},
        {"name": "a", "p50_ms": 2.0, "recall_at_100": 0.8},
        {"name": "a", "p50_ms": 3.0, "recall_at_100": 0.95},
    ]
    mark_pareto(rows)
    assert [r["pareto"] for r in rows] == [True, False, True]


def test_ndcg() -> None:
    grades = {1: 3, 2: 2, 7: 0}
    assert ndcg_at(np.array([1, 2, 5]), grades) == pytest.approx(1.0)
    assert ndcg_at(np.array([5, 6]), grades) == 0.0
    assert 0 < ndcg_at(np.array([2, 1]), grades) < 1


def test_adindex_bench_is_the_benchmark_command(capsys: pytest.CaptureFixture[str]) -> None:
    from retrieval.cli import main

    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    assert "--dataset" in capsys.readouterr().out


def test_realtext_is_skipped_with_the_packages_to_install_when_absent(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from benchmarks import realtext

    monkeypatch.setattr(realtext, "WORDNET_DIR", tmp_path / "no-wordnet")
    cfg = parse_args(["--dataset", "realtext", "--systems", "faiss-flat", "--out", str(tmp_path)])
    assert run(cfg) == []
    assert "SKIPPED realtext" in capsys.readouterr().out
    assert "apt-get install wordnet-base dict-gcide" in caplog.text
