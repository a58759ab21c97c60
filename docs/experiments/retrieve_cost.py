"""Where a Retrieve call's server CPU goes, part by part, in-process (docs/serving.md).

    python docs/experiments/retrieve_cost.py --index /tmp/load-1m/index --calls 2000

Times, with ``time.process_time`` on one thread (no RPC, no other threads, so CPU time is
this code's own; FAISS on one OpenMP thread):

- ``faiss``: ``index.search`` alone with the server's parameters, one query at a time;
- ``parse``: ``RetrieveRequest.FromString`` of a 384-d request;
- ``handler``: what the server runs per call for Retrieve (validation, eligibility, the
  search, the response bytes), with the FAISS call replaced by a lookup of its precomputed
  answer (so the figure is the Python around it, not the search's noise);
- ``serialize``: the response to bytes, as gRPC's serializer does (included in ``handler``
  when the handler answers bytes);
- ``bare-handler``: the same for ``benchmarks.bare_server`` (parse nothing more, search,
  answer the table's bytes): the floor;
- ``interceptors``: the interceptor chain of ``create_server`` (handler lookup on arrival,
  then the wrapped handler around a handler that does nothing).

Prints one JSON line per part (ms of CPU per call); ``--repeat`` runs everything again,
interleaved, so drift from a shared machine shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's packages

import numpy as np


class _Context:
    def time_remaining(self) -> float:
        return 10.0

    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")

    def code(self) -> None:
        return None


class _Details:
    method = "/retrieval.v1.RetrievalService/Retrieve"
    invocation_metadata = ()


def cpu_ms(fn: Any, calls: int) -> float:
    t0 = time.process_time()
    for i in range(calls):
        fn(i)
    return 1e3 * (time.process_time() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--nprobe", type=int, default=0, help="0 = the version's default")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import faiss
    import grpc
    from threadpoolctl import threadpool_limits

    from retrieval.interceptors import CountingExecutor, ErrorInterceptor, ServingInterceptor
    from retrieval.metrics import Metrics
    from retrieval.server import ServerConfig
    from retrieval.service import RetrievalService
    from retrieval.state import IndexState
    from retrieval.v1 import retrieval_pb2

    faiss.omp_set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")
    state = IndexState(max_k=ServerConfig.max_k)
    searcher = state.load(args.index)
    service = RetrievalService(state)
    xq = np.load(args.index.parent / "queries.npy").astype(np.float32)[:256]
    requests = [
        retrieval_pb2.RetrieveRequest(user_embedding=q.tolist(), k=args.k, nprobe=args.nprobe)
        for q in xq
    ]
    wire = [r.SerializeToString() for r in requests]
    ctx = _Context()
    responses = [service.Retrieve(r, ctx) for r in requests]  # warm up
    x1 = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    point = searcher.point._replace(nprobe=args.nprobe or searcher.point.nprobe)
    params = searcher._params(point, args.k, searcher.view.selector.sel)
    metrics = Metrics()
    executor = CountingExecutor(1)
    chain = [ServingInterceptor(metrics, executor, 256), ErrorInterceptor()]
    noop = grpc.unary_unary_rpc_method_handler(lambda request, context: None)

    def through_interceptors(i: int) -> None:
        def lookup(details: Any, rest: list[Any] = chain) -> Any:
            if not rest:
                return noop
            return rest[0].intercept_service(lambda d: lookup(d, rest[1:]), details)

        handler = lookup(_Details())
        handler.unary_unary(requests[0], ctx)

    n = len(requests)
    answers = [
        searcher.artifact.index.search(x1[i : i + 1], args.k, params=params) for i in range(n)
    ]

    class Replay:
        """Stands in for the index: answers each search with the next precomputed result."""

        def __init__(self, index: Any):
            self.index, self.calls = index, 0

        def search(self, xq: Any, k: int, params: Any = None) -> Any:
            self.calls += 1
            return answers[(self.calls - 1) % n]

        def __getattr__(self, name: str) -> Any:
            return getattr(self.index, name)

    replay = Replay(searcher.artifact.index)

    def handler(i: int) -> None:
        object.__setattr__(searcher.artifact, "index", replay)
        try:
            replay.calls = i % n
            handle(requests[i % n], ctx)
        finally:
            object.__setattr__(searcher.artifact, "index", replay.index)

    handle = getattr(service, "retrieve_bytes", service.Retrieve)
    try:
        from benchmarks.bare_server import BareSearch

        bare: Any = BareSearch(searcher.artifact)
    except ImportError:  # a checkout from before the bare server
        bare = None

    def bare_handler(i: int) -> None:
        object.__setattr__(searcher.artifact, "index", replay)
        bare.index = replay
        try:
            replay.calls = i % n
            bare.retrieve(requests[i % n], ctx)
        finally:
            object.__setattr__(searcher.artifact, "index", replay.index)
            bare.index = replay.index

    parts = {
        "faiss": lambda i: searcher.artifact.index.search(
            x1[i % n : i % n + 1], args.k, params=params
        ),
        "parse": lambda i: retrieval_pb2.RetrieveRequest.FromString(wire[i % n]),
        "handler": handler,
        **({"bare-handler": bare_handler} if bare is not None else {}),
        "serialize": lambda i: responses[i % n].SerializeToString(),
        "interceptors": through_interceptors,
    }
    for r in range(args.repeat):
        times = {name: cpu_ms(fn, args.calls) for name, fn in parts.items()}
        for name, ms in times.items():
            print(json.dumps({"part": name, "cpu_ms_per_call": round(ms, 4), "round": r,
                              "load_avg_1m": os.getloadavg()[0]}))  # fmt: skip
    executor.shutdown()


if __name__ == "__main__":
    main()
