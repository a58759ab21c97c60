"""adindex indexer: ad catalog -> embeddings -> FAISS IVF-PQ index -> versioned artifact.

Names are imported on first use (PEP 562), so that ``import indexer`` (which every entry point
does first, for the OpenMP environment) loads neither FAISS nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from indexer import _env  # noqa: F401  (first: environment for OpenMP before FAISS loads)

_EXPORTS = {
    "AdRecord": "indexer.records",
    "Catalog": "indexer.records",
    "CatalogError": "indexer.records",
    "Targeting": "indexer.records",
    "read_catalog": "indexer.catalog",
    "read_pins": "indexer.pins",
    "PinTable": "indexer.pins",
    "Embedder": "indexer.embedding",
    "SentenceTransformerEmbedder": "indexer.embedding",
    "IndexParams": "indexer.params",
    "choose_params": "indexer.params",
    "Manifest": "indexer.manifest",
    "Artifact": "indexer.artifact",
    "ArtifactError": "indexer.artifact",
    "load": "indexer.artifact",
    "BuildConfig": "indexer.build",
    "BuildError": "indexer.build",
    "BuildResult": "indexer.build",
    "RecallBelowTarget": "indexer.build",
    "build": "indexer.build",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'indexer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
