"""Loopback load generator for the gRPC server: achieved QPS and p50/p95/p99 at a fixed offered
rate and at saturation, with and without micro-batching, plus recall@k through the server.

Clients are spread over ``--procs`` processes (``spawn``: no fork after FAISS or gRPC started),
each running threads with their own channel; Python client overhead is real on two cores, so
the client processes compete with the server for the same CPUs and the numbers are a lower
bound for the server. Every run is bounded in time (``--duration-s``) and in calls
(``--max-calls``), and only 127.0.0.1 targets are accepted.

    # an artifact from the calibrated synthetic set (base, queries and exact top-k)
    python -m benchmarks.load make-index --nb 100000 --out /tmp/load-100k
    # start the server (batching on, then off) and sweep saturation and fixed rates
    python -m benchmarks.load run --index /tmp/load-100k/index --batching on,off \\
        --clients 1,4,16,32 --rates 250,500,1000,1500 --duration-s 10

Modes: ``saturate`` (closed loop: each client sends its next call when the last returns) and
``rate`` (open loop at a fixed total rate; latency counts from the scheduled send time, so a
client that falls behind is charged for it: no coordinated omission).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.load_index import make_index, served_recall
from benchmarks.load_report import plot, record, table
from benchmarks.provenance import command

logger = logging.getLogger(__name__)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before FAISS loads (make-index, truth)
RESULTS = Path("benchmarks/results/load")


@dataclass(frozen=True)
class LoadRun:
    """One load level against one server."""

    target: str
    mode: Literal["saturate", "rate"]
    clients: int
    procs: int
    duration_s: float
    warmup_s: float
    max_calls: int
    k: int
    nprobe: int = 0
    rate_qps: float = 0.0  # rate mode: total offered calls/s

    def __post_init__(self) -> None:
        host = self.target.rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"target must be on 127.0.0.1 (loopback only); got {self.target}")
        if self.clients < 1 or self.procs < 1:
            raise ValueError(f"clients and procs must be >= 1; got {self.clients}, {self.procs}")
        if not 0 <= self.warmup_s < self.duration_s <= 600:
            raise ValueError(
                f"need 0 <= warmup_s < duration_s <= 600; got {self.warmup_s}, {self.duration_s}"
            )
        if self.mode == "rate" and self.rate_qps <= 0:
            raise ValueError(f"rate mode needs rate_qps > 0; got {self.rate_qps}")


@dataclass
class LoadResult:
    run: LoadRun
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    # CPU per call over the whole level (warm-up included): what the two cores are spent on.
    client_cpu_ms: float | None = None  # the client processes, per call they made
    server_cpu_ms: float | None = None  # the server process (when its pid is known), per call


# -- client processes -----------------------------------------------------------------------------


def _client_thread(
    run: LoadRun,
    xq: np.ndarray,
    index: int,
    start: float,
    quota: int,
    out: list[tuple[float, float, str]],
) -> None:
    import grpc

    from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

    requests = [
        retrieval_pb2.RetrieveRequest(user_embedding=q.tolist(), k=run.k, nprobe=run.nprobe)
        for q in xq[index % len(xq) :][:256]
    ] or [retrieval_pb2.RetrieveRequest(user_embedding=xq[0].tolist(), k=run.k)]
    with grpc.insecure_channel(run.target) as channel:
        call = retrieval_pb2_grpc.RetrievalServiceStub(channel).Retrieve  # type: ignore[no-untyped-call]
        call(requests[0], timeout=30)  # connect before the clock starts
        interval = run.clients / run.rate_qps if run.mode == "rate" else 0.0
        due = start + (index / run.rate_qps if run.mode == "rate" else 0.0)
        end = start + run.duration_s
        time.sleep(max(0.0, start - time.time()))
        for i in range(quota):
            if run.mode == "rate":
                time.sleep(max(0.0, due - time.time()))
                sent = due  # charged from when the call was due, even if we are late
                due += interval
            else:
                sent = time.time()
            if sent >= end or time.time() > end + run.duration_s:  # done, or hopelessly behind
                break
            try:
                call(requests[i % len(requests)], timeout=10)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            out.append((sent - start, time.time() - sent, code))


def _client_process(
    run: LoadRun, xq: np.ndarray, first: int, count: int, start: float, conn: Connection
) -> None:
    """One spawned process running ``count`` client threads; sends back its samples (sent,
    latency, code) and the CPU seconds its threads used."""
    out: list[tuple[float, float, str]] = []
    quota = max(1, run.max_calls // run.clients)
    threads = [
        threading.Thread(target=_client_thread, args=(run, xq, first + i, start, quota, out))
        for i in range(count)
    ]
    for t in threads:
        t.start()
    time.sleep(max(0.0, start - time.time()))
    cpu0 = time.process_time()  # from the common start: imports and connecting are done by now
    for t in threads:
        t.join()
    conn.send((out, time.process_time() - cpu0))
    conn.close()


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and its live descendants so far (a server of
    several processes); Linux ``/proc``, None elsewhere."""
    fields = _stat(pid)
    if fields is None:
        return None
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (f := _stat(entry.name)) is not None:
            parent_of[int(entry.name)] = (int(f[1]), f)  # ppid, fields
    tree, total = {pid}, 0.0
    for _ in range(8):  # descendants, a few generations deep
        tree |= {p for p, (ppid, _) in parent_of.items() if ppid in tree}
    for p in tree:
        f = fields if p == pid else parent_of[p][1]
        total += int(f[11]) + int(f[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def drive(run: LoadRun, xq: np.ndarray, server_pid: int | None = None) -> LoadResult:
    """Run one load level; returns achieved QPS and latency percentiles of the measured window,
    and the CPU per call of the clients and (given its pid) of the server, both counted from
    the common start (after the clients imported and connected) over every call made since."""
    ctx = mp.get_context("spawn")
    procs = min(run.procs, run.clients)
    share = [run.clients // procs + (i < run.clients % procs) for i in range(procs)]
    start = time.time() + 3.0 + 0.5 * procs  # time for the spawned interpreters to import
    pipes, workers = [], []
    for i, count in enumerate(share):
        receive, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_client_process, args=(run, xq, sum(share[:i]), count, start, send))
        p.start()
        pipes.append(receive)
        workers.append(p)
    time.sleep(max(0.0, start - time.time()))
    server_cpu0 = process_cpu_s(server_pid) if server_pid is not None else None
    samples: list[tuple[float, float, str]] = []
    client_cpu_s = 0.0
    for receive, p in zip(pipes, workers, strict=True):
        out, cpu_s = receive.recv()
        samples += out
        client_cpu_s += cpu_s
        p.join()
    result = summarize(run, samples)
    calls = max(1, len(samples))
    result.client_cpu_ms = 1e3 * client_cpu_s / calls
    server_cpu1 = process_cpu_s(server_pid) if server_pid is not None else None
    if server_cpu0 is not None and server_cpu1 is not None:
        result.server_cpu_ms = 1e3 * (server_cpu1 - server_cpu0) / calls
    return result


def summarize(run: LoadRun, samples: Sequence[tuple[float, float, str]]) -> LoadResult:
    """Latency percentiles of calls sent (or due) in the window after warm-up, and the rate at
    which they completed: over the wall time from the window's start to its last completion."""
    window = [s for s in samples if run.warmup_s <= s[0] < run.duration_s]
    ok = np.array([lat for _, lat, code in window if code == "OK"]) * 1e3
    errors: dict[str, int] = {}
    for _, _, code in window:
        if code != "OK":
            errors[code] = errors.get(code, 0) + 1
    wall_s = max((sent + lat for sent, lat, _ in window), default=0.0) - run.warmup_s
    p50, p95, p99 = np.percentile(ok, [50, 95, 99]) if len(ok) else (np.nan,) * 3
    return LoadResult(
        run=run,
        qps=len(ok) / wall_s if wall_s > 0 else 0.0,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        ok=len(ok),
        errors=errors,
    )


# -- the server under test --------------------------------------------------------------------------


class Spawned:
    """A server process on a free loopback port, ready once its stderr says ``ready``;
    ``target`` is its address. SIGTERM on close."""

    def _start(self, cmd: Sequence[str], code: Path | None, ready: str = "Serving index") -> None:
        env = None
        if code is not None:  # its packages first: cwd is sys.path[0] for -m
            env = {**os.environ, "PYTHONPATH": str(code.resolve())}
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=code, env=env)
        self.pid = self.proc.pid
        assert self.proc.stderr is not None
        port, lines = 0, []
        for line in self.proc.stderr:
            lines.append(line)
            match = re.search(r"Listening on 127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else port
            if ready in line:
                break
        if not port or self.proc.poll() is not None:
            raise RuntimeError(f"{cmd[3]} did not start:\n" + "".join(lines))
        self.target = f"127.0.0.1:{port}"
        self._reader = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._reader.start()  # keep the pipe empty

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class Server(Spawned):
    """``adindex serve`` in a subprocess on a free loopback port; SIGTERM on exit.

    ``code``: run the server from this checkout of the repository instead (A/B of two code
    versions: ``git worktree add`` or ``git archive`` a commit there). ``bare``: run
    ``benchmarks.bare_server`` instead (the floor: gRPC around the same FAISS search).
    """

    def __init__(
        self,
        index: Path,
        batching: bool,
        workers: int,
        extra: Sequence[str] = (),
        alone_threads: int | None = None,
        *,
        code: Path | None = None,
        bare: bool = False,
        shadow_rate: float = 0.0,
    ):
        if bare:
            module = ["benchmarks.bare_server", "--index", str(index), "--workers", str(workers)]
            self._start([sys.executable, "-m", *module, *extra], code)
            return
        cmd = [
            sys.executable,
            "-m",
            "retrieval.cli",
            "serve",
            "--index",
            str(index),
            "--port",
            "0",
            "--batching",
            "on" if batching else "off",
            "--workers",
            str(workers),
            *(["--alone-threads", str(alone_threads)] if alone_threads else []),
            "--shadow-rate",
            str(shadow_rate),
            "--watch-interval-s",
            "0",
            "--max-active-calls",
            "4096",
            *extra,
        ]
        self._start(cmd, code)


# -- command line -----------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0]
    )
    sub = p.add_subparsers(dest="subcommand", required=True)
    m = sub.add_parser("make-index", help="publish an artifact from the calibrated synthetic set")
    m.add_argument("--nb", type=int, default=100_000)
    m.add_argument("--nq", type=int, default=1000)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--factory", default=None, help="default: what indexer.params chooses for --nb")
    m.add_argument(
        "--dataset",
        choices=("calibrated", "sample"),
        default="calibrated",
        help="calibrated synthetic vectors, or the sample catalog embedded with the real model "
        "(--nb ads, --nq users)",
    )
    m.add_argument(
        "--target-recall", type=float, default=0.95, help="recall@100 the defaults must reach"
    )
    r = sub.add_parser("run", help="drive a server at saturation and at fixed rates")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--index", type=Path, help="artifact root: start `adindex serve` on it per --batching"
    )
    g.add_argument("--server", help="an already running server, 127.0.0.1:PORT")
    r.add_argument(
        "--server-pid",
        type=int,
        help="with --server: its process id, to report the server's CPU per call",
    )
    r.add_argument(
        "--batching",
        default="on,off",
        help="with --index: settings to compare (default: %(default)s)",
    )
    r.add_argument(
        "--alone-threads",
        type=_ints,
        default=[],
        help="with --index: OpenMP threads of a lone search to compare, e.g. 1,2 "
        "(default: the server's own)",
    )
    r.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="with --index: also run `adindex serve` from this checkout (repeat; A/B of code "
        "versions, e.g. base=/tmp/base new=.); settings are named LABEL:off",
    )
    r.add_argument(
        "--bare",
        action="store_true",
        help="with --index: also run benchmarks.bare_server (gRPC around the same FAISS "
        "search, nothing else) on the same artifact, interleaved: the floor per call",
    )
    r.add_argument(
        "--bare-processes",
        type=_ints,
        default=[1],
        help="with --bare: processes of the bare server sharing the port, e.g. 1,2",
    )
    r.add_argument(
        "--bare-threads",
        type=_ints,
        default=[1],
        help="with --bare: OpenMP threads of its every search, e.g. 1,2 (2: what adindex gives "
        "a lone search)",
    )
    r.add_argument(
        "--shadow-rate",
        type=float,
        default=0.0,
        help="with --index: adindex servers' --shadow-rate (default: %(default)s, off, so that "
        "the comparison with the bare server is of equal work; the server ships with 0.01)",
    )
    r.add_argument(
        "--workers",
        type=int,
        default=16,
        help="with --index: server worker threads (default: %(default)s, as adindex serve)",
    )
    r.add_argument(
        "--clients",
        type=_ints,
        default=[1, 4, 16, 32],
        help="saturation levels (default: 1,4,16,32)",
    )
    r.add_argument(
        "--rates", type=_ints, default=[], help="offered total calls/s, e.g. 250,500,1000,1500"
    )
    r.add_argument("--rate-clients", type=int, default=16, help="clients sharing each offered rate")
    r.add_argument("--procs", type=int, default=4, help="client processes (default: %(default)s)")
    r.add_argument("--duration-s", type=float, default=10.0)
    r.add_argument("--warmup-s", type=float, default=2.0)
    r.add_argument("--max-calls", type=int, default=200_000, help="per level, all clients together")
    r.add_argument("--k", type=int, default=100)
    r.add_argument("--nprobe", type=int, default=0, help="0 = the index's default")
    r.add_argument(
        "--queries", type=Path, help=".npy queries (default: queries.npy beside the index root)"
    )
    r.add_argument(
        "--recall-queries", type=int, default=200, help="queries for recall@k through the server"
    )
    r.add_argument(
        "--rounds", type=int, default=1, help="repeat every level this often, interleaved"
    )
    r.add_argument("--out", type=Path, default=RESULTS)
    r.add_argument("--label", default="", help="added to the output file names")
    return p.parse_args(argv)


def _levels(args: argparse.Namespace, target: str) -> list[LoadRun]:
    common = {
        "target": target,
        "procs": args.procs,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "max_calls": args.max_calls,
        "k": args.k,
        "nprobe": args.nprobe,
    }
    runs = [LoadRun(mode="saturate", clients=c, **common) for c in args.clients]
    runs += [
        LoadRun(mode="rate", clients=args.rate_clients, rate_qps=q, **common) for q in args.rates
    ]
    return runs


@dataclass(frozen=True)
class Setting:
    """One server under test: adindex (batching, lone-search threads, code checkout) or bare."""

    name: str
    batching: str = "off"
    alone_threads: int | None = None  # None: the server's default
    code: Path | None = None  # None: this checkout
    bare: bool = False
    processes: int = 1  # bare: servers sharing the port (adindex serve runs one process)
    omp_threads: int = 1  # bare: OpenMP threads of every search

    def start(self, args: argparse.Namespace) -> Server:
        if self.bare:
            extra = ["--processes", str(self.processes), "--omp-threads", str(self.omp_threads)]
            return Server(args.index.resolve(), False, args.workers, extra, bare=True)
        return Server(
            args.index.resolve(),
            self.batching == "on",
            args.workers,
            alone_threads=self.alone_threads,
            code=self.code,
            shadow_rate=args.shadow_rate,
        )


def settings(args: argparse.Namespace) -> list[Setting]:
    """The servers to compare: every code checkout x batching x lone-search threads, then the
    bare server(s) when asked for. Names: ``[LABEL:]off[/a2]``, ``bare[/t2][/p2]``."""
    if not args.index:
        return [Setting("?")]
    codes: list[tuple[str, Path | None]] = [("", None)]
    if args.code:
        codes = [(label, Path(path)) for label, _, path in (c.partition("=") for c in args.code)]
    out = []
    for label, code in codes:
        for batching in args.batching.split(","):
            for alone in args.alone_threads or [None]:
                name = (f"{label}:" if label else "") + batching
                name += "" if alone is None else f"/a{alone}"
                out.append(Setting(name, batching, alone, code))
    for procs in args.bare_processes if args.bare else []:
        for threads in args.bare_threads:
            name = "bare" + (f"/t{threads}" if threads > 1 else "")
            name += f"/p{procs}" if len(args.bare_processes) > 1 or procs > 1 else ""
            out.append(Setting(name, bare=True, processes=procs, omp_threads=threads))
    return out


def _describe(
    args: argparse.Namespace, target: str, xq: np.ndarray, setting: Setting
) -> dict[str, Any]:
    """What is being measured: the served index, and its recall@k through the server."""
    from indexer.artifact import read_manifest, resolve
    from retrieval.client import RetrievalClient
    from retrieval.threads import default_alone_threads

    # Known only when this tool started the server (--index); the server's own default otherwise.
    alone_threads = setting.alone_threads
    if alone_threads is None and args.index and not setting.bare:
        alone_threads = default_alone_threads()
    dataset = args.index.parent / "dataset.json" if args.index else None
    extra: dict[str, Any] = {
        "setting": setting.name,
        "server": "bare" if setting.bare else "adindex",
        "batching": None if setting.bare else setting.batching,
        "alone_threads": alone_threads,
        "server_processes": setting.processes,
        "bare_omp_threads": setting.omp_threads if setting.bare else None,
        "code": str(setting.code) if setting.code else None,
        # adindex servers this tool started: the share of calls shadow recall re-runs exactly
        "shadow_rate": args.shadow_rate if args.index and not setting.bare else None,
        "dataset": json.loads(dataset.read_text())["dataset"]
        if dataset and dataset.is_file()
        else None,
        "server_workers": args.workers if args.index else None,  # unknown for --server
        # Server: OpenMP threads per search (adindex: 1 while searches overlap, alone_threads for
        # a lone search; bare: always bare_omp_threads), gRPC workers per process; the clients
        # run on the same cores (in --procs processes).
        "threads": {
            "search": setting.omp_threads if setting.bare else 1,
            "alone": alone_threads,
            "batch": 1 if setting.batching == "on" and not setting.bare else None,
            "workers": args.workers if args.index else None,
            "server_processes": setting.processes,
            "client_procs": args.procs,
        },
    }
    if setting.bare:  # it answers Retrieve only
        m = read_manifest(resolve(args.index))
        nprobe = args.nprobe or m.search.nprobe
        extra |= {
            "index_key": m.index.factory,
            "nb": m.counts.ads,
            "d": m.model.dimension,
            "default_nprobe": nprobe,
        }
    else:
        with RetrievalClient(target) as client:
            info = client.info()
        extra |= {
            "index_key": info.index_factory,
            "nb": info.ad_count,
            "d": info.dimension,
            "default_nprobe": info.default_nprobe,
        }
    truth_path = args.index.parent / "truth.npy" if args.index else None
    if truth_path is not None and truth_path.is_file():
        n = min(args.recall_queries, len(xq))
        truth = np.load(truth_path)[:n]
        extra["recall_at_k"] = served_recall(target, xq[:n], truth, args.k, args.nprobe)
        logger.info(
            "recall@%d through the server (%s): %.4f", args.k, setting.name, extra["recall_at_k"]
        )
    return extra


def run_load(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every load level against every server, interleaved (level by level, setting by setting,
    ``--rounds`` times), so a shared machine's changing background load hits all settings alike."""
    queries = args.queries or (args.index.parent / "queries.npy" if args.index else None)
    if queries is None or not queries.is_file():
        raise SystemExit("need --queries (or queries.npy beside the index root, from make-index)")
    xq = np.load(queries).astype(np.float32)
    servers: dict[str, Server] = {}
    try:
        specs = {s.name: s for s in settings(args)}
        targets = {"?": args.server} if args.server else {}
        pids: dict[str, int | None] = {"?": args.server_pid}
        for name, spec in specs.items() if args.index else ():
            servers[name] = spec.start(args)
            targets[name], pids[name] = servers[name].target, servers[name].pid
        extras = {name: _describe(args, t, xq, specs[name]) for name, t in targets.items()}
        rows = []
        for level in _levels(args, "127.0.0.1:0"):  # each run gets its server below
            for round_ in range(args.rounds):
                for name, target in targets.items():
                    run = dataclasses.replace(level, target=target)
                    result = drive(run, xq, pids[name])
                    row = record(result, command=args.command, round=round_, **extras[name])
                    keys = (
                        "setting",
                        "mode",
                        "clients",
                        "offered_qps",
                        "qps",
                        "p50_ms",
                        "p99_ms",
                        "client_cpu_ms",
                        "server_cpu_ms",
                        "errors",
                    )
                    logger.info("%s", json.dumps({k: row[k] for k in keys}))
                    rows.append(row)
        return rows
    finally:
        for server in servers.values():
            server.close()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    args.command = command(argv, module="benchmarks.load")
    if args.subcommand == "make-index":
        version_dir = make_index(
            args.nb, args.nq, args.out, args.factory, args.target_recall, args.dataset
        )
        print(f"published {version_dir}; queries and truth in {args.out}")
        return 0
    rows = run_load(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"load{'-' + args.label if args.label else ''}"
    with (args.out / f"{stem}.jsonl").open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(table(rows))
    print(f"wrote {args.out / (stem + '.jsonl')} and {plot(rows, args.out / (stem + '.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
