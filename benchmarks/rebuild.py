"""Rebuild after a small catalog change: the embedding cache against a first build.

Writes an N-ad sample text catalog (``indexer.sample``), times ``adindex build`` on it with an
empty embedding cache, changes the titles of a fraction of the ads (every k-th ad), and times
the same command again: only the changed ads should be embedded. Each build runs as its own
``adindex build`` process, so a time is end to end (interpreter start, imports, model load,
reading, embedding, training, recall gate, publish). Optionally a third build runs the
rebuild with ``--engine ray`` (a local Ray) against the same cache.

One JSON line per build (and one for the ratio) goes to --results::

    python -m benchmarks.rebuild --ads 100000 --changed 0.01 \\
        --results docs/results/rebuild.jsonl

The 100k first build embeds for ~15-20 minutes on 2 cores: run it in the background, nice'd.
The machine may be shared: each line records the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.provenance import command, git_sha, provenance
from indexer.artifact import read_manifest, resolve
from indexer.catalog import write_catalog_jsonl
from indexer.records import AdRecord
from indexer.sample import generate_catalog


@dataclass(frozen=True)
class RebuildConfig:
    ads: int = 100_000
    changed: float = 0.01  # share of ads whose title changes between the builds
    seed: int = 7
    work: Path | None = None  # catalog and artifact root (None: a temporary directory)
    ray_rebuild: bool = False  # also time the rebuild with --engine ray (local Ray)
    threads: int | None = None  # --threads of the builds (None: the build's default)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def timed_build(catalog: Path, out: Path, *args: str) -> tuple[float, Path, float, float]:
    """Run ``adindex build``; (wall seconds, version dir, load before, load after)."""
    argv = [sys.executable, "-m", "retrieval.cli", "build", "--catalog", str(catalog),
            "--out", str(out), *args]  # fmt: skip
    before = _load()
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - t0
    return wall, resolve(out), before, _load()


def record(
    run: str, config: RebuildConfig, wall: float, version: Path, load: tuple[float, float], sha: str
) -> dict[str, object]:
    m = read_manifest(version)
    e, q = m.embedding, m.quality
    return {
        "benchmark": "rebuild",
        "kind": run,
        "dataset": "sample",
        "nb": m.counts.ads,
        "d": m.dimension,
        "changed": round(config.ads * config.changed),
        "engine": m.build.engine,
        "embedder": m.model.embedder,
        "wall_s": round(wall, 2),
        "stages_s": m.build.seconds,
        "embed_s": embed_seconds(m.build.seconds),
        "embedded": e.embedded if e else None,
        "reused": e.reused if e else None,
        "texts_embedded": e.texts_embedded if e else None,
        "index_key": m.index.factory,
        "nprobe": m.search.nprobe,
        "k_factor": m.search.k_factor,
        "k": q.recall_k if q else None,
        "recall_at_k": q.chosen.recall if q else None,
        "threads": m.build.threads,
        "load_1m_before": load[0],
        "load_1m_after": load[1],
        **provenance(command(module="benchmarks.rebuild")),
        "load_avg_1m": load[0],
        "git_sha": sha,  # of the code at the start
    }


def embed_seconds(stages: dict[str, float]) -> float | None:
    """The embedding stage's seconds ("Embedding N ads") of a manifest's per-stage times."""
    return next((v for k, v in stages.items() if k.startswith("Embedding")), None)


def change(records: list[AdRecord], share: float, tag: str) -> list[AdRecord]:
    """Every k-th ad gets a new title (k = 1 / share): its text, hence its vector, changes."""
    step = max(1, round(1 / share))
    return [
        dataclasses.replace(r, title=f"{r.title} ({tag} edition {i})") if i % step == 0 else r
        for i, r in enumerate(records)
    ]


def run(config: RebuildConfig, results: Path) -> list[dict[str, object]]:
    work = config.work or Path(tempfile.mkdtemp(prefix="adindex-rebuild-"))
    work.mkdir(parents=True, exist_ok=True)
    catalog, out = work / "catalog.jsonl", work / "index"
    shutil.rmtree(out, ignore_errors=True)  # an empty embedding cache for the first build
    records = generate_catalog(config.ads, seed=config.seed)
    write_catalog_jsonl(records, catalog)
    args = ["--threads", str(config.threads)] if config.threads else []
    sha = git_sha()  # of the code at the start (the builds run for a long while)
    lines: list[dict[str, object]] = []

    def keep(line: dict[str, object]) -> None:  # written at once: a later failure keeps it
        lines.append(line)
        with results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    wall, version, *load = timed_build(catalog, out, *args)
    keep(record("first", config, wall, version, (load[0], load[1]), sha))
    first = wall
    write_catalog_jsonl(change(records, config.changed, "new season"), catalog)
    wall, version, *load = timed_build(catalog, out, *args)
    keep(record("rebuild", config, wall, version, (load[0], load[1]), sha))
    keep({"benchmark": "rebuild", "kind": "speedup", "dataset": "sample", "nb": config.ads,
          "d": lines[0]["d"], "threads": lines[0]["threads"], "engine": "local",
          "first_s": round(first, 2), "rebuild_s": round(wall, 2),
          "speedup": round(first / wall, 1),
          **provenance(command(module="benchmarks.rebuild")), "git_sha": sha})  # fmt: skip
    if config.ray_rebuild:
        write_catalog_jsonl(change(records, config.changed, "winter"), catalog)  # new changes
        wall, version, *load = timed_build(catalog, out, *args, "--engine", "ray")
        keep(record("rebuild-ray", config, wall, version, (load[0], load[1]), sha))
    return lines


def main(argv: list[str] | None = None) -> int:
    d = RebuildConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ads", type=int, default=d.ads, help="catalog size (default: %(default)s)")
    p.add_argument("--changed", type=float, default=d.changed,
                   help="share of ads changed between the builds (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--work", type=Path, help="directory for the catalog and index (default: a temp dir)"
    )
    p.add_argument("--threads", type=int, help="--threads of the builds (default: all cores)")
    p.add_argument("--ray-rebuild", action="store_true",
                   help="also time a rebuild with --engine ray against the same cache")  # fmt: skip
    p.add_argument("--results", type=Path, default=Path("benchmarks/results/rebuild.jsonl"),
                   help="JSON lines appended here (default: %(default)s)")  # fmt: skip
    args = p.parse_args(argv)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    config = RebuildConfig(args.ads, args.changed, work=args.work, ray_rebuild=args.ray_rebuild,
                           threads=args.threads)  # fmt: skip
    lines = run(config, args.results)
    print(f"{'run':<12} {'wall s':>8} {'embedded':>9} {'reused':>8}  recall  engine")
    for line in lines:
        if line["kind"] == "speedup":
            continue
        print(f"{line['kind']:<12} {line['wall_s']:>8} {line['embedded']:>9} {line['reused']:>8}"
              f"  {line['recall_at_k']}  {line['engine']}")  # fmt: skip
    speed = next(line for line in lines if line["kind"] == "speedup")
    print(f"rebuild after changing {config.changed:.0%}: {speed['speedup']}x faster end to end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
