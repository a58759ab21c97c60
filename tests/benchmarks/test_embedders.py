"""benchmarks.embedders: the doc table is the rendering of the committed results."""

from __future__ import annotations

from pathlib import Path

from benchmarks.embedders import (
    TABLE_BEGIN,
    TABLE_END,
    TOLERANCE,
    latest_run,
    read_jsonl,
    render,
)

ROOT = Path(__file__).resolve().parents[2]


def test_doc_table_matches_committed_results() -> None:
    rows = latest_run(read_jsonl(ROOT / "docs/results/embedders.jsonl"))
    doc = (ROOT / "docs/embedders.md").read_text(encoding="utf-8")
    block = doc.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0]
    assert block.strip() == render(rows).strip(), "run: python -m benchmarks.embedders --render"


def test_committed_rows_are_complete_and_judged_against_torch() -> None:
    rows = latest_run(read_jsonl(ROOT / "docs/results/embedders.jsonl"))
    assert len(rows) == 24
    assert {(r["backend"], r["quantize"]) for r in rows} == {
        ("torch", "none"),
        ("onnx", "none"),
        ("onnx", "int8"),
    }
    for r in rows:
        deltas = r["delta_vs_reference"]
        assert r["qualifies"] == all(abs(d) <= TOLERANCE for d in deltas.values())
        assert len(r["texts_per_s_rounds"]) == r["rounds"] >= 3
        assert 0.9 < r["cos_to_torch_fp32_min"] <= r["cos_to_torch_fp32_mean"] <= 1.0 + 1e-5
