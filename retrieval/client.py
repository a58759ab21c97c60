"""A small typed client for RetrievalService (used by the CLI, the demo and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import grpc
import numpy as np

from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc


class RetrievalClient:
    """A channel to one server; use as a context manager to close it."""

    def __init__(self, target: str, *, timeout_s: float = 5.0):
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target)
        self.stub = retrieval_pb2_grpc.RetrievalServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def retrieve(
        self,
        user_embedding: Sequence[float] | np.ndarray,
        k: int = 10,
        *,
        nprobe: int = 0,
        timeout_s: float | None = None,
    ) -> retrieval_pb2.RetrieveResponse:
        request = retrieval_pb2.RetrieveRequest(
            user_embedding=np.asarray(user_embedding, dtype=np.float32).ravel().tolist(),
            k=k,
            nprobe=nprobe,
        )
        response: retrieval_pb2.RetrieveResponse = self.stub.Retrieve(
            request, timeout=timeout_s or self.timeout_s
        )
        return response

    def info(self, *, timeout_s: float | None = None) -> retrieval_pb2.IndexInfo:
        info: retrieval_pb2.IndexInfo = self.stub.GetIndexInfo(
            retrieval_pb2.GetIndexInfoRequest(), timeout=timeout_s or self.timeout_s
        )
        return info

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
