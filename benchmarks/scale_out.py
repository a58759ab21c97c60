"""Local build against Ray builds on this machine, interleaved: what Ray costs and where.

Three ways to run the same ``adindex build`` (each an end-to-end process, the embedding cache
off so every build embeds everything), in interleaved rounds so that a busy machine weighs on
each alike:

- ``local``: ``--engine local`` (the default);
- ``ray-local``: ``--engine ray``, starting and stopping its own local Ray;
- ``ray-cluster``: ``--engine ray --ray-address ADDR``, joining a Ray head started once with
  ``ray start --head --block`` (stopped at the end, by its process ids).

One JSON line per build::

    python -m benchmarks.scale_out --ads 2000 --rounds 2 --results docs/results/scale_out.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from benchmarks.provenance import command, git_sha, provenance
from indexer.artifact import read_manifest, resolve
from indexer.sample import write_sample

MODES = ("local", "ray-local", "ray-cluster")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def ray_head(cpus: int) -> Iterator[str]:
    """A Ray head (``ray start --head --block``) in its own session; yields its address."""
    port = _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    argv = [ray, "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
            "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # ready when its GCS port accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray start --head did not come up at {address}") from None
                time.sleep(0.5)
        yield address
    finally:
        started = [p for p in psutil.process_iter() if _sid(p.pid) == proc.pid]
        for p in started:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                continue
        _, alive = psutil.wait_procs(started, timeout=30)
        for p in alive:
            p.kill()
        proc.wait(timeout=30)


def _sid(pid: int) -> int:
    try:
        return os.getsid(pid)
    except OSError:
        return -1


def timed_build(mode: str, catalog: Path, out: Path, address: str) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "retrieval.cli", "build", "--catalog", str(catalog),
            "--out", str(out), "--no-embedding-cache"]  # fmt: skip
    if mode != "local":
        argv += ["--engine", "ray"]
    if mode == "ray-cluster":
        argv += ["--ray-address", address]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    m = read_manifest(resolve(out))
    q = m.quality
    return {
        "benchmark": "scale_out",
        "kind": mode,
        "dataset": "sample",
        "nb": m.counts.ads,
        "d": m.dimension,
        "engine": m.build.engine,
        "nodes": m.build.nodes,
        "wall_s": round(wall, 2),
        "stages_s": m.build.seconds,
        "index_key": m.index.factory,
        "k": q.recall_k if q else None,
        "recall_at_k": q.chosen.recall if q else None,
        "threads": m.build.threads,
        "cpus": os.cpu_count(),
        "load_1m_before": round(load, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
        **provenance(command(module="benchmarks.scale_out")),
        "load_avg_1m": round(load, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--ads", type=int, default=2000, help="sample catalog size (default: %(default)s)"
    )
    p.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds (default: %(default)s)"
    )
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated (default: all)")
    p.add_argument("--results", type=Path, default=Path("benchmarks/results/scale_out.jsonl"))
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    work = Path(tempfile.mkdtemp(prefix="adindex-scale-out-"))
    catalog, _ = write_sample(work / "sample", n_ads=args.ads, n_users=1)
    sha = git_sha()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with ray_head(os.cpu_count() or 1) if "ray-cluster" in modes else _none() as address:
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:  # ABC CBA: order evens out
                line = timed_build(mode, catalog, work / mode, address)
                line.update(round=r, git_sha=sha)
                with args.results.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(line, sort_keys=True) + "\n")
                print(f"round {r} {mode:<12} {line['wall_s']:>8} s  recall {line['recall_at_k']}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


@contextmanager
def _none() -> Iterator[str]:
    yield ""


if __name__ == "__main__":
    sys.exit(main())
