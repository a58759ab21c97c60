"""One-off: the exploratory index_designs runs of 2026-12-01 as self-describing rows.

The runs (``docs/experiments/index_designs.py`` before it recorded provenance, from an
uncommitted work tree based on b2ec514) left their JSON lines in a scratch folder: sweep rows in
sweep.jsonl (six ``sweep`` invocations, one after another), data / build / refine rows in
log.jsonl, and coarse-centroid locality rows in centroids.jsonl (a scratch script). This copies
them into docs/results/index_designs.jsonl without changing a measured value:

- derived: ``benchmark``, ``kind`` (the row's step; ``coarse_centroids``), ``dataset``, ``nb``
  (1,000,000 for both sets: tight-1m searches the calibrated-1m base; the data rows record it),
  ``d`` 384, ``threads`` (the row's own count, as a dict), ``sweep_run`` (1-6: contiguous rows
  sharing set, ``interleaved_with`` and ``load_avg_during`` came from one invocation, which
  timed them interleaved);
- never recorded, so null: ``command``, ``machine``, ``time_utc``; the note gives the scratch
  log's modification time (when the run's last row was written);
- ``git_sha``: recorded as ``b2ec514`` by a plain ``git rev-parse``; the code that ran was not
  committed, so it is stored as ``b2ec514-dirty``.

    python docs/experiments/index_designs_import.py /tmp/perf-index-work docs/results/index_designs.jsonl

Run once: it writes the file anew, and later runs' rows were added after it with
``python -m benchmarks.publish --append``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def design_slug(design: str) -> str:
    """As ``index_designs.design_slug``: the design without commas, for ``where=`` filters."""
    if design.startswith("hnswlib:"):
        return "hnswlib_" + Path(design.partition(":")[2]).stem
    return design.replace(",", "_").replace("(", "").replace(")", "").replace(":", "_")


NB = {"calibrated-1m": 1_000_000, "tight-1m": 1_000_000, "realtext": 256_340}
# Each sweep invocation's scratch log (it printed its rows there too) and that file's mtime
LOG_END_UTC = {
    1: "13:53:38 (sweep1.log)",
    2: "14:15:04 (sweep2.log)",
    3: "14:26:37 (sweep3.log)",
    4: "14:39:58 (sweep4.log)",
    5: "14:59:24 (sweep5.log, which runs 5 and 6 both wrote)",
    6: "14:59:24 (sweep5.log, which runs 5 and 6 both wrote)",
}
UNRECORDED = ["command", "machine", "time_utc"]


def _note(what: str, end: str | None, sha: bool = True) -> str:
    when = f"; its scratch log was last written 2026-12-01 {end} UTC" if end else ""
    git = (
        "git_sha recorded as b2ec514 without a dirty check, stored with -dirty"
        if sha
        else "git_sha never recorded (null)"
    )
    return (
        f"{what}, from an uncommitted work tree based on b2ec514 ({git}). Derived: benchmark, "
        f"kind, dataset, nb, d, threads as a dict{', sweep_run' if end else ''}. Never recorded: "
        f"{', '.join(UNRECORDED)} (null){when}. Migrated by "
        "docs/experiments/index_designs_import.py; no measured value changed."
    )


def _common(
    row: dict[str, Any], kind: str, dataset: str, threads: dict[str, int]
) -> dict[str, Any]:
    return {
        "benchmark": "index_designs",
        "kind": kind,
        "dataset": dataset,
        "nb": row.get("nb", NB[dataset]),
        "d": 384,
        "threads": threads,
        "command": None,
        "git_sha": "b2ec514-dirty" if row.get("git_sha") == "b2ec514" else None,
        "machine": None,
        "load_avg_1m": row.get("load_avg_1m"),
        "time_utc": None,
    }


def sweeps(path: Path) -> list[dict[str, Any]]:
    out, run, prev = [], 0, None
    for line in path.read_text().splitlines():
        row = json.loads(line)
        key = (row["set"], row["interleaved_with"], tuple(row["load_avg_during"]))
        run += key != prev
        prev = key
        end = LOG_END_UTC[run]
        head = _common(row, "sweep", row["set"], {"search": row["threads"]})
        rest = {k: v for k, v in row.items() if k not in ("threads", "git_sha")}
        note = _note("Exploratory sweep (CPU ms per single-query search, interleaved)", end)
        slug = {"design_slug": design_slug(row["design"])}
        out.append({**head, "sweep_run": run, **rest, **slug, "provenance_note": note})
    return out


def steps(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        dataset = row.get("set") or row["base"]
        threads = {"build": row["threads"]} if row["step"] == "build" else {}
        if row["step"] == "data":  # the script searched exactly on 2 OpenMP threads
            threads = {"exact": 2}
        head = _common(row, row["step"], dataset, threads)
        rest = {k: v for k, v in row.items() if k not in ("threads", "git_sha")}
        note = _note(f"Exploratory {row['step']} step", None)
        out.append({**head, **rest, "provenance_note": note})
    return out


def _field(key: str) -> str:
    name, _, target = key.removeprefix("calibrated-1m:").partition("@0.")
    return f"{name}_at_{target}" if target else name


def centroids(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        # ("calibrated-1m:nprobe@0.95" -> "nprobe_at_95": doc field paths split on "." and ":")
        row = {_field(k): v for k, v in row.items()}
        head = _common(row, "coarse_centroids", "calibrated-1m", {"kmeans": 2})
        note = _note(
            "Coarse-centroid locality by a scratch script (k-means on `points` base vectors: "
            "faiss.Kmeans spherical, or two-level faiss.contrib.clustering.two_level_clustering "
            "with round(sqrt(nlist)) first-level clusters; every base vector assigned to its "
            "nearest centroid; the nprobe and vectors scanned for which the lists hold 95% / 96% "
            "of the 1,000 sweep queries' exact top-100; load average never recorded; fields renamed from 'calibrated-1m:nprobe@0.95' to 'nprobe_at_95' and so on)",
            None,
            sha=False,
        )
        out.append({**head, **row, "provenance_note": note})
    return out


def main() -> None:
    work, dest = Path(sys.argv[1]), Path(sys.argv[2])
    rows = [
        *steps(work / "log.jsonl"),
        *sweeps(work / "sweep.jsonl"),
        *centroids(work / "centroids.jsonl"),
    ]
    with dest.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"{len(rows)} rows -> {dest}")


if __name__ == "__main__":
    main()
