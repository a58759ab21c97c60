"""Doc figures come from committed raw results: the generator, its check mode, and publishing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.config import BenchConfig
from benchmarks.datasets import calibrated
from benchmarks.doc_views import DocsError
from benchmarks.docs import REQUIRED, generate, main
from benchmarks.publish import publish
from benchmarks.recall_latency import make_systems

REPO = Path(__file__).resolve().parents[2]


def row(name: str, nprobe: int, recall: float, p50: float, **kw: Any) -> dict[str, Any]:
    """A recall_latency operating point as the benchmark writes it (a few fields trimmed)."""
    return {
        "benchmark": "recall_latency", "kind": "point", "name": name, "index_key": "IVF64,Flat",
        "params": {"nprobe": nprobe}, "k": 100, "nq": 200, "recall_at_10": recall,
        "recall_at_100": recall, "p50_ms": p50, "p99_ms": 2 * p50, "qps": 1000 / p50,
        "single_qps": 1000 / p50, "build_s": 1.5, "index_bytes": 2**20, "rss_mb": 10.0,
        "threads": {"single": 1, "qps": 2, "build": 2, "how": "test"}, "dataset": "toy",
        "nb": 5000, "d": 32, "command": "python -m benchmarks.recall_latency --dataset toy",
        "git_sha": "abc123", "machine": {"cpu": "TestCPU", "cores": 2}, "load_avg_1m": 0.5,
        "time_utc": "2026-12-01T10:00:00Z", "pareto": True, **kw,
    }  # fmt: skip


DOC = """# Toy

Cheapest point at 0.95: <!-- value: source=toy-run where=name:adindex where=params.nprobe:8 field=p50_ms fmt=.2f -->?<!-- /value --> ms.

<!-- table: toy-cheapest source=toy-run view=cheapest order=adindex,hnswlib -->
stale text
<!-- /table -->

<!-- table: toy-1m source=toy-1m view=points
     rerun="python -m benchmarks.recall_latency --dataset calibrated-1m" -->
<!-- /table -->

```markdown
<!-- table: an-example source=nothing view=points -->
<!-- /table -->
```
"""


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "results").mkdir()
    rows = [row("adindex", 4, 0.90, 0.5), row("adindex", 8, 0.96, 0.8),
            row("hnswlib", 100, 0.97, 0.4, params={"ef_search": 100})]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "results" / "toy-run.jsonl").write_text(text)
    (tmp_path / "toy.md").write_text(DOC)
    return tmp_path


def test_generate_fills_tables_values_and_placeholders(docs: Path) -> None:
    stale, _ = generate(docs, check=True)
    assert stale == 1  # the doc as written differs from its data
    stale, messages = generate(docs)
    text = (docs / "toy.md").read_text()
    assert stale == 0 and "stale text" not in text
    assert "Cheapest point at 0.95: <!-- value:" in text and "-->0.80<!-- /value --> ms." in text
    # The cheapest adindex point reaching 0.95 is nprobe 8; threads and the command are shown.
    line = next(x for x in text.splitlines() if x.startswith("| adindex"))
    assert "nprobe=8" in line and "| 0.800 |" in line and "| 1 / 2 |" in line
    assert "threads (1-query / QPS)" in text
    assert "Source: [results/toy-run.jsonl](results/toy-run.jsonl) (3 rows; git `abc123`" in text
    assert "Command: `python -m benchmarks.recall_latency --dataset toy`" in text
    # No data yet: a note with the command that would measure it, not a crash.
    assert "**To be re-measured:**" in text
    assert "`python -m benchmarks.recall_latency --dataset calibrated-1m`" in text
    assert any("awaiting data: toy-1m" in m for m in messages)
    # A marker inside a code block is an example and stays as written.
    assert "<!-- table: an-example source=nothing view=points -->\n<!-- /table -->" in text
    assert generate(docs, check=True)[0] == 0  # idempotent


def test_check_fails_when_a_figure_is_edited_by_hand(docs: Path) -> None:
    generate(docs)
    doc = docs / "toy.md"
    doc.write_text(doc.read_text().replace("| 0.800 |", "| 0.700 |"))
    assert main(["--check", "--docs", str(docs)]) == 1
    assert main(["--docs", str(docs)]) == 0 and "| 0.800 |" in doc.read_text()


def test_new_rows_change_the_generated_table(docs: Path) -> None:
    generate(docs)
    with (docs / "results" / "toy-run.jsonl").open("a") as f:
        f.write(json.dumps(row("adindex", 6, 0.955, 0.7)) + "\n")
    assert generate(docs, check=True)[0] == 1
    generate(docs)
    assert "nprobe=6" in (docs / "toy.md").read_text()


def test_rows_that_do_not_describe_themselves_are_refused(docs: Path) -> None:
    bad = row("adindex", 1, 0.5, 0.1)
    del bad["load_avg_1m"]
    (docs / "results" / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    (docs / "cites.md").write_text("<!-- table: b source=bad view=points -->\n<!-- /table -->\n")
    with pytest.raises(DocsError, match=r"bad.jsonl:1: missing load_avg_1m"):
        generate(docs)


def test_values_never_recorded_are_said_so_in_the_caption(docs: Path) -> None:
    """A migrated row holds null for what its writer never recorded; the caption says so and
    points to the marker's rerun command instead of a command."""
    old = row("adindex", 2, 0.7, 0.2, provenance_note="migrated: command, time not recorded")
    old.update(command=None, time_utc=None, machine=None, load_avg_1m=None, git_sha=None)
    old["rounds"] = [3.0, 1.5]
    (docs / "results" / "old.jsonl").write_text(json.dumps(old) + "\n")
    (docs / "old.md").write_text(
        '<!-- table: o source=old view=rows columns="p50_ms:.1f=p50; rounds.1:.1f=second"'
        ' rerun="python -m x" -->\n<!-- /table -->\n'
        "first round <!-- value: source=old field=rounds.0 fmt=.1f -->?<!-- /value -->\n"
    )
    generate(docs)
    text = (docs / "old.md").read_text()
    assert "| 0.2 | 1.5 |" in text and "first round <!-- value: source=old" in text
    assert "-->3.0<!-- /value -->" in text
    assert "(1 row; git sha not recorded; date not recorded; machine not recorded, load " in text
    assert "load average not recorded). Command: not recorded; to re-measure: `python -m x`" in text
    assert "Migrated from an earlier format (1 row): each row's `provenance_note`" in text


def test_undescribed_rows_are_refused_even_where_no_doc_cites_them(docs: Path) -> None:
    bad = row("adindex", 1, 0.5, 0.1)
    del bad["time_utc"]
    (docs / "results" / "uncited.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(DocsError, match=r"uncited.jsonl:1: missing time_utc"):
        generate(docs)


def test_bad_markers_name_the_doc_and_line(docs: Path) -> None:
    (docs / "toy.md").write_text(
        "x\n\n<!-- table: t source=toy-run view=nope -->\n<!-- /table -->\n"
    )
    with pytest.raises(DocsError, match=r"toy.md:3: view= must be one of"):
        generate(docs)
    (docs / "toy.md").write_text("<!-- table: t source=toy-run view=points -->\nno end\n")
    with pytest.raises(DocsError, match="without <!-- /table -->"):
        generate(docs)
    (docs / "toy.md").write_text("<!-- table: t source=toy-run vew=points -->\n<!-- /table -->\n")
    with pytest.raises(DocsError, match="'vew=points' is not one of"):
        generate(docs)


def test_publish_copies_the_selected_rows_verbatim(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(row("adindex", n, 0.9, 1.0)) for n in (4, 8, 16)]
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    to = tmp_path / "docs" / "results" / "toy-run.jsonl"
    publish([run], to, ["params.nprobe:8,16"])
    assert to.read_text().splitlines() == lines[1:]
    publish([run / "results.jsonl"], to, ["params.nprobe:4"], append=True)
    assert len(to.read_text().splitlines()) == 3
    dirty = row("adindex", 32, 0.9, 1.0, git_sha="abc123-dirty")
    (run / "dirty.jsonl").write_text(json.dumps(dirty) + "\n")
    with pytest.raises(DocsError, match="uncommitted code"):
        publish([run / "dirty.jsonl"], to)
    with pytest.raises(DocsError, match="no row matches"):
        publish([run], to, ["name:nobody"])


def test_every_system_measures_on_equal_threads() -> None:
    """Single-query and throughput rows of all six systems use the same thread counts."""
    cfg = BenchConfig(dataset="calibrated", nb=100, nq=10, d=8)
    threads = [s.threads(cfg.qps_threads) for s in make_systems(cfg, calibrated(100, 10, 8))]
    assert {t["single"] for t in threads} == {1}
    assert {t["qps"] for t in threads} == {cfg.qps_threads}
    assert {t["build"] for t in threads} <= {None, 2}


def test_committed_docs_match_committed_results() -> None:
    """docs/*.md tables are what docs/results/*.jsonl produce (``make docs`` regenerates them),
    every committed row describes itself, and every results file is cited by a doc."""
    stale, messages = generate(REPO / "docs", check=True)
    assert stale == 0, "\n".join(messages)
    for path in (REPO / "docs" / "results").glob("*.jsonl"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            missing = set(REQUIRED) - json.loads(line).keys()
            assert not missing, f"{path.name}:{n}: missing {sorted(missing)}"


def test_results_no_doc_cites_fail_the_check(docs: Path) -> None:
    generate(docs)
    (docs / "results" / "orphan.jsonl").write_text(json.dumps(row("adindex", 3, 0.8, 0.3)) + "\n")
    stale, messages = generate(docs, check=True)
    assert stale == 1 and any("no doc cites (cite or delete them): orphan" in m for m in messages)


def test_required_fields_are_written_by_the_benchmark(tmp_path: Path) -> None:
    """A tiny real run: every line it writes can be published as is."""
    from benchmarks.recall_latency import run

    cfg = BenchConfig(
        dataset="calibrated", nb=2000, nq=20, d=16, nq_eval=20, warmup=2, repeats=1,
        factory="IVF16,Flat", nprobes=(4,), systems=("faiss-flat", "adindex", "faiss-ivf"),
        out=tmp_path, stats=False,
    )  # fmt: skip
    assert run(cfg)
    out = tmp_path / cfg.name
    to = tmp_path / "published.jsonl"
    publish([out], to, allow_dirty=True)  # (the work tree may be dirty while testing)
    rows = [json.loads(x) for x in to.read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"point", "run"}
    assert all(r["nb"] == 2000 and r["d"] == 16 and np.isfinite(r["load_avg_1m"]) for r in rows)


def test_load_vs_bare_pairs_rounds_levels_and_threads() -> None:
    """adindex against the bare server: each round's row pairs with the bare row of the same
    round and level, searched on the same OpenMP threads (one client: the lone-search threads)."""
    from benchmarks.doc_views import Spec
    from benchmarks.doc_views_features import load_vs_bare_view

    def level(server: str, setting: str, clients: int, rnd: int, search: int, **kw: Any) -> Any:
        return {"benchmark": "load", "mode": "saturate", "server": server, "setting": setting,
                "clients": clients, "round": rnd, "threads": {"search": search, "alone": 2}, **kw}  # fmt: skip

    rows = []
    for rnd in (0, 1):
        rows += [
            level("adindex", "off", 1, rnd, 1, qps=900, p50_ms=1.0, p99_ms=1.8, server_cpu_ms=0.9),
            level("adindex", "off", 16, rnd, 1, qps=700 + rnd, p50_ms=20, p99_ms=60, server_cpu_ms=0.6),
            level("bare", "bare", 1, rnd, 1, qps=1500, p50_ms=0.6, p99_ms=1, server_cpu_ms=0.1),
            level("bare", "bare/t2", 1, rnd, 2, qps=1600, p50_ms=0.5, p99_ms=1, server_cpu_ms=0.7),
            level("bare", "bare", 16, rnd, 1, qps=1000, p50_ms=15, p99_ms=40, server_cpu_ms=0.4),
        ]  # fmt: skip
    text = load_vs_bare_view(rows, Spec("table", "t"))
    # one client pairs with bare/t2 (+0.20), 16 clients with bare (+0.20): within 0.3 ms
    assert "- MET (off) server CPU per call at most 0.3 ms above the bare server's: " \
        "1 client +0.20 ms; 16 clients +0.20 ms" in text  # fmt: skip
    assert "MISSED (off) 16 clients at least 80% of the bare server's calls/s: 70% " in text
    assert "MET (off) one client's p99 <= 3 ms: 1.80 ms" in text
    assert "MET (off) one client's p99 <= 2x its p50: 1.8x" in text
    assert "(bare" not in text  # the bare server is the reference, not a setting judged
    with pytest.raises(DocsError, match="bare server"):
        load_vs_bare_view([r for r in rows if r["server"] == "adindex"], Spec("table", "t"))
