"""adindex retrieval: serve a published index over gRPC (RetrievalService)."""

from __future__ import annotations

import indexer  # noqa: F401  (first: sets the OpenMP environment before FAISS loads)
from retrieval.client import RetrievalClient
from retrieval.errors import (
    DimensionMismatch,
    IndexNotReady,
    InvalidArgument,
    NotFound,
    RetrievalError,
)
from retrieval.searcher import Hits, Searcher
from retrieval.server import RunningServer, ServerConfig, create_server, serve

__all__ = [
    "DimensionMismatch",
    "Hits",
    "IndexNotReady",
    "InvalidArgument",
    "NotFound",
    "RetrievalClient",
    "RetrievalError",
    "RunningServer",
    "Searcher",
    "ServerConfig",
    "create_server",
    "serve",
]
