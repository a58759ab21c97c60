"""One-off: make the rows of seven docs/results files self-describing (``benchmarks.docs.REQUIRED``).

    python docs/experiments/migrate_provenance.py          # rewrites the files in place, once
    python docs/experiments/migrate_provenance.py --check  # change nothing; say what it would do

These files were written before the writers added ``benchmarks.provenance`` to their rows
(embedders, interests, recall_control, root_overhead, recall_estimates, recall_estimates_curves,
tight_1m). Each row gets ``benchmark``, ``kind``, ``dataset``, ``nb``, ``d``, ``threads``,
``command``, ``git_sha``, ``machine``, ``load_avg_1m`` and ``time_utc``, derived only from what
the row, or the run it belongs to, already records; a value that was never recorded is an
explicit null, and the row's ``provenance_note`` says what was derived from what and what was
never recorded. No measured value changes: fields are renamed (``ts`` -> ``time_utc``, ``N`` ->
``nb``, ...) or lifted (``machine.load_avg_start`` -> ``load_avg_start``), and ``check`` proves
that every value of the old row is in the new one, under its old name or its new one. Rows stay
in order. Kept in the repository so that the change to the committed rows can be reviewed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
Row = dict[str, Any]
HEAD = "Migrated by docs/experiments/migrate_provenance.py from the writer's earlier format"
NO_COMMAND = "command: not recorded by the writer"


def _note(*parts: str) -> str:
    return f"{HEAD}. " + "; ".join(parts) + "."


def _utc(text: str) -> str:
    """An ISO time with a zero UTC offset, as ``benchmarks.provenance.utc_now`` writes it."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:Z|\+00:?00)", text)
    if not m:
        raise ValueError(f"{text!r} is not a UTC time")
    return m.group(1) + "Z"


def _finish(row: Row, renamed: dict[str, str], fields: Row, note: str) -> Row:
    """The row with keys renamed in place and the provenance fields appended, in the writers'
    order (the row's own fields first)."""
    out: Row = {}
    for key, value in row.items():
        out[renamed.get(key, key)] = value
    for key, value in fields.items():
        if key in out and out[key] != value:
            raise ValueError(f"{key}: the row already holds {out[key]!r}, not {value!r}")
        out[key] = value
    out["provenance_note"] = note
    return out


# -- embedders.jsonl (benchmarks/embedders.py, one run) ---------------------------------------------


def embedders(rows: list[Row]) -> list[Row]:
    created = {r["created"] for r in rows}
    if len(created) != 1:
        raise ValueError(f"embedders.jsonl holds {len(created)} runs; this migration expects one")
    time_utc = _utc(created.pop())
    note = _note(
        "nb: the run's n_texts (texts timed)",
        "d: the dimension of all-MiniLM-L6-v2, the model named in embedder_id",
        "threads: the variant's thread count, recorded as a number",
        "load_avg_start / load_avg_end: lifted from machine; load_avg_1m: load_avg_end's "
        "1-minute figure (the rows were written at the end of the run)",
        "time_utc: the run's created time",
        NO_COMMAND,
    )
    out = []
    for r in rows:
        machine = dict(r["machine"])
        start, end = machine.pop("load_avg_start"), machine.pop("load_avg_end")
        fields = {
            "benchmark": "embedders", "kind": "variant", "d": 384,
            "threads": {"embed": r["threads"], "how": "torch.set_num_threads for torch; ONNX "
                        "Runtime intra_op_num_threads (inter_op 1) for onnx"},
            "command": None, "machine": machine, "load_avg_start": start, "load_avg_end": end,
            "load_avg_1m": round(end[0], 2), "time_utc": time_utc,
        }  # fmt: skip
        own = {k: v for k, v in r.items() if k not in ("machine", "created", "threads")}
        out.append(_finish(own, {"n_texts": "nb"}, fields, note))
    return out


# -- interests.jsonl (benchmarks/interests.py, one run) ---------------------------------------------


def interests(rows: list[Row]) -> list[Row]:
    sample = next(r for r in rows if r["dataset"] == "sample")
    out = []
    for r in rows:
        latency = r["name"] == "interests-latency"
        fields: Row = {"benchmark": "interests", "kind": "latency" if latency else "quality"}
        parts = []
        if "threads" not in r:  # the esci rows
            fields |= {"threads": sample["threads"], "machine": sample["machine"]}
            parts.append("threads, machine: the same run's sample rows (one process wrote every "
                         "row; the esci servers ran at the same ServerConfig defaults)")  # fmt: skip
        renamed = {"N": "nb"}
        if latency:
            renamed["load_avg_1m_end"] = "load_avg_1m"
            parts.append("load_avg_1m: load_avg_1m_end, read after the timed calls")
        else:
            fields["load_avg_1m"] = None
            parts.append("load_avg_1m: not recorded (recall rows)")
        parts += [
            "time_utc: not recorded (the run's code, 237d26e697dc, was committed at "
            "2026-12-01T13:05:08Z and these rows at 13:11:15Z)",
            NO_COMMAND,
        ]
        fields |= {"command": None, "time_utc": None}
        out.append(_finish(r, renamed, fields, _note(*parts)))
    return out


# -- recall_control.jsonl (docs/experiments/recall_control.py) --------------------------------------

RC_THREADS = {"server_omp": 1, "server_alone_omp": 2, "clients": 1,
              "how": "server defaults (2 cores)"}  # fmt: skip


def recall_control(rows: list[Row]) -> list[Row]:
    out: list[Row] = []
    pending: list[Row] = []  # a run's checkpoints come before its run row
    for r in rows:
        if r["kind"] == "checkpoint":
            pending.append(r)
            continue
        if r["kind"] == "run":
            if r["threads"] != RC_THREADS["how"]:
                raise ValueError(f"unexpected threads {r['threads']!r}")
            fields = {
                "benchmark": "recall_control", "threads": RC_THREADS, "command": None,
                "machine": None, "load_avg_1m": round(r["load_avg"][0], 2),
            }  # fmt: skip
            run_note = [
                "threads: recorded as 'server defaults (2 cores)' (kept in threads.how): "
                "ServerConfig at this git sha searches on 1 OpenMP thread, a lone search on "
                "min(2, cores); one client",
                "load_avg_1m: load_avg's 1-minute figure, read at the end of the run",
                "time_utc: the run's time",
                "machine: not recorded (the label names the machine's state)",
                NO_COMMAND + " (the label and dataset were)",
            ]
            run = _finish({k: v for k, v in r.items() if k != "threads"}, {"time": "time_utc"},
                          fields, _note(*run_note))  # fmt: skip
            for c in pending:
                derived = {
                    "benchmark": "recall_control", "dataset": r["dataset"], "nb": r["nb"],
                    "d": r["d"], "threads": RC_THREADS, "command": None, "git_sha": r["git_sha"],
                    "machine": None, "load_avg_1m": None, "time_utc": None, "label": r["label"],
                }  # fmt: skip
                out.append(_finish(c, {}, derived, _note(
                    "dataset, nb, d, threads, git_sha, label: the kind=run row that follows "
                    "this run's checkpoints (the same run wrote them together)",
                    "load_avg_1m, time_utc: not recorded per checkpoint (the run row has the "
                    "run's, read at its end)",
                    "machine: not recorded", NO_COMMAND,
                )))  # fmt: skip
            pending = []
            out.append(run)
        elif r["kind"] == "exact_cost":
            fields = {
                "benchmark": "recall_control", "dataset": "standard-normal",
                "threads": {"exact": r["threads"], "how": "threadpool_limits(1, blas) and "
                            "omp_threads(1)"},
                "command": None, "machine": None, "load_avg_1m": round(r["load_avg"][0], 2),
                "time_utc": None,
            }  # fmt: skip
            own = {k: v for k, v in r.items() if k != "threads"}
            out.append(_finish(own, {}, fields, _note(
                "dataset: not recorded by name; the writer's exact_costs() times exact_search "
                "over numpy default_rng(0).standard_normal vectors",
                "threads: the recorded count (1) with how the writer limits it",
                "load_avg_1m: load_avg's 1-minute figure",
                "machine, time_utc: not recorded", NO_COMMAND,
            )))  # fmt: skip
        else:
            raise ValueError(f"unexpected kind {r['kind']!r}")
    if pending:
        raise ValueError("checkpoints without a run row at the end of recall_control.jsonl")
    return out


# -- root_overhead.jsonl (benchmarks/root_overhead.py, two runs) --------------------------------------


def root_overhead(rows: list[Row]) -> list[Row]:
    out = []
    for r in rows:
        fields = {"benchmark": "root_overhead", "kind": "overhead", "command": None,
                  "load_avg_1m": round(r["load_avg"][0], 2), "time_utc": _utc(r["ts"])}  # fmt: skip
        note = _note(
            "load_avg_1m: load_avg's 1-minute figure, read after the row's calls",
            "time_utc: ts",
            NO_COMMAND + " (build_s 0.0: both runs served versions built earlier under --work, "
            "--reuse-builds)",
        )
        out.append(_finish({k: v for k, v in r.items() if k != "ts"}, {}, fields, note))
    return out


# -- recall_estimates.jsonl and recall_estimates_curves.jsonl ---------------------------------------

UNRECORDED = "threads, machine, load_avg_1m, time_utc: not recorded (recall is unaffected by them)"


def recall_estimates(rows: list[Row]) -> list[Row]:
    fields = {"benchmark": "recall_estimates", "kind": "compare", "threads": None,
              "command": None, "machine": None, "load_avg_1m": None, "time_utc": None}  # fmt: skip
    note = _note(
        "nb: n", UNRECORDED + "; the p50_ms figures were timed on an unrecorded load",
        "committed in adba897 (2026-12-01T12:56:24Z)", NO_COMMAND,
    )  # fmt: skip
    return [_finish(r, {"n": "nb"}, fields, note) for r in rows]


def recall_estimates_curves(rows: list[Row], compare: list[Row]) -> list[Row]:
    size = {r["dataset"]: (r.get("n", r.get("nb")), r["d"]) for r in compare}
    out = []
    for r in rows:
        nb, d = size[r["dataset"]]
        fields = {"benchmark": "recall_estimates", "kind": "curve", "nb": nb, "d": d,
                  "threads": None, "command": None, "git_sha": None, "machine": None,
                  "load_avg_1m": None, "time_utc": None}  # fmt: skip
        note = _note(
            "nb, d: recall_estimates.jsonl's row of the same dataset (both commands read the "
            "same cached embeddings)",
            UNRECORDED, "git_sha: not recorded; committed in adba897 (2026-12-01T12:56:24Z) "
            "beside recall_estimates.jsonl", NO_COMMAND,
        )  # fmt: skip
        out.append(_finish(r, {}, fields, note))
    return out


# -- tight_1m.jsonl (docs/experiments/tight_1m.py, two runs) ------------------------------------------

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d),\d+ ")


def tight_1m(rows: list[Row]) -> list[Row]:
    out = []
    data: Row | None = None
    for r in rows:
        step = r["step"]
        fields: Row = {"benchmark": "tight_1m", "threads": None, "command": None,
                       "machine": None, "load_avg_1m": None, "time_utc": None}  # fmt: skip
        parts = ["kind: step", "threads, machine, load_avg_1m: not recorded", NO_COMMAND]
        renamed = {"step": "kind"}
        if step == "data":
            data = r
            parts.append("time_utc: not recorded")
        else:
            if data is None:
                raise ValueError("a tight_1m run starts with its data row")
            fields |= {"dataset": data["dataset"], "nb": data["nb"], "d": data["d"],
                       "git_sha": data["git_sha"]}  # fmt: skip
            parts.append("dataset, nb, d, git_sha: the data row this run wrote first")
        if step == "build":
            renamed["command"] = "build_command"
            m = LOG_TIME.match(r["stderr_tail"][-1])
            if not m:
                raise ValueError(f"no log time in {r['stderr_tail'][-1]!r}")
            fields["time_utc"] = f"{m.group(1)}T{m.group(2)}Z"
            parts += ["build_command: the adindex command this run started (was command)",
                      "time_utc: the last line of the build's log (UTC: its version id is "
                      "stamped in UTC at the 'Publishing ...' line)"]  # fmt: skip
        elif step == "served":
            parts.append("time_utc: not recorded")
        out.append(_finish(r, renamed, fields, _note(*parts)))
    return out


# -- driver -----------------------------------------------------------------------------------------


def check(old: list[Row], new: list[Row], renamed: dict[str, str]) -> None:
    """Every old value is in the new row (under its new name when renamed), in the same order."""
    if len(old) != len(new):
        raise ValueError(f"{len(old)} rows became {len(new)}")
    for n, (a, b) in enumerate(zip(old, new, strict=True), 1):
        flat = dict(b)
        flat.update({f"machine.{k}": v for k, v in (b.get("machine") or {}).items()})
        for key, value in a.items():
            if key == "machine":
                for mk, mv in value.items():
                    where = flat[f"machine.{mk}"] if f"machine.{mk}" in flat else b.get(mk)
                    if where != mv:
                        raise ValueError(f"line {n}: machine.{mk} {mv!r} is lost")
                continue
            new_key = renamed.get(key, key)
            got = b.get(new_key)
            if key in ("ts", "created", "time"):
                got_ok = got == _utc(value)
            elif key == "threads" and isinstance(got, dict) and not isinstance(value, dict):
                got_ok = value in got.values() or got.get("how") == value
            else:
                got_ok = got == value
            if not got_ok:
                raise ValueError(f"line {n}: {key} {value!r} is not kept as {new_key}")


RENAMES = {
    "embedders": {"n_texts": "nb", "created": "time_utc"},
    "interests": {"N": "nb", "load_avg_1m_end": "load_avg_1m"},
    "recall_control": {"time": "time_utc"},
    "root_overhead": {"ts": "time_utc"},
    "recall_estimates": {"n": "nb"},
    "recall_estimates_curves": {},
    "tight_1m": {"step": "kind", "command": "build_command"},
}


def migrate(results: Path = RESULTS, *, write: bool = True) -> dict[str, int]:
    """Migrate every file of ``RENAMES`` under ``results``; returns rows per file."""
    read: Callable[[str], list[Row]] = lambda stem: [  # noqa: E731
        json.loads(line) for line in (results / f"{stem}.jsonl").read_text().splitlines() if line
    ]
    old = {stem: read(stem) for stem in RENAMES}
    for stem, rows in old.items():
        if any("provenance_note" in r for r in rows):
            raise SystemExit(f"{stem}.jsonl is migrated already")
    new = {
        "embedders": embedders(old["embedders"]),
        "interests": interests(old["interests"]),
        "recall_control": recall_control(old["recall_control"]),
        "root_overhead": root_overhead(old["root_overhead"]),
        "recall_estimates": recall_estimates(old["recall_estimates"]),
        "recall_estimates_curves": recall_estimates_curves(
            old["recall_estimates_curves"], old["recall_estimates"]
        ),
        "tight_1m": tight_1m(old["tight_1m"]),
    }
    sys.path.insert(0, str(ROOT))
    from benchmarks.docs import REQUIRED

    for stem, rows in new.items():
        check(old[stem], rows, RENAMES[stem])
        for n, row in enumerate(rows, 1):
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise ValueError(f"{stem}.jsonl:{n}: still missing {', '.join(missing)}")
        if write:
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (results / f"{stem}.jsonl").write_text(text, encoding="utf-8")
    return {stem: len(rows) for stem, rows in new.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    for stem, n in migrate(args.results, write=not args.check).items():
        print(f"{'would migrate' if args.check else 'migrated'} {n} rows of {stem}.jsonl")


if __name__ == "__main__":
    main()
