"""The root-overhead benchmark end to end at a tiny size: real builds, leaves, root, JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.docs import REQUIRED
from benchmarks.root_overhead import main, report


def test_one_and_two_leaves_write_complete_lines_and_a_table(tmp_path: Path) -> None:
    out = tmp_path / "root_overhead.jsonl"
    argv = ["run", "--nb", "3000", "--nq", "20", "--repeats", "1", "--warmup", "2"]
    assert (
        main([*argv, "--shards", "1,2", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["shards"] for r in rows] == [1, 2]
    first = rows[0]
    for r in rows:
        assert set(REQUIRED) <= r.keys() and r["command"].startswith("python -m benchmarks.root")
        assert r["calls"] == 20 and r["nb"] == 3000 and r["d"] == 384
        assert (r["nprobe"], r["k_factor"], r["factory"]) == (
            first["nprobe"],
            first["k_factor"],
            first["factory"],
        )  # every shard count searches alike
        assert 0.5 < r["recall_at_k"] <= 1.0
        assert 0 < r["leaf0_p50_ms"] <= r["leaf0_p99_ms"]
        assert r["slowest_leaf_p50_ms"] >= r["leaf0_p50_ms"]  # the max over leaves, per query
        assert r["added_p50_ms"] == round(r["root_p50_ms"] - r["fanout_p50_ms"], 3)
        assert r["root_cpu_ms_per_call"] > 0
    table = report(out).splitlines()
    assert len(table) == 2 + len(rows) and table[2].startswith("| 1 |")
