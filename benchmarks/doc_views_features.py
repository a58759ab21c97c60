"""Views for the feature docs' tables (docs/embedders.md, docs/serving.md's recall control,
sharded serving and server cost against a bare server, docs/index-parameters.md 3.7-3.8): tables that group rows, compute medians of
per-round ratios, or pair p50 / p99, which the generic ``rows`` view cannot.

Registered in ``VIEWS`` here; ``benchmarks.docs`` merges them with ``benchmarks.doc_views.VIEWS``.
A writer may print its own table with the same view (one renderer for docs and terminal).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks.doc_views import DocsError, Row, Spec, View, fmt, table, threads_cell

# -- embedders (benchmarks/embedders.py) -------------------------------------------------------------


def speedup_rounds(row: Row, torch_row: Row) -> float:
    """Median over rounds of the row's texts/s over torch's in the same round and setting.

    Within a round the two ran back to back, so their ratio cancels most of the load that other
    work on the machine put on both; a ratio of medians from different rounds would not.
    """
    return round(float(statistics.median(round_ratios(row, torch_row))), 2)


def round_ratios(row: Row, torch_row: Row) -> list[float]:
    pairs = zip(row["texts_per_s_rounds"], torch_row["texts_per_s_rounds"], strict=True)
    return [a / b for a, b in pairs]


def torch_twin(rows: Iterable[Row], r: Row) -> Row | None:
    """The torch fp32 row of the same setting (threads, batch size, order) as ``r``."""
    for t in rows:
        same = all(t[k] == r[k] for k in ("threads", "batch_size", "order"))
        if same and t["backend"] == "torch" and t["quantize"] == "none":
            return t
    return None


def _embed_threads(r: Row) -> str:
    t = r.get("threads")
    return str(t.get("embed")) if isinstance(t, dict) else threads_cell(r)


def embedders_view(rows: Sequence[Row], spec: Spec) -> str:
    """One line per variant, fastest first: texts/s (median round, every round), speed-up over
    torch fp32 in the same setting (median of per-round ratios, and each round's), ESCI
    relevance and its change against the reference, cosine to torch fp32, qualifies."""
    rows = [r for r in rows if r.get("benchmark") == "embedders"]
    head = ["embedder", "threads", "batch", "order", "texts/s (median)", "texts/s by round",
            "vs torch fp32, same setting", "ratio by round", "NDCG@10", "R@10 (grade>=2)",
            "R@100", "Δ vs reference: NDCG@10 / R@10 / R@100", "cos to torch fp32 mean / min",
            "qualifies"]  # fmt: skip
    body = []
    for r in sorted(rows, key=lambda r: -r["texts_per_s"]):
        twin = torch_twin(rows, r)
        delta = r.get("delta_vs_reference") or {}
        body.append([
            f"{r['backend']} {'fp32' if r['quantize'] == 'none' else r['quantize']}",
            _embed_threads(r), str(r["batch_size"]), r["order"], fmt(r["texts_per_s"], ".1f"),
            " / ".join(f"{x:.0f}" for x in r["texts_per_s_rounds"]),
            f"{speedup_rounds(r, twin):.2f}x" if twin else "-",
            " / ".join(f"{x:.2f}" for x in round_ratios(r, twin)) if twin else "-",
            fmt(r.get("ndcg_at_10"), ".4f"), fmt(r.get("recall_at_10"), ".4f"),
            fmt(r.get("recall_at_100"), ".4f"),
            " / ".join(fmt(delta.get(m), "+.4f") for m in ("ndcg_at_10", "recall_at_10", "recall_at_100")),
            f"{r['cos_to_torch_fp32_mean']:.4f} / {r['cos_to_torch_fp32_min']:.4f}",
            "yes" if r.get("qualifies") else "no",
        ])  # fmt: skip
    out = table(head, body, [False, True, True, False, True, True, True, True, True, True, True])
    if rows:
        first = rows[0]
        out += (f"\n\n{first['dataset']}; {first['rounds']} interleaved rounds; reference: "
                f"{first['reference']}.")  # fmt: skip
    return out


def _setting(r: Row) -> str:
    return f"threads {_embed_threads(r)}, batch {r['batch_size']}, {r['order']}"


def _span(values: Sequence[float], form: str) -> str:
    lo, hi = format(min(values), form), format(max(values), form)
    return lo if lo == hi else f"{lo} to {hi}"


def embedders_summary_view(rows: Sequence[Row], spec: Spec) -> str:
    """Per backend and precision other than torch fp32, one line over all its settings: how many
    qualify, its speed-up over torch fp32 (all settings, sorted ones, the reference setting with
    each round's ratio), its cosine to torch fp32, and the range of its relevance changes."""
    rows = [r for r in rows if r.get("benchmark") == "embedders"]
    ref = next((r for r in rows if r["name"] == r.get("reference")), None)
    lines = []
    for key in dict.fromkeys((r["backend"], r["quantize"]) for r in rows):
        if key == ("torch", "none"):
            continue
        mine = [r for r in rows if (r["backend"], r["quantize"]) == key]
        pairs = [(r, t) for r in mine if (t := torch_twin(rows, r))]
        ratios = [speedup_rounds(r, t) for r, t in pairs]
        ordered = [speedup_rounds(r, t) for r, t in pairs if r["order"] == "sorted"]
        at_ref = [(r, t) for r, t in pairs if ref and t is ref]
        name = f"{key[0]} {'fp32' if key[1] == 'none' else key[1]}"
        line = (f"**{name}**: qualifies in {sum(bool(r.get('qualifies')) for r in mine)} of "
                f"{len(mine)} settings; speed-up over torch fp32 in the same setting (median of "
                f"per-round ratios) {_span(ratios, '.2f')}x, sorted settings {_span(ordered, '.2f')}x")  # fmt: skip
        for r, t in at_ref:
            rounds = " / ".join(f"{x:.2f}" for x in round_ratios(r, t))
            line += f", {speedup_rounds(r, t):.2f}x in the reference setting ({_setting(r)}; rounds {rounds})"
        line += (f"; cosine to torch fp32 mean {_span([r['cos_to_torch_fp32_mean'] for r in mine], '.4f')}, "
                 f"min {min(r['cos_to_torch_fp32_min'] for r in mine):.4f}")  # fmt: skip
        deltas = [r["delta_vs_reference"] for r in mine if r.get("delta_vs_reference")]
        if deltas:
            line += "; change against the reference: " + ", ".join(
                f"{label} {_span([d[m] for d in deltas], '+.4f')}"
                for m, label in (("ndcg_at_10", "NDCG@10"), ("recall_at_10", "R@10"),
                                 ("recall_at_100", "R@100"))
            )  # fmt: skip
        lines.append(f"- {line}.")
    return "\n".join(lines)


# -- recall control (docs/experiments/recall_control.py) ----------------------------------------------


def _point(p: Sequence[Any]) -> str:
    return f"({p[0]}, {p[1]})"


def recall_control_view(rows: Sequence[Row], spec: Spec) -> str:
    """One line per server run (``kind=run``): the build's and the final point, every move, the
    first call answered at a point that holds the target, served recall, warm-up server CPU."""
    runs = [r for r in rows if r.get("kind") == "run"]
    target = runs[0]["target"] if runs else "the target"
    head = ["dataset", "control", "build point", "final point", "moves",
            f"calls until the point held {target}", "served recall@100 / @10",
            "warm-up server CPU s", "load avg", "label", "threads"]  # fmt: skip
    body = []
    for r in runs:
        moves = ", ".join(
            f"{m['direction']} to ({m['nprobe']}, {m['k_factor']})" for m in r["moves"]
        )
        reached = r["calls_until_served_point_holds_target"]
        body.append([
            f"{r['dataset']} {r['nb']} x {r['d']} `{r['factory']}`", r["control"],
            _point(r["build_point"]), _point(r["final_point"]), moves or "-",
            "never" if reached is None else str(reached),
            f"{r['served_recall_at_100']:.4f} / {r['served_recall_at_10']:.4f}",
            f"{r['warmup_server_cpu_s']:.2f}", fmt(r.get("load_avg_1m"), ".1f"), r["label"],
            threads_cell(r),
        ])  # fmt: skip
    return table(head, body, [False] * 5 + [True] * 4 + [False, False])


def exact_cost_view(rows: Sequence[Row], spec: Spec) -> str:
    """CPU time of shadow recall's exact pass (``kind=exact_cost``), per group and per query."""
    head = ["base vectors", "queries per group", "CPU s per group (each repeat)",
            "CPU ms per query (median)", "threads"]  # fmt: skip
    body = []
    for r in (r for r in rows if r.get("kind") == "exact_cost"):
        per_query = 1e3 * statistics.median(r["cpu_s_per_group"]) / r["group"]
        body.append([f"{r['nb']:,} x {r['d']}", str(r["group"]),
                     ", ".join(f"{c:.3f}" for c in r["cpu_s_per_group"]), f"{per_query:.2f}",
                     threads_cell(r)])  # fmt: skip
    return table(head, body, [False, True, True, True, False])


# -- root overhead (benchmarks/root_overhead.py) ---------------------------------------------------


def _pair(r: Row, key: str, form: str = ".2f") -> str:
    return f"{format(r[f'{key}_p50_ms'], form)} / {format(r[f'{key}_p99_ms'], form)}"


def root_overhead_view(rows: Sequence[Row], spec: Spec) -> str:
    """Per shard count and run (by time): p50 / p99 of a leaf alone, the slowest leaf alone, all
    leaves from the client, through the root, what the root adds; its CPU per call, and the
    calls/s one core of such CPU serves."""
    head = ["leaves", "run (UTC)", "load avg", "recall@100", "one leaf alone",
            "slowest leaf alone", "all leaves at once, no root", "through the root", "root adds",
            "root CPU ms/call", "calls/s per root core", "threads"]  # fmt: skip
    body = []
    mine = [r for r in rows if r.get("benchmark") == "root_overhead"]
    for r in sorted(mine, key=lambda r: (r["shards"], r["time_utc"])):
        body.append([
            str(r["shards"]), r["time_utc"][5:16].replace("T", " "), fmt(r["load_avg_1m"], ".1f"),
            f"{r['recall_at_k']:.4f}", _pair(r, "leaf0"), _pair(r, "slowest_leaf"),
            _pair(r, "fanout"), _pair(r, "root"), _pair(r, "added", "+.2f"),
            f"{r['root_cpu_ms_per_call']:.2f}", f"{1e3 / r['root_cpu_ms_per_call']:,.0f}",
            threads_cell(r),
        ])  # fmt: skip
    return table(head, body, [True, False] + [True] * 9 + [False])


# -- recall estimates (docs/experiments/recall_estimates.py, tight_1m.py) ----------------------------


def _interval(mid: float, low: float, high: float) -> str:
    return f"{mid:.3f} [{low:.3f}, {high:.3f}]"


def recall_estimates_view(rows: Sequence[Row], spec: Spec) -> str:
    """Per catalog (``kind=compare``): the point a default build publishes, its estimate, what
    the real queries get there, and the point a build tuned on the real queries picks."""
    head = ["data", "default point", "estimate [interval]", "served to real queries",
            "estimate - served", "with `--queries` (real)", "p50 ms: default point / with `--queries`",
            "threads"]  # fmt: skip
    body = []
    for r in (r for r in rows if r.get("kind") == "compare"):
        own = r["with_real_queries"]
        kf = f", k_factor {r['k_factor']}" if r["k_factor"] > 1 else ""
        own_kf = f", k_factor {own['k_factor']}" if own["k_factor"] > 1 else ""
        body.append([
            r["dataset"], f"nprobe {r['nprobe']}{kf}",
            _interval(r["estimate"], r["estimate_low"], r["estimate_high"]),
            _interval(r["served"], r["served_low"], r["served_high"]),
            f"{r['estimate_minus_served']:+.3f}",
            f"nprobe {own['nprobe']}{own_kf}: {own['recall']:.3f}",
            f"{own['default_p50_ms']:.3f} / {own['p50_ms']:.3f}", threads_cell(r),
        ])  # fmt: skip
    return table(head, body, [False, False, False, False, True, False, True, False])


def recall_grid_view(rows: Sequence[Row], spec: Spec) -> str:
    """Recall@100 by k_factor and nprobe from each row's ``field`` (a list of ``[k_factor,
    nprobe, recall]``, as a build's manifest curve or re-ranking probes): one line per row (its
    git sha) and k_factor, a column per nprobe (``nprobes=a,b,...`` picks them); with
    ``across=k_factor``, one line per row and nprobe, a column per k_factor."""
    path = spec.get("field") or "curve"
    across = spec.get("across") or "nprobe"
    if across not in ("nprobe", "k_factor"):
        raise DocsError(f"{spec.where}: across={across!r}: use nprobe or k_factor")
    flip = across == "k_factor"
    points = {}
    for r in rows:
        for kf, n, rec in r.get(path) or []:
            line, col = (n, kf) if flip else (kf, n)
            points[(r.get("git_sha"), line, col)] = rec
    wanted = spec.get("nprobes")
    cols = sorted({c for _, _, c in points})
    if wanted and not flip:
        cols = [int(n) for n in wanted.split(",")]
    name, other = ("k_factor", "nprobe") if flip else ("nprobe", "k_factor")
    head = ["git", other, *(f"{name} {c}" for c in cols), "threads"]
    body = []
    for r in rows:
        sha = r.get("git_sha")
        for line in sorted({ln for s, ln, _ in points if s == sha}):
            cells = [fmt(points.get((sha, line, c)), ".4f") for c in cols]
            body.append([fmt(sha, "code"), str(line), *cells, threads_cell(r)])
    return table(head, body, [False, True, *([True] * len(cols)), False])


# -- adindex against the bare server (benchmarks/load.py --bare) ---------------------------------


def _bare_pair(row: Row, bare: dict[tuple[int, int, int], Row]) -> Row | None:
    """The bare row of the same level and round whose searches used the same OpenMP threads: a
    lone adindex search (one client) runs on its ``alone`` threads, concurrent ones on one."""
    t = row.get("threads") or {}
    threads = (t.get("alone") or 1) if row["clients"] == 1 else (t.get("search") or 1)
    key = (row["clients"], row.get("round", 0))
    return bare.get((*key, threads)) or bare.get((*key, 1))


def load_vs_bare_view(rows: Sequence[Row], spec: Spec) -> str:
    """Each adindex setting against the bare server of the same run, round by round (the
    settings ran interleaved, so a pair shares the machine's load): server CPU per call above
    the bare server's (at most ``max_cpu_over_ms``), calls/s at ``clients`` concurrent clients
    as a share of the bare server's (at least ``min_share``), one client's p99 (at most
    ``single_p99_ms``) and its p99 over its p50 (at most ``max_tail``)."""
    clients = int(spec.number("clients", 16))
    max_over, min_share = spec.number("max_cpu_over_ms", 0.3), spec.number("min_share", 0.8)
    single_p99, max_tail = spec.number("single_p99_ms", 3), spec.number("max_tail", 2)
    load = [r for r in rows if r.get("benchmark") == "load" and r.get("mode") == "saturate"]
    bare = {
        (r["clients"], r.get("round", 0), (r.get("threads") or {}).get("search") or 1): r
        for r in load
        if r.get("server") == "bare"
    }
    if not bare:
        raise DocsError(f"{spec.where}: load-vs-bare needs rows of a bare server (--bare)")
    settings = dict.fromkeys(r["setting"] for r in load if r.get("server") != "bare")
    lines = []
    for setting in settings:
        mine = [r for r in load if r.get("setting") == setting]
        over: dict[int, list[float]] = {}
        for r in mine:
            b = _bare_pair(r, bare)
            if b and r.get("server_cpu_ms") is not None and b.get("server_cpu_ms") is not None:
                over.setdefault(r["clients"], []).append(r["server_cpu_ms"] - b["server_cpu_ms"])
        if over:
            worst = max(v for vs in over.values() for v in vs)
            per = "; ".join(
                f"{n} client{'s' if n > 1 else ''} {_span(vs, '+.2f')} ms"
                for n, vs in sorted(over.items())
            )
            lines.append(f"{'MET' if worst <= max_over else 'MISSED'} ({setting}) server CPU per "
                         f"call at most {max_over:g} ms above the bare server's: {per}")  # fmt: skip
        many = [(r, _bare_pair(r, bare)) for r in mine if r["clients"] == clients]
        shares = [r["qps"] / b["qps"] for r, b in many if b and b["qps"]]
        if shares:
            ok = min(shares) >= min_share
            qps, bare_qps = [r["qps"] for r, _ in many], [b["qps"] for _, b in many if b]
            lines.append(f"{'MET' if ok else 'MISSED'} ({setting}) {clients} clients at least "
                         f"{min_share:.0%} of the bare server's calls/s: {_span(shares, '.0%')} "
                         f"({_span(qps, ',.0f')} against {_span(bare_qps, ',.0f')} calls/s)")  # fmt: skip
        one = [r for r in mine if r["clients"] == 1]
        if one:
            p99, tail = [r["p99_ms"] for r in one], [r["p99_ms"] / r["p50_ms"] for r in one]
            lines.append(f"{'MET' if max(p99) <= single_p99 else 'MISSED'} ({setting}) one "
                         f"client's p99 <= {single_p99:g} ms: {_span(p99, '.2f')} ms")  # fmt: skip
            lines.append(f"{'MET' if max(tail) <= max_tail else 'MISSED'} ({setting}) one "
                         f"client's p99 <= {max_tail:g}x its p50: {_span(tail, '.1f')}x (p50 "
                         f"{_span([r['p50_ms'] for r in one], '.2f')} ms)")  # fmt: skip
    return "\n".join(f"- {line}" for line in lines)


VIEWS: dict[str, View] = {
    "embedders": embedders_view,
    "embedders-summary": embedders_summary_view,
    "recall-control": recall_control_view,
    "exact-cost": exact_cost_view,
    "root-overhead": root_overhead_view,
    "recall-estimates": recall_estimates_view,
    "recall-grid": recall_grid_view,
    "load-vs-bare": load_vs_bare_view,
}
