"""benchmarks.embedders: self-describing rows, judged against torch fp32 in the same round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.doc_views import Spec
from benchmarks.doc_views_features import embedders_view, speedup_rounds
from benchmarks.docs import REQUIRED
from benchmarks.embedders import TOLERANCE, EmbedBenchConfig, Texts, _records, variants

ROOT = Path(__file__).resolve().parents[2]


def test_committed_rows_are_complete_and_judged_against_torch() -> None:
    text = (ROOT / "docs/results/embedders.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 24
    assert {(r["backend"], r["quantize"]) for r in rows} == {
        ("torch", "none"),
        ("onnx", "none"),
        ("onnx", "int8"),
    }
    for r in rows:
        assert set(REQUIRED) <= r.keys()
        deltas = r["delta_vs_reference"]
        assert r["qualifies"] == all(abs(d) <= TOLERANCE for d in deltas.values())
        assert len(r["texts_per_s_rounds"]) == r["rounds"] >= 3
        assert 0.9 < r["cos_to_torch_fp32_min"] <= r["cos_to_torch_fp32_mean"] <= 1.0 + 1e-5


def test_rows_describe_themselves_and_the_view_renders_them() -> None:
    """The writer's records from made-up timings and vectors (no model is run)."""
    cfg = EmbedBenchConfig(n_ads=4, rounds=2, threads=(1,), batch_sizes=(32,), command="cmd")
    vs = variants(cfg)  # torch, onnx, onnx int8 x sorted, unsorted
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    texts = Texts(timed=[f"t{i}" for i in range(6)], n_ads=4)
    seconds = {v.key: [1.0, 2.0] if v.backend == "torch" else [0.5, 0.5] for v in vs}
    rows = _records(cfg, vs, texts, seconds, {v.key: x for v in vs}, {}, (1.0, 1.0, 1.0))
    for r in rows:
        assert set(REQUIRED) <= r.keys() and r["command"] == "cmd"
        assert (r["nb"], r["d"], r["threads"]["embed"]) == (6, 8, 1)
    onnx = next(r for r in rows if r["backend"] == "onnx" and r["order"] == "sorted")
    torch = next(r for r in rows if r["backend"] == "torch" and r["order"] == "sorted")
    # per-round ratios 2 and 4: their median, 3, not the ratio of the medians (12 / 4.5)
    assert speedup_rounds(onnx, torch) == onnx["speedup_vs_torch_same_setting"] == 3.0
    table = embedders_view(rows, Spec("table", "t"))
    assert "| onnx fp32 | 1 | 32 | sorted | 12.0 | 12 / 12 | 3.00x | 2.00 / 4.00 |" in table
