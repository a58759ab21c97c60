"""Views: how ``python -m benchmarks.docs`` renders rows of docs/results/*.jsonl as Markdown.

A view is a function ``(rows, spec) -> str``: the rows the marker selected (``source=``,
``where=``) and the marker itself (its other attributes). Register a new one in ``VIEWS`` (or,
for a feature doc's table, in ``doc_views_features.VIEWS``); the generic ``rows`` view
(``columns=``) needs no code at all. Every view shows the threads each row used. Plots are in
``doc_plots``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import load_report, report
from benchmarks.datasets import REAL_MINILM_STATS

Row = dict[str, Any]


class DocsError(ValueError):
    """A marker or a results file the generator cannot use; the message names it."""


@dataclass(frozen=True)
class Spec:
    """One marker: ``<!-- table: ID key=value ... -->`` (or ``plot:``, ``value:``)."""

    kind: str
    id: str
    attrs: dict[str, list[str]] = field(default_factory=dict)
    where: str = ""  # "docs/x.md:12", for messages

    def get(self, key: str, default: str | None = None) -> str | None:
        values = self.attrs.get(key)
        return values[-1] if values else default

    def number(self, key: str, default: float) -> float:
        text = self.get(key)
        try:
            return default if text is None else float(text)
        except ValueError:
            raise DocsError(f"{self.where}: {key}={text!r} is not a number") from None


def lookup(row: Row, path: str) -> Any:
    """``row["a"]["b"]`` for ``"a.b"`` (``"a.0"``: a list's first item); None when any step is
    missing."""
    value: Any = row
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def canonical(value: Any) -> str:
    """The text a ``where=`` filter compares: JSON-like, integral floats without ``.0``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def fmt(value: Any, spec: str = "") -> str:
    """A cell: ``-`` for missing or NaN, else ``format(value, spec)``; ``code`` wraps in backticks."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if spec == "code":
        return f"`{value}`"
    if spec and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def table(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] = ()) -> str:
    """A Markdown table; ``right[i]`` right-aligns column i (numbers)."""
    align = [("---:" if i < len(right) and right[i] else "---") for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


# -- threads --------------------------------------------------------------------------------------


def threads_cell(row: Row) -> str:
    """The threads a row used, as one short cell (the row's ``threads.how`` says more)."""
    t = row.get("threads")
    if t is None:
        return "not recorded"
    if not isinstance(t, dict):
        return fmt(t)
    if row.get("benchmark") == "load":
        alone = t.get("alone")
        search = f"{t.get('search', 1)}" + (f" ({alone} alone)" if alone and alone > 1 else "")
        batch = f", batch {t['batch']}" if t.get("batch") else ""
        workers = f", {t['workers']} workers" if t.get("workers") else ""
        procs = t.get("server_processes") or 1
        return f"search {search}{batch}{workers}" + (f" x {procs} processes" if procs > 1 else "")
    if "server_omp" in t:  # a server at ServerConfig's thread counts, and its clients
        alone = f" ({t['server_alone_omp']} alone)" if t.get("server_alone_omp") else ""
        clients = (
            f", {t['clients']} client{'s' if t['clients'] > 1 else ''}" if "clients" in t else ""
        )
        return f"search {t['server_omp']}{alone}{clients}"
    if "single" in t and "qps" in t:
        return f"{t['single']} / {t['qps']}"
    if "single" in t:
        return str(t["single"])
    return ", ".join(f"{k} {v}" for k, v in t.items() if k != "how")


# -- recall_latency -------------------------------------------------------------------------------


def _points(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.get("benchmark") == "recall_latency" and r.get("kind") == "point"]


def _params(r: Row) -> str:
    return " ".join(f"{k}={v}" for k, v in r.get("params", {}).items() if k != "default") or "-"


def points_view(rows: Sequence[Row], spec: Spec) -> str:
    """Operating points: system, index, parameters, recall, latency, QPS, build, memory, threads."""
    head = ["system", "index_key", "params", "R@10", "R@100", "p50 ms", "p99 ms",
            "1-query QPS", "QPS", "threads (1-query / QPS)", "build s", "index MB", "RSS MB"]  # fmt: skip
    body = [
        [r["name"], fmt(r["index_key"], "code"), _params(r), fmt(r["recall_at_10"], ".4f"),
         fmt(r["recall_at_100"], ".4f"), fmt(r["p50_ms"], ".3f"), fmt(r["p99_ms"], ".3f"),
         fmt(r["single_qps"], ",.0f"), fmt(r["qps"], ",.0f"), threads_cell(r),
         fmt(r["build_s"], ".1f"), fmt(r["index_bytes"] / 2**20, ".1f"), fmt(r["rss_mb"], ",.0f")]
        for r in _points(rows)
    ]  # fmt: skip
    return table(head, body, [False] * 3 + [True] * 6 + [False] + [True] * 3)


def cheapest_view(rows: Sequence[Row], spec: Spec) -> str:
    """Per system, its lowest-p50 point reaching ``min_recall`` (recall@100), in ``order``."""
    min_recall = spec.number("min_recall", 0.95)
    points = _points(rows)
    names = list(dict.fromkeys(r["name"] for r in points))
    order = spec.get("order")
    if order:
        names = [n for n in order.split(",") if n in names] + [n for n in names if n not in order]
    head = ["system", "operating point", "R@100", "p50 ms", "p99 ms", "1-query QPS",
            "threads (1-query / QPS)", "index MB", "build s"]  # fmt: skip
    body = []
    for name in names:
        mine = [r for r in points if r["name"] == name]
        ok = [r for r in mine if (r.get("recall_at_100") or 0.0) >= min_recall]
        r = min(ok, key=lambda r: r["p50_ms"]) if ok else max(mine, key=report._recall)
        params = "" if _params(r) == "-" else f" {_params(r)}"
        point = f"`{r['index_key']}`{params}" + ("" if ok else f" (best; never {min_recall})")
        body.append([name, point, fmt(r["recall_at_100"], ".4f"), fmt(r["p50_ms"], ".3f"),
                     fmt(r["p99_ms"], ".3f"), fmt(r["single_qps"], ",.0f"), threads_cell(r),
                     fmt(r["index_bytes"] / 2**20, ",.0f"), fmt(r["build_s"], ".1f")])  # fmt: skip
    return table(head, body, [False, False, True, True, True, True, False, True, True])


def targets_view(rows: Sequence[Row], spec: Spec) -> str:
    """The issue's targets as MET / MISSED lines (``benchmarks.report.targets``)."""
    lines = report.targets(_points(rows), min_recall=spec.number("min_recall", 0.95))
    rel = [r for r in rows if r.get("kind") == "relevance" and r.get("default")]
    for r in rel:
        ok = r["ndcg_ratio"] >= 0.99
        lines.append(f"{'MET' if ok else 'MISSED'} ESCI NDCG@10 through the index >= 0.99 x exact: "
                     f"{r['ndcg_ratio']:.4f} x exact at the default nprobe {r['nprobe']} "
                     f"({r['index_key']})")  # fmt: skip
    return "\n".join(f"- {line}" for line in lines)


def run_view(rows: Sequence[Row], spec: Spec) -> str:
    """What one run measured, in one sentence per run (its ``kind: run`` row)."""
    out = []
    for r in (r for r in rows if r.get("kind") == "run"):
        m = r["machine"]
        out.append(
            f"{r['dataset']}: {r['nb']:,} base vectors x {r['d']}, recall and latency on "
            f"{r['nq']:,} queries, k={r['k']}; git `{r['git_sha']}`, {r['time_utc'][:10]}; "
            f"{m.get('cpu')}, {m.get('cores')} cores; load average {r['load_avg_start']:.2f} at "
            f"the start, {r['load_avg_end']:.2f} at the end; wall time {r['wall_s']:,.0f} s."
        )
    return "\n\n".join(out)


def relevance_view(rows: Sequence[Row], spec: Spec) -> str:
    """ESCI relevance through the index by nprobe, against exact search."""
    rel = [r for r in rows if r.get("kind") == "relevance"]
    head = ["search", "NDCG@10", "/ exact", "relevant recall@10", "relevant recall@k"]
    body = []
    for r in rel:
        name = "exact (Flat)" if r["search"] == "exact" else f"adindex nprobe={r['nprobe']}"
        name += " (the build's default)" if r.get("default") else ""
        body.append([name, fmt(r["ndcg_at_10"], ".4f"), fmt(r["ndcg_ratio"], ".4f"),
                     fmt(r["relevant_recall_at_10"], ".4f"), fmt(r["relevant_recall_at_k"], ".4f")])  # fmt: skip
    return table(head, body, [False, True, True, True, True])


def stats_view(rows: Sequence[Row], spec: Spec) -> str:
    """Neighbour statistics per dataset, beside the real all-MiniLM-L6-v2 measurement."""
    stats = [r for r in rows if r.get("kind") == "neighbour_stats"]
    head = ["statistic", "real MiniLM titles (`REAL_MINILM_STATS`)"]
    head += [f"{r['dataset']} ({r.get('nlist', '?'):,} lists)" for r in stats]
    # (recall_latency rows carry the statistics at the top level, benchmarks.datasets under "stats")
    body = [[key, f"{real:.2f}", *(fmt(r.get("stats", r).get(key), ".3f") for r in stats)]
            for key, real in REAL_MINILM_STATS.items()]  # fmt: skip
    return table(head, body, [False] + [True] * (len(head) - 1))


# -- load, serving ceiling, filtered ----------------------------------------------------------------


def _level(r: Row) -> str:
    if r["mode"] == "rate":
        return f"{canonical(r['offered_qps'])} calls/s offered"
    return f"{r['clients']} client{'s' if r['clients'] > 1 else ''}"


def load_view(rows: Sequence[Row], spec: Spec) -> str:
    """Load levels: per level and server setting, every round's calls/s, p50 / p99, CPU per call."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in (r for r in rows if r.get("benchmark") == "load"):
        groups[(_level(r), str(r.get("setting", r.get("batching"))))].append(r)
    head = ["level", "setting", "calls/s", "p50 / p99 ms", "CPU ms/call: client + server",
            f"recall@{rows[0].get('k', 'k') if rows else 'k'}", "threads", "errors"]  # fmt: skip
    body = []
    for (level, setting), rs in groups.items():
        cpu = ", ".join(
            f"{fmt(r['client_cpu_ms'], '.2f')} + {fmt(r['server_cpu_ms'], '.2f')}" for r in rs
        )
        errors = sum(sum(r.get("errors", {}).values()) for r in rs)
        body.append([level, _setting(setting), ", ".join(fmt(r["qps"], ",.0f") for r in rs),
                     ", ".join(f"{fmt(r['p50_ms'], '.2f')} / {fmt(r['p99_ms'], '.2f')}" for r in rs),
                     cpu, fmt(rs[0].get("recall_at_k"), ".3f"), threads_cell(rs[0]), str(errors)])  # fmt: skip
    return table(head, body, [False, False, True, True, True, True, False, True])


def load_targets_view(rows: Sequence[Row], spec: Spec) -> str:
    """The serving targets per server setting, MET / MISSED with the measured range: calls/s
    and p99 at ``clients`` (16) concurrent clients, a single client's p99, recall@k."""
    clients, min_qps = int(spec.number("clients", 16)), spec.number("min_qps", 1500)
    max_p99, single_p99 = spec.number("max_p99_ms", 25), spec.number("single_p99_ms", 4)
    min_recall = spec.number("min_recall", 0.95)
    by_setting: dict[str, list[Row]] = defaultdict(list)
    for r in (r for r in rows if r.get("benchmark") == "load" and r["mode"] == "saturate"):
        by_setting[str(r.get("setting", r.get("batching")))].append(r)

    def span(values: Sequence[float], form: str) -> str:
        lo, hi = format(min(values), form), format(max(values), form)
        return lo if lo == hi else f"{lo}-{hi}"

    lines = []
    for setting, rs in by_setting.items():
        many = [r for r in rs if r["clients"] == clients]
        one = [r for r in rs if r["clients"] == 1]
        if many:
            qps, p99 = [r["qps"] for r in many], [r["p99_ms"] for r in many]
            ok = min(qps) >= min_qps and max(p99) <= max_p99
            lines.append(f"{'MET' if ok else 'MISSED'} ({_setting(setting)}) {clients} clients "
                         f">= {min_qps:,.0f} calls/s at p99 <= {max_p99:g} ms: {span(qps, ',.0f')} "
                         f"calls/s at p99 {span(p99, '.1f')} ms ({len(many)} rounds)")  # fmt: skip
        if one:
            p99 = [r["p99_ms"] for r in one]
            lines.append(f"{'MET' if max(p99) <= single_p99 else 'MISSED'} ({_setting(setting)}) "
                         f"a single client's p99 <= {single_p99:g} ms: {span(p99, '.2f')} ms "
                         f"({len(one)} rounds)")  # fmt: skip
        recall = [r["recall_at_k"] for r in rs if r.get("recall_at_k") is not None]
        if recall:
            lines.append(f"{'MET' if min(recall) >= min_recall else 'MISSED'} ({_setting(setting)}) "
                         f"recall@{rs[0]['k']} >= {min_recall:g} through the server: {span(recall, '.3f')}")  # fmt: skip
    return "\n".join(f"- {line}" for line in lines)


def _setting(setting: str) -> str:
    return load_report.setting_label(setting)


def ceiling_view(rows: Sequence[Row], spec: Spec) -> str:
    """``serving_ceiling.py``: FAISS alone, the bare Python gRPC server, and the CPU budget."""
    body = []
    for r in rows:
        if r.get("kind") == "faiss-alone":
            k = r["k"]
            what = f"FAISS alone, `{r['factory']}` nprobe {r['nprobe']} (recall@{k} {r[f'recall_at_{k}']:.3f})"
            body += [
                [what, "CPU per single query, 1 thread", f"{r['cpu_ms_per_query_single']:.3f} ms"],
                [what, "CPU per query in batches of 16, 1 thread", f"{r['cpu_ms_per_query_batch16']:.3f} ms"],
                *[[what, f"lone query on {n} thread(s): p50 / p99",
                   f"{r[f'lone_p50_ms_{n}_threads']:.3f} / {r[f'lone_p99_ms_{n}_threads']:.3f} ms"]
                  for n in r["threads"]["lone"]],
                [what, f"one single-query search per core ({r['cores']} cores)",
                 f"{r['qps_one_search_per_core']:,} queries/s"],
            ]  # fmt: skip
        elif r.get("kind") == "bare-server":
            what = f"bare Python gRPC Retrieve server, {r['workers']} workers"
            body.append([what, f"{r['clients']} client(s): calls/s, p50; CPU ms/call server + client",
                         f"{r['qps']:,}, {r['p50_ms']:.2f} ms; {fmt(r['server_cpu_ms'], '.3f')} + {r['client_cpu_ms']:.3f}"])  # fmt: skip
        elif r.get("kind") == "budget":
            body.append(["budget", f"CPU per call available at {r['target_qps']:,.0f} calls/s; floor "
                         f"({r['floor_parts']})", f"{r['cpu_ms_per_call_available']:.3f} ms; "
                         f"{r['cpu_ms_per_call_floor']:.3f} ms"])  # fmt: skip
            body.append(["budget", "calls/s at the floor; with the clients on other machines",
                         f"{r['max_qps_at_floor']:,}; {r['max_qps_clients_elsewhere']:,}"])  # fmt: skip
    return table(["part", "measured", "value"], body)


def filtered_view(rows: Sequence[Row], spec: Spec) -> str:
    """Filtered retrieval by selectivity and plan mode (``benchmarks.filtered``)."""
    sel = [r for r in rows if r.get("kind") == "selectivity"]
    k = sel[0]["k"] if sel else "k"
    head = ["country", "selectivity", "eligible", "mode", "plan", "nprobe", f"recall@{k}",
            "p50 ms", "p99 ms", "threads"]  # fmt: skip
    body = [[r["country"] or "-", f"{r['selectivity']:.4f}", f"{r['eligible']:,}", r["mode"],
             r["plan"], str(r["nprobe"]), f"{r['recall_at_k']:.4f}", f"{r['p50_ms']:.3f}",
             f"{r['p99_ms']:.3f}", threads_cell(r)] for r in sel]  # fmt: skip
    return table(head, body, [False, True, True, False, False, True, True, True, True, False])


def crossover_view(rows: Sequence[Row], spec: Spec) -> str:
    """Per filter: the exact scan's p50 against the widened IVF plan's, and what the default
    planner chose (``benchmarks.filtered`` rows)."""
    by: dict[str, dict[str, Row]] = defaultdict(dict)
    for r in (r for r in rows if r.get("kind") == "selectivity" and r["country"]):
        by[r["country"]][r["mode"]] = r
    head = ["country", "eligible", "IVF p50 ms", "exact p50 ms", "exact / IVF", "faster",
            "default plan", "threads"]  # fmt: skip
    body = []
    for modes in by.values():
        ivf, exact, default = modes.get("ivf"), modes.get("exact"), modes.get("default")
        if not (ivf and exact):
            continue
        ratio = exact["p50_ms"] / ivf["p50_ms"]
        body.append([ivf["country"], f"{ivf['eligible']:,}", f"{ivf['p50_ms']:.3f}",
                     f"{exact['p50_ms']:.3f}", f"{ratio:.2f}x", "exact" if ratio < 1 else "ivf",
                     default["plan"] if default else "-", threads_cell(ivf)])  # fmt: skip
    return table(head, body, [False, True, True, True, True, False, False, False])


def pause_view(rows: Sequence[Row], spec: Spec) -> str:
    """The pause run of ``benchmarks.filtered``: leaks after the reply, and the call's latency."""
    head = [
        "pauses",
        "paused ads returned after the reply",
        "pause call p50 ms",
        "p99 ms",
        "threads",
    ]
    body = [[str(r["pauses"]), str(r["paused_ads_returned_after_reply"]),
             f"{r['pause_call_p50_ms']:.2f}", f"{r['pause_call_p99_ms']:.2f}", threads_cell(r)]
            for r in rows if r.get("kind") == "pause"]  # fmt: skip
    return table(head, body, [True, True, True, True, False])


# -- generic ----------------------------------------------------------------------------------------


def rows_view(rows: Sequence[Row], spec: Spec) -> str:
    """Any rows: ``columns="path[:format][=Header]; ..."`` (dotted paths; format as in
    ``format()``, or ``code``); a ``threads`` column is added unless one is listed."""
    text = spec.get("columns")
    if not text:
        raise DocsError(f'{spec.where}: view=rows needs columns="path[:format][=Header]; ..."')
    cols = []
    for item in (c.strip() for c in text.split(";") if c.strip()):
        item, _, header = item.partition("=")
        path, _, form = item.partition(":")
        cols.append((path, form, header or path))
    if not any(path == "threads" for path, _, _ in cols):
        cols.append(("threads", "", "threads"))
    body = [[threads_cell(r) if path == "threads" else fmt(lookup(r, path), form)
             for path, form, _ in cols] for r in rows]  # fmt: skip
    numeric = [bool(form) and form != "code" for _, form, _ in cols]
    return table([h for _, _, h in cols], body, numeric)


View = Callable[[Sequence[Row], Spec], str]

VIEWS: dict[str, View] = {
    "points": points_view,
    "cheapest": cheapest_view,
    "targets": targets_view,
    "run": run_view,
    "relevance": relevance_view,
    "neighbour-stats": stats_view,
    "load": load_view,
    "load-targets": load_targets_view,
    "ceiling": ceiling_view,
    "filtered": filtered_view,
    "crossover": crossover_view,
    "pause": pause_view,
    "rows": rows_view,
}
