"""Output of ``benchmarks.load``: one JSON line per load level, a table, a latency/QPS plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.provenance import provenance

if TYPE_CHECKING:
    from benchmarks.load import LoadResult


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def record(result: LoadResult, *, command: str = "", **extra: Any) -> dict[str, Any]:
    """One JSON line: the run, what it achieved, and where, when and by which command it ran."""
    run = asdict(result.run)
    return {
        "benchmark": "load",
        "kind": "level",
        "name": "bare-grpc-load" if extra.get("server") == "bare" else "adindex-grpc-load",
        **{
            k: run[k] for k in ("mode", "clients", "procs", "k", "nprobe", "duration_s", "warmup_s")
        },
        "offered_qps": result.run.rate_qps or None,
        "qps": round(result.qps, 1),
        "p50_ms": round(result.p50_ms, 3),
        "p95_ms": round(result.p95_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "ok": result.ok,
        "errors": result.errors,
        "client_cpu_ms": _round(result.client_cpu_ms),
        "server_cpu_ms": _round(result.server_cpu_ms),
        **extra,
        **provenance(command or "(from Python: benchmarks.load_report.record)"),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = f"{'setting':>8} {'mode':>8} {'clients':>7} {'offered':>8} {'qps':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'R@k':>6} {'cpu/call ms: client':>19} {'server':>6}  errors"
    lines = [head]
    for r in rows:
        offered = f"{r['offered_qps']:.0f}" if r["offered_qps"] else "-"
        recall = f"{r['recall_at_k']:.3f}" if r.get("recall_at_k") is not None else "-"
        client, server = (
            "-" if r.get(f) is None else f"{r[f]:.2f}" for f in ("client_cpu_ms", "server_cpu_ms")
        )
        lines.append(
            f"{_setting(r):>8} {r['mode']:>8} {r['clients']:>7} {offered:>8} {r['qps']:>8.0f} "
            f"{r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} {r['p99_ms']:>7.2f} {recall:>6} "
            f"{client:>19} {server:>6}  {r['errors'] or ''}"
        )
    return "\n".join(lines)


def _setting(row: dict[str, Any]) -> str:
    """``on``/``off`` (batching), plus ``/aN`` when lone-search threads were compared."""
    return str(row.get("setting", row["batching"]))


def setting_label(setting: str) -> str:
    """A setting name spelled out for legends and doc tables: ``[LABEL:]off[/a2]`` (adindex:
    batching, lone-search threads) or ``bare[/t2][/p2]`` (OpenMP threads, processes)."""
    code, _, rest = setting.rpartition(":")
    first, *options = rest.split("/")
    words = {"a": "alone threads {}", "t": "{} OpenMP threads", "p": "{} processes"}
    label = "bare server" if first == "bare" else f"batching {first}"
    label += "".join(f", {words[o[0]].format(o[1:])}" for o in options if o[:1] in words)
    return f"{code}: {label}" if code else label


def _mean(rounds: Sequence[dict[str, Any]], field: str) -> float:
    return sum(float(r[field]) for r in rounds) / len(rounds)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """p50 and p99 latency against achieved QPS, one curve per batching setting and mode.

    One point per load level: the mean over its ``--rounds`` (the table keeps every round).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (setting, mode), group in _groups(rows).items():
        levels: dict[tuple[int, float], list[dict[str, Any]]] = {}
        for r in group:
            levels.setdefault((r["clients"], r["offered_qps"] or 0.0), []).append(r)
        points = [levels[key] for key in sorted(levels)]  # by load
        qps = [_mean(p, "qps") for p in points]
        line = ax.plot(
            qps,
            [_mean(p, "p99_ms") for p in points],
            marker="o",
            label=f"{setting_label(setting)}, {mode}: p99",
        )
        ax.plot(
            qps,
            [_mean(p, "p50_ms") for p in points],
            marker=".",
            linestyle="--",
            color=line[0].get_color(),
            label=f"{setting_label(setting)}, {mode}: p50",
        )
    ax.set_xlabel("achieved Retrieve calls/s")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    first = rows[0]
    loads = [r["load_avg_1m"] for r in rows if r.get("load_avg_1m") is not None]
    load = f", load avg {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    ax.set_title(
        f"adindex gRPC, {first.get('index_key', '')}, nb={first.get('nb', '?')}, k={first['k']}, "
        f"{first['machine']['cores']} cores{load}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((_setting(r), r["mode"]), []).append(r)
    return out
