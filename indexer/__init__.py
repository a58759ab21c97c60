"""adindex indexer: ad catalog -> embeddings -> FAISS IVF-PQ index -> versioned artifact."""

from __future__ import annotations

from indexer import _env  # noqa: F401  (first: environment for OpenMP before FAISS loads)
from indexer.artifact import Artifact, ArtifactError, load
from indexer.build import BuildConfig, BuildError, BuildResult, RecallBelowTarget, build
from indexer.catalog import AdRecord, Catalog, CatalogError, Targeting, read_catalog
from indexer.embedding import Embedder, SentenceTransformerEmbedder
from indexer.params import IndexParams, choose_params

__all__ = [
    "AdRecord",
    "Artifact",
    "ArtifactError",
    "BuildConfig",
    "BuildError",
    "BuildResult",
    "Catalog",
    "CatalogError",
    "Embedder",
    "IndexParams",
    "RecallBelowTarget",
    "SentenceTransformerEmbedder",
    "Targeting",
    "build",
    "choose_params",
    "load",
    "read_catalog",
]
