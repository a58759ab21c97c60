"""Regenerate the tables, plots and figures in docs/*.md from the committed docs/results/*.jsonl.

    python -m benchmarks.docs            # rewrite docs/*.md between markers, and docs/img/NAME.png
    python -m benchmarks.docs --check    # change nothing; exit 1 with a diff if a doc is stale

Markers (how to add one: docs/benchmarks.md, "How figures are made"):

    <!-- table: ID source=NAME[,NAME] view=VIEW [where=FIELD:V1,V2]... [rerun="COMMAND"] -->
    (generated)
    <!-- /table -->
    <!-- plot: NAME source=... view=recall-vs-p50 -->(generated: docs/img/NAME.png)<!-- /plot -->
    <!-- value: source=... [where=...] field=PATH [fmt=.2f] [agg=one|min|max|range|list] -->(generated)<!-- /value -->

``source`` names files of docs/results/ without ``.jsonl`` (shell patterns allowed); ``where``
keeps rows whose dotted FIELD has one of the values (repeat it to require several). A marker
whose data is not committed yet renders a "to be re-measured" note with its ``rerun`` command,
so a doc can name a figure before anyone has measured it. Views: ``benchmarks.doc_views``
and ``benchmarks.doc_views_features``; plots: ``benchmarks.doc_plots``.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import logging
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import doc_views, doc_views_features
from benchmarks.doc_plots import PLOTS
from benchmarks.doc_views import DocsError, Row, Spec, canonical, fmt, lookup
from benchmarks.provenance import REPO

logger = logging.getLogger(__name__)

DOCS = REPO / "docs"
VIEWS = {**doc_views.VIEWS, **doc_views_features.VIEWS}
# What makes a row self-describing (every benchmark writes these; ``benchmarks.publish`` checks).
REQUIRED = ("benchmark", "kind", "dataset", "nb", "d", "threads", "command", "git_sha",
            "machine", "load_avg_1m", "time_utc")  # fmt: skip
BLOCK = re.compile(r"<!-- (table|plot): (.*?)-->\n(.*?)<!-- /\1 -->", re.S)
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)  # code blocks: markers there are examples
VALUE = re.compile(r"<!-- value: (.*?)-->(.*?)<!-- /value -->", re.S)
ATTRS = {"source", "view", "where", "rerun", "min_recall", "order", "columns", "field", "fmt",
         "agg", "title", "clients", "min_qps", "max_p99_ms", "single_p99_ms", "nprobes", "across"}  # fmt: skip
MISSING_VALUE = "(to be re-measured)"


def read_rows(path: Path) -> list[Row]:
    """The rows of one results file (each with its ``_line``); a line that is not a JSON object
    is an error naming file and line."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocsError(f"{path}:{n}: not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise DocsError(f"{path}:{n}: not a JSON object")
        rows.append(dict(row, _line=n))
    return rows


def check_described(rows: list[Row], stem: str) -> None:
    """Every committed row describes itself (``REQUIRED``; a value never recorded is an explicit
    null, said so in the row's ``provenance_note``); the error names file and line."""
    for row in rows:
        missing = [key for key in REQUIRED if key not in row]
        if missing:
            line = row.get("_line", "?")
            raise DocsError(
                f"results/{stem}.jsonl:{line}: missing {', '.join(missing)} (see REQUIRED)"
            )


def load_results(results: Path) -> dict[str, list[Row]]:
    """Every docs/results/*.jsonl by name (the file stem), each row checked (``REQUIRED``)."""
    out = {p.stem: read_rows(p) for p in sorted(results.glob("*.jsonl"))}
    for stem, rows in out.items():
        check_described(rows, stem)
    return out


def parse_spec(kind: str, text: str, where: str) -> Spec:
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise DocsError(f"{where}: cannot parse the {kind} marker: {exc}") from None
    ident = ""
    if kind != "value":
        if not tokens or "=" in tokens[0]:
            raise DocsError(f"{where}: a {kind} marker starts with its name: <!-- {kind}: NAME ...")
        ident = tokens.pop(0)
    attrs: dict[str, list[str]] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or key not in ATTRS:
            raise DocsError(f"{where}: {token!r} is not one of {', '.join(sorted(ATTRS))}=VALUE")
        attrs.setdefault(key, []).append(value)
    if "source" not in attrs:
        raise DocsError(f"{where}: the {kind} marker {ident!r} needs source=NAME")
    return Spec(kind, ident, attrs, where)


def select(results: dict[str, list[Row]], spec: Spec) -> tuple[list[Row], list[str]]:
    """The rows a marker selects, and the names of the files they came from."""
    stems: list[str] = []
    for pattern in (spec.get("source") or "").split(","):
        stems += [s for s in results if fnmatch.fnmatchcase(s, pattern) and s not in stems]
    rows = [dict(r, _source=s) for s in stems for r in results[s]]
    for condition in spec.attrs.get("where", []):
        path, sep, values = condition.partition(":")
        if not sep:
            raise DocsError(f"{spec.where}: where={condition!r}: use where=FIELD:V1,V2")
        allowed = set(values.split(","))
        rows = [r for r in rows if canonical(lookup(r, path)) in allowed]
    return rows, sorted({r["_source"] for r in rows})


def _unrecorded(n: int) -> str:
    return f"not recorded for {n} row{'s' if n > 1 else ''}"


def _busy(rows: Sequence[Row]) -> str:
    loads = [float(r["load_avg_1m"]) for r in rows if r.get("load_avg_1m") is not None]
    if not loads:
        return "load average not recorded"
    machines = [r["machine"] for r in rows if isinstance(r.get("machine"), dict)]
    cores = max((m.get("cores") or 1 for m in machines), default=None)
    span = f"{min(loads):.1f}" if min(loads) == max(loads) else f"{min(loads):.1f}-{max(loads):.1f}"
    if len(loads) < len(rows):
        span += f", {_unrecorded(len(rows) - len(loads))}"
    if cores is None:
        return f"load average {span}, cores not recorded"
    busy = "busy: timings are noisy" if max(loads) > 0.75 * cores else "quiet"
    return f"load average {span} on {cores} cores ({busy})"


def _recorded(rows: Sequence[Row], key: str, show: Callable[[list[str]], str], none: str) -> str:
    """``show`` of the distinct recorded values of ``key``, or ``none``; rows holding null (a
    value a migrated row never recorded, see its ``provenance_note``) are counted."""
    known = [str(r[key]) for r in rows if r.get(key) is not None]
    if not known:
        return none
    text = show(list(dict.fromkeys(known)))
    return text if len(known) == len(rows) else f"{text} ({_unrecorded(len(rows) - len(known))})"


def _days(days: list[str]) -> str:
    days = sorted({d[:10] for d in days})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def caption(rows: Sequence[Row], rerun: str | None = None) -> str:
    """Where a table's rows come from: file, git, date, machine, load, and the command(s).
    Rows whose command was never recorded point to ``rerun`` (the marker's) when given."""
    parts = []
    for stem in sorted({r["_source"] for r in rows}):
        mine = [r for r in rows if r["_source"] == stem]
        shas = _recorded(mine, "git_sha", lambda v: "git " + ", ".join(f"`{s}`" for s in sorted(v)),
                         "git sha not recorded")  # fmt: skip
        day = _recorded(mine, "time_utc", _days, "date not recorded")
        machine = next((r["machine"] for r in mine if isinstance(r.get("machine"), dict)), None)
        cpu = machine.get("cpu", "?") if machine else "machine not recorded"
        commands = _recorded(
            mine, "command", lambda v: "; ".join(f"`{c}`" for c in v), "not recorded"
        )
        if rerun and any(r.get("command") is None for r in mine):
            commands += f"; to re-measure: `{rerun}`"
        notes = sum(1 for r in mine if r.get("provenance_note"))
        note = (f". Migrated from an earlier format ({notes} row{'s' if notes > 1 else ''}): "
                "each row's `provenance_note` says what was derived and what was never recorded."
                ) if notes else ""  # fmt: skip
        n = f"{len(mine)} row{'s' if len(mine) > 1 else ''}"
        parts.append(f"Source: [results/{stem}.jsonl](results/{stem}.jsonl) ({n}; {shas}; "
                     f"{day}; {cpu}, {_busy(mine)}). Command: {commands}{note}")  # fmt: skip
    return "\n\n".join(parts)


def placeholder(spec: Spec, missing: Sequence[str] = ()) -> str:
    """The note that stands in for data not committed yet: all of it, or the ``missing``
    sources of a table that shows the others."""
    names = list(missing) or (spec.get("source") or "").split(",")
    files = ", ".join(f"`docs/results/{name}.jsonl`" for name in names)
    what = f"this {spec.kind} yet" if not missing else "yet; the table shows the others"
    lines = [f"> **To be re-measured:** no committed rows in {files} match {what}."]
    rerun = spec.get("rerun")
    if rerun:  # (said once per source, at its first marker)
        lines.append(f"> Measure: `{rerun}`")
        lines.append(f"> Then `python -m benchmarks.publish --from <the run's output> --to "
                     f"docs/results/{names[0]}.jsonl` and `make docs`.")  # fmt: skip
    return "\n".join(lines)


def missing_sources(results: dict[str, list[Row]], spec: Spec) -> list[str]:
    """The plainly named sources (no shell pattern) of a marker that have no results file."""
    names = (spec.get("source") or "").split(",")
    return [n for n in names if not any(c in n for c in "*?[") and n not in results]


@dataclass
class Rendered:
    text: str
    blocks: int = 0
    missing: list[str] = field(default_factory=list)
    plots: list[tuple[Path, Spec, list[Row]]] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)


def render_doc(text: str, name: str, results: dict[str, list[Row]], img: Path) -> Rendered:
    """The doc with every marker's content regenerated (plots are listed, not drawn)."""
    out = Rendered(text)
    offset = [0]  # where the piece being substituted starts in text

    def at(pos: int) -> str:
        return f"{name}:{text.count(chr(10), 0, offset[0] + pos) + 1}"

    def block(match: re.Match[str]) -> str:
        kind, head = match.group(1), match.group(2)
        spec = parse_spec(kind, head, at(match.start()))
        known = VIEWS if kind == "table" else PLOTS
        if (spec.get("view") or "") not in known:  # checked with or without data
            raise DocsError(f"{spec.where}: view= must be one of {', '.join(known)}")
        rows, stems = select(results, spec)
        out.blocks += 1
        out.sources.update(stems)
        if not rows:
            out.missing.append(spec.id)
            body = placeholder(spec)
        elif kind == "table":
            body = (
                f"{VIEWS[spec.get('view') or ''](rows, spec)}\n\n{caption(rows, spec.get('rerun'))}"
            )
            absent = missing_sources(results, spec)
            if absent:
                out.missing.append(f"{spec.id} ({', '.join(absent)})")
                body += "\n\n" + placeholder(spec, absent)
        else:
            out.plots.append((img / f"{spec.id}.png", spec, rows))
            title = spec.get("title") or spec.id
            body = f"![{title}](img/{spec.id}.png)\n\n{caption(rows, spec.get('rerun'))}"
        return f"<!-- {kind}: {head}-->\n{body}\n<!-- /{kind} -->"

    def value(match: re.Match[str]) -> str:
        head = match.group(1)
        spec = parse_spec("value", head, at(match.start()))
        rows, stems = select(results, spec)
        out.sources.update(stems)
        return f"<!-- value: {head}-->{inline(rows, spec)}<!-- /value -->"

    pieces, start, opened = [], 0, 0
    for fence in [*FENCE.finditer(text), None]:
        end = fence.start() if fence else len(text)
        prose, offset[0] = text[start:end], start
        opened += len(re.findall(r"<!-- (?:table|plot):", prose))
        pieces.append(VALUE.sub(value, BLOCK.sub(block, prose)))
        if fence:
            pieces.append(fence.group(0))
            start = fence.end()
    out.text = "".join(pieces)
    if out.blocks != opened:
        raise DocsError(
            f"{name}: {opened - out.blocks} table/plot marker(s) without <!-- /table -->"
        )
    return out


def inline(rows: Sequence[Row], spec: Spec) -> str:
    """One figure in prose: ``field`` of the selected rows, aggregated by ``agg``."""
    path = spec.get("field")
    if not path:
        raise DocsError(f"{spec.where}: a value marker needs field=PATH")
    values = [v for v in (lookup(r, path) for r in rows) if v is not None]
    if not values:
        return MISSING_VALUE
    form, agg = spec.get("fmt", ""), spec.get("agg", "one")
    if agg == "one":
        if len(set(map(str, values))) != 1:
            raise DocsError(f"{spec.where}: {len(values)} rows match; narrow where= or set agg=")
        return fmt(values[0], form or "")
    if agg == "list":
        return ", ".join(fmt(v, form or "") for v in values)
    lo, hi = min(values), max(values)
    if agg in ("min", "max"):
        return fmt(lo if agg == "min" else hi, form or "")
    if agg == "range":
        a, b = fmt(lo, form or ""), fmt(hi, form or "")
        return a if a == b else f"{a}-{b}"
    raise DocsError(f"{spec.where}: agg={agg!r}: use one, list, min, max or range")


def generate(
    docs: Path = DOCS, results_dir: Path | None = None, *, check: bool = False
) -> tuple[int, list[str]]:
    """Regenerate (or, with ``check``, compare) every doc; returns (stale docs, messages)."""
    results = load_results(results_dir or docs / "results")
    img = docs / "img"
    stale, messages, used, images = 0, [], set(), set()
    for path in sorted(docs.glob("*.md")):
        old = path.read_text(encoding="utf-8")
        done = render_doc(old, str(path.relative_to(docs.parent)), results, img)
        used |= done.sources
        images |= set(re.findall(r"\(img/([^)\s]+)\)", done.text))
        if done.missing:
            messages.append(f"{path.name}: awaiting data: {', '.join(done.missing)}")
        if check:
            missing_pngs = [p.name for p, _, _ in done.plots if not p.is_file()]
            if done.text != old or missing_pngs:
                stale += 1
                diff = difflib.unified_diff(old.splitlines(), done.text.splitlines(),
                                            str(path), "generated", lineterm="", n=1)  # fmt: skip
                messages.append("\n".join(list(diff)[:60]))
                messages += [f"{path.name}: docs/img/{name} is missing" for name in missing_pngs]
            continue
        for png, spec, rows in done.plots:
            img.mkdir(exist_ok=True)
            PLOTS[spec.get("view") or ""](rows, spec, png)
        if done.text != old:
            path.write_text(done.text, encoding="utf-8")
            messages.append(f"wrote {path.name} ({done.blocks} tables and plots)")
    unused = sorted(set(results) - used)
    if unused:  # a results file is there to back a doc: cite it or delete it
        stale += 1 if check else 0
        messages.append(
            f"docs/results/ files no doc cites (cite or delete them): {', '.join(unused)}"
        )
    orphans = sorted(p.name for p in img.glob("*.png") if p.name not in images)
    if orphans:
        stale += 1 if check else 0
        messages.append(f"docs/img/ images no doc shows (delete them): {', '.join(orphans)}")
    return stale, messages


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.docs",
        description="Regenerate the tables, plots and figures of docs/*.md from docs/results/.",
    )
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a doc is stale")
    p.add_argument("--docs", type=Path, default=DOCS, help="(default: %(default)s)")
    p.add_argument("--results", type=Path, default=None, help="(default: DOCS/results)")
    args = p.parse_args(argv)
    try:
        stale, messages = generate(args.docs, args.results, check=args.check)
    except DocsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for message in messages:
        print(message)
    if stale:
        print(
            f"{stale} doc(s) differ from docs/results: run `make docs` and commit", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
