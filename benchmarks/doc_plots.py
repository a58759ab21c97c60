"""Plots for ``<!-- plot: NAME ... -->`` markers: rows of docs/results/*.jsonl -> docs/img/NAME.png.

A plot function is ``(rows, spec, path) -> None``; register it in ``PLOTS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import load_report, report
from benchmarks.doc_views import Row, Spec


def _title(rows: Sequence[Row]) -> str:
    r = rows[0]
    loads = [float(x["load_avg_1m"]) for x in rows if x.get("load_avg_1m") is not None]
    load = f"load avg {min(loads):.1f}-{max(loads):.1f}" if loads else "load not recorded"
    return (f"{r['dataset']}: {r['nb']:,} x {r['d']}, k={r.get('k')}; "
            f"git {r['git_sha'] or 'not recorded'}, {load}")  # fmt: skip


def recall_vs_p50(rows: Sequence[Row], spec: Spec, path: Path) -> None:
    points = [r for r in rows if r.get("kind") == "point"]
    report.plot_recall(points, "p50_ms", path, _title(points))


def recall_vs_qps(rows: Sequence[Row], spec: Spec, path: Path) -> None:
    points = [r for r in rows if r.get("kind") == "point"]
    report.plot_recall(points, "qps", path, _title(points))


def load_latency(rows: Sequence[Row], spec: Spec, path: Path) -> None:
    load_report.plot([r for r in rows if r.get("benchmark") == "load"], path)


PLOTS: dict[str, Callable[[Sequence[Row], Spec, Path], None]] = {
    "recall-vs-p50": recall_vs_p50,
    "recall-vs-qps": recall_vs_qps,
    "load-latency": load_latency,
}
