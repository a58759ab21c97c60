"""Errors the retrieval service raises, each with the gRPC status it maps to.

    RetrievalError                 INTERNAL
    ├── InvalidArgument            INVALID_ARGUMENT   (names the offending request field)
    │   └── DimensionMismatch      INVALID_ARGUMENT
    ├── NotFound                   NOT_FOUND
    ├── FailedPrecondition         FAILED_PRECONDITION (the server or version cannot do it)
    │   └── VersionNotHeld         FAILED_PRECONDITION (a pinned version this server does not hold)
    ├── IndexNotReady              UNAVAILABLE        (no index loaded yet)
    ├── ShuttingDown               UNAVAILABLE        (draining after SIGTERM: retry elsewhere)
    └── DeadlineExceeded           DEADLINE_EXCEEDED  (the call's deadline passed before its search)

Servicers raise these; one interceptor (retrieval.server) turns them into a status and
message. Anything else is logged with its traceback and answered INTERNAL, never UNKNOWN.
"""

from __future__ import annotations

import grpc


class RetrievalError(Exception):
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(RetrievalError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class DimensionMismatch(InvalidArgument):
    pass


class NotFound(RetrievalError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(RetrievalError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class VersionNotHeld(FailedPrecondition):
    pass


class IndexNotReady(RetrievalError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


class ShuttingDown(RetrievalError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(RetrievalError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
