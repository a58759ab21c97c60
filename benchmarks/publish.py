"""Copy the result rows a doc cites from a scratch run into docs/results/, verbatim.

    python -m benchmarks.publish --from benchmarks/results/esci --to docs/results/recall-latency-esci-shared.jsonl
    python -m benchmarks.publish --from benchmarks/results/load/load-100k.jsonl \\
        --to docs/results/load-100k-shared.jsonl --where mode:saturate --where setting:on,off

``benchmarks/results/`` is scratch output (gitignored); ``docs/results/NAME.jsonl`` holds one
run's cited rows, one self-describing JSON line each, and is what ``python -m benchmarks.docs``
renders. ``--from`` takes files or run directories (every ``*.jsonl`` in them); ``--where
FIELD:V1,V2`` (dotted fields, repeatable) keeps only the rows a doc cites. Rows are checked
(``benchmarks.docs.REQUIRED``) and copied byte for byte; rows measured on uncommitted code
(``-dirty`` git sha) need ``--allow-dirty``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.doc_views import DocsError, canonical, lookup
from benchmarks.docs import REQUIRED


def source_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; for a directory, every ``*.jsonl`` in it."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise DocsError(f"{path}: no such file or directory")
    if not files:
        raise DocsError(f"no .jsonl files in {', '.join(map(str, paths))}")
    return files


def select_lines(files: Sequence[Path], where: Sequence[str], allow_dirty: bool) -> list[str]:
    """The raw lines whose rows pass every ``FIELD:V1,V2`` condition; errors name file:line."""
    conditions = []
    for condition in where:
        path, sep, values = condition.partition(":")
        if not sep:
            raise DocsError(f"--where {condition!r}: use FIELD:V1,V2")
        conditions.append((path, set(values.split(","))))
    kept = []
    for file in files:
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DocsError(f"{file}:{n}: not JSON: {exc}") from None
            if not all(canonical(lookup(row, path)) in ok for path, ok in conditions):
                continue
            missing = [key for key in REQUIRED if key not in row]
            if missing:
                raise DocsError(f"{file}:{n}: not self-describing: missing {', '.join(missing)}")
            if str(row["git_sha"]).endswith("-dirty") and not allow_dirty:
                raise DocsError(f"{file}:{n}: measured on uncommitted code ({row['git_sha']}); "
                                "commit and re-run, or pass --allow-dirty")  # fmt: skip
            kept.append(line)
    return kept


def publish(
    sources: Sequence[Path],
    to: Path,
    where: Sequence[str] = (),
    *,
    append: bool = False,
    allow_dirty: bool = False,
) -> list[str]:
    """Write (or append) the selected lines to ``to``; returns them."""
    lines = select_lines(source_files(sources), where, allow_dirty)
    if not lines:
        raise DocsError("no row matches: nothing published (check --where)")
    to.parent.mkdir(parents=True, exist_ok=True)
    with to.open("a" if append else "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.publish",
        description="Copy the result rows a doc cites into docs/results/NAME.jsonl.",
    )
    p.add_argument("--from", dest="sources", type=Path, nargs="+", required=True,
                   help="result files or run directories (their *.jsonl)")  # fmt: skip
    p.add_argument("--to", type=Path, required=True, help="docs/results/NAME.jsonl")
    p.add_argument("--where", action="append", default=[], metavar="FIELD:V1,V2",
                   help="keep rows whose (dotted) field has one of the values; repeatable")  # fmt: skip
    p.add_argument("--append", action="store_true", help="add to the file instead of replacing it")
    p.add_argument("--allow-dirty", action="store_true", help="publish rows of uncommitted code")
    args = p.parse_args(argv)
    try:
        lines = publish(args.sources, args.to, args.where, append=args.append,
                        allow_dirty=args.allow_dirty)  # fmt: skip
    except DocsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in lines]
    loads = [r["load_avg_1m"] for r in rows]
    print(f"wrote {len(rows)} rows to {args.to} (git {', '.join(sorted({r['git_sha'] for r in rows}))}; "
          f"load average {min(loads):.1f}-{max(loads):.1f}); now `make docs`")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
