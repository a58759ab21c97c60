"""One-off: make the rows of docs/results/rebuild.jsonl and scale_out.jsonl self-describing.

    python docs/experiments/migrate_scale_out.py          # rewrites the two files in place, once
    python docs/experiments/migrate_scale_out.py --check  # change nothing; say what it would do

These rows were written by ``benchmarks.rebuild`` and ``benchmarks.scale_out`` before they
recorded ``benchmarks.provenance`` (the same change ``migrate_provenance.py`` made to seven other
files). Each row gets ``benchmark``, ``kind`` (was ``run`` / ``mode``), ``nb`` (was ``n``) and the
provenance fields, derived only from what the row or its run records: ``load_avg_1m`` is the
row's own ``load_1m_before``; a ratio row takes ``dataset``, ``d`` and ``threads`` from the
builds it divides. ``embed_s`` is read from the row's ``stages_s``. The command, the machine
(only its host name, ``host``, was recorded) and the time were never recorded: null, and the
row's ``provenance_note`` says so. No measured value changes; rows stay in order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
Row = dict[str, Any]
NOTE = (
    "Migrated by docs/experiments/migrate_scale_out.py from the writer's earlier format. "
    "kind: was {old}; nb: was n; load_avg_1m: this row's load_1m_before{extra}; embed_s: the "
    "'Embedding N ads' entry of stages_s; command, machine (only host was recorded), time_utc: "
    "not recorded by the writer."
)


def _migrate(rows: list[Row], benchmark: str, old_kind: str) -> list[Row]:
    builds = [r for r in rows if "d" in r]
    out = []
    for r in rows:
        new: Row = {"benchmark": benchmark, "kind": r[old_kind]}
        new |= {("nb" if k == "n" else k): v for k, v in r.items() if k != old_kind}
        extra = ""
        if "d" not in r:  # the ratio row: what it divides says what it is
            same = [b for b in builds if b["n"] == r["n"] and b["git_sha"] == r["git_sha"]]
            new |= {k: same[0][k] for k in ("dataset", "d", "threads")}
            new["load_avg_1m"] = None
            extra = " (a ratio row: none; dataset, d, threads: the builds it divides)"
        else:
            new["load_avg_1m"] = r["load_1m_before"]
            new["embed_s"] = next(
                (v for k, v in r["stages_s"].items() if k.startswith("Embedding")), None
            )
        new |= {"command": None, "machine": None, "time_utc": None}
        new["provenance_note"] = NOTE.format(old=old_kind, extra=extra)
        for key, value in r.items():  # nothing measured is lost
            got = new["kind"] if key == old_kind else new["nb" if key == "n" else key]
            if got != value:
                raise ValueError(f"{key} {value!r} is not kept")
        out.append(new)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.docs import REQUIRED

    for stem, old_kind in (("rebuild", "run"), ("scale_out", "mode")):
        path = RESULTS / f"{stem}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        if any("provenance_note" in r for r in rows):
            raise SystemExit(f"{stem}.jsonl is migrated already")
        new = _migrate(rows, stem, old_kind)
        for n, row in enumerate(new, 1):
            if missing := [k for k in REQUIRED if k not in row]:
                raise ValueError(f"{stem}.jsonl:{n}: still missing {', '.join(missing)}")
        if not args.check:
            path.write_text("".join(json.dumps(r) + "\n" for r in new), encoding="utf-8")
        print(f"{'would migrate' if args.check else 'migrated'} {len(new)} rows of {stem}.jsonl")


if __name__ == "__main__":
    main()
