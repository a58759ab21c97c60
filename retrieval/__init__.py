"""adindex retrieval: serve a published index over gRPC (RetrievalService, AdminService).

Names are imported on first use (PEP 562): ``adindex pause`` and other client commands load
neither FAISS nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

import indexer  # noqa: F401  (first: sets the OpenMP environment before FAISS loads)

_EXPORTS = {
    "RetrievalClient": "retrieval.client",
    "DimensionMismatch": "retrieval.errors",
    "IndexNotReady": "retrieval.errors",
    "InvalidArgument": "retrieval.errors",
    "NotFound": "retrieval.errors",
    "RetrievalError": "retrieval.errors",
    "InterestConfig": "retrieval.interests",
    "Hits": "retrieval.searcher",
    "Searcher": "retrieval.searcher",
    "RunningServer": "retrieval.server",
    "ServerConfig": "retrieval.server",
    "create_server": "retrieval.server",
    "serve": "retrieval.server",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
