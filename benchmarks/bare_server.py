"""The floor for a Python Retrieve server: bare gRPC around the same FAISS search as adindex.

``benchmarks.load run --bare`` starts this beside ``adindex serve`` on the same artifact and
interleaves it level by level, so every run has its own "what Python gRPC plus this search
costs here" row (``setting: bare``). Per call it does only what any correct server must:

- parse the request (the generated deserializer) and read ``user_embedding``, ``k`` and
  ``nprobe`` (0 = the version's default);
- L2-normalise the query and search the artifact's index with the version's default
  k_factor and ``min_rerank`` (``indexer.ann.search_params``, no selector: every ad is
  eligible), on one OpenMP thread (``--omp-threads``), with FAISS's implementation 15 as adindex
  serves it;
- answer the candidates (ad, advertiser and campaign ids, score) of the hits, assembled from
  each ad's ``Candidate`` serialised once at start (``retrieval.wire``, the cheapest way to
  answer them, as adindex does).

No validation, filters, eligibility changes, interceptors, metrics, health or hot swap.
``--processes N`` forks N servers sharing the port (``SO_REUSEPORT``, as grpc's
``examples/python/multiprocessing``) after the index is loaded, so their index pages are shared.

    python -m benchmarks.bare_server --index /tmp/load-1m/index --port 0
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before FAISS loads

import numpy as np

from retrieval.wire import CandidateTable, scalar_fields

logger = logging.getLogger(__name__)

_SERVICE = "retrieval.v1.RetrievalService"


class BareSearch:
    """The search and the response bytes, nothing else."""

    def __init__(self, art: Any):
        """Args: art: a loaded ``indexer.artifact.Artifact``."""
        import faiss

        from indexer import ann

        self._faiss = faiss
        ann.use_serving_implementation(art.index)
        self.index = art.index
        self.d = art.dimension
        search = art.manifest.search
        self.nprobe, self.k_factor, self.min_rerank = (
            search.nprobe,
            search.k_factor,
            search.min_rerank,
        )
        self._params: dict[tuple[int, int], Any] = {}
        self._ann = ann
        self._candidates = CandidateTable(art.ads, 0)
        self._version = art.version

    def params(self, nprobe: int, k: int) -> Any:
        key = (nprobe, k)
        params = self._params.get(key)
        if params is None:  # a dict read or a benign race: both build the same parameters
            params = self._ann.search_params(
                self.index, nprobe, self.k_factor, k, min_rerank=self.min_rerank
            )
            self._params[key] = params
        return params

    def retrieve(self, request: Any, context: Any) -> bytes:
        xq = np.asarray(request.user_embedding, dtype=np.float32).reshape(1, self.d)
        xq /= np.linalg.norm(xq)
        k, nprobe = request.k, request.nprobe or self.nprobe
        D, I = self.index.search(xq, k, params=self.params(nprobe, k))
        keep = I[0] >= 0
        candidates = self._candidates.encode(I[0][keep], D[0][keep]) or b""
        return candidates + scalar_fields(
            index_version=self._version, nprobe=nprobe, plan="ivf", k_factor=self.k_factor
        )


def _serve_one(
    search: BareSearch,
    address: str,
    workers: int,
    reuse_port: bool,
    omp_threads: int = 1,
    ready: int | None = None,
) -> None:
    """Serve until SIGTERM; ``ready``: a pipe to write one byte to once listening."""
    import grpc

    from retrieval.v1 import retrieval_pb2

    faiss = search._faiss
    handler = grpc.unary_unary_rpc_method_handler(
        search.retrieve,
        request_deserializer=retrieval_pb2.RetrieveRequest.FromString,
        response_serializer=bytes,  # the handler's bytes as they are
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(
            workers, initializer=lambda: faiss.omp_set_num_threads(omp_threads)
        ),
        handlers=[grpc.method_handlers_generic_handler(_SERVICE, {"Retrieve": handler})],
        options=[("grpc.so_reuseport", int(reuse_port))],
    )
    server.add_registered_method_handlers(_SERVICE, {"Retrieve": handler})  # type: ignore[attr-defined]
    port = server.add_insecure_port(address)
    server.start()
    if ready is None:
        logger.info("Listening on 127.0.0.1:%d (bare, pid %d)", port, os.getpid())
        logger.info("Serving index (bare)")
    else:
        os.write(ready, b"x")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


def _reserve_port(port: int) -> socket.socket:
    """A bound, non-listening socket holding the port the processes share (grpc example)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bare_server", description=__doc__)
    ap.add_argument("--index", type=Path, required=True, help="artifact root or version")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument(
        "--omp-threads",
        type=int,
        default=1,
        help="OpenMP threads of every search (2: what adindex gives a lone search)",
    )
    args = ap.parse_args(argv)
    from indexer.artifact import load

    search = BareSearch(load(args.index))
    if args.processes == 1:
        _serve_one(search, f"127.0.0.1:{args.port}", args.workers, False, args.omp_threads)
        return 0
    sock = _reserve_port(args.port)
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    children = []
    read, write = os.pipe()
    for _ in range(args.processes):  # fork before gRPC starts; the index pages stay shared
        pid = os.fork()
        if pid == 0:
            try:
                _serve_one(search, address, args.workers, True, args.omp_threads, ready=write)
            finally:
                os._exit(0)
        children.append(pid)
    for _ in children:
        os.read(read, 1)
    logger.info("Listening on %s (bare, %d processes)", address, len(children))
    logger.info("Serving index (bare)")

    def stop(*_: object) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    for c in children:
        while True:
            try:
                os.waitpid(c, 0)
                break
            except InterruptedError:
                continue
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
