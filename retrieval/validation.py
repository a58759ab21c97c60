"""Checks a new index version must pass before it may replace the one being served.

``artifact.load`` already verifies every file's sha256 and size, the format version and the
internal consistency of index, embeddings and ads. On top of that, a version is refused when:

- its dimension, metric or model differs from the served version's: clients keep sending
  embeddings made for the served one, and every call would fail or silently degrade;
- the smoke recall check fails: a few of the artifact's own embeddings (evenly spaced rows)
  are searched with the version's default parameters and each must find itself (or an exact
  duplicate) in its top k. A mis-trained index, a wrong id order or a broken ads.jsonl
  fails this in milliseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from indexer import ann
from indexer.artifact import Artifact, ArtifactError

logger = logging.getLogger(__name__)


class VersionRefused(ArtifactError):
    """A complete, intact version that must not replace the served one."""


@dataclass(frozen=True)
class ValidationConfig:
    """How strictly a new version is checked before the swap."""

    smoke_queries: int = 16  # own embeddings searched
    smoke_k: int = 10
    min_self_recall: float = 0.9  # share of them that must find themselves in their top smoke_k

    def __post_init__(self) -> None:
        if self.smoke_queries < 0:
            raise ValueError(f"smoke_queries must be >= 0; got {self.smoke_queries}")
        if self.smoke_k < 1:
            raise ValueError(f"smoke_k must be >= 1; got {self.smoke_k}")
        if not 0.0 <= self.min_self_recall <= 1.0:
            raise ValueError(f"min_self_recall must be in [0, 1]; got {self.min_self_recall}")


def check_compatible(new: Artifact, served: Artifact | None) -> None:
    """Refuse a version that the served version's clients cannot use."""
    if served is None:
        return
    pairs = (
        ("dimension", new.dimension, served.dimension),
        ("metric", new.manifest.metric, served.manifest.metric),
        ("model", new.manifest.model.name, served.manifest.model.name),
    )
    for what, got, want in pairs:
        if got != want:
            raise VersionRefused(
                f"{new.path}: {what} {got!r} differs from the served version {served.version} "
                f"({want!r}); its clients would send the wrong embeddings"
            )
    shards, served_shards = _shard_count(new), _shard_count(served)
    if shards != served_shards:  # a leaf serves one shard of a fixed split
        raise VersionRefused(
            f"{new.path}: split into {shards} shards, the served version {served.version} into "
            f"{served_shards}; resharding is a new deployment of leaves and root"
        )


def _shard_count(art: Artifact) -> int | None:
    shards = art.manifest.shards
    return None if shards is None else shards.count


def self_recall(art: Artifact, config: ValidationConfig) -> float:
    """Share of sampled rows whose own embedding finds them in the top ``smoke_k``."""
    n = int(art.index.ntotal)
    if n == 0 or config.smoke_queries == 0:
        return 1.0
    rows = np.unique(np.linspace(0, n - 1, min(config.smoke_queries, n)).astype(np.int64))
    xq = np.ascontiguousarray(art.embeddings[rows], dtype=np.float32)
    k = min(config.smoke_k, n)
    try:
        search = art.manifest.search
        params = ann.search_params(
            art.index, search.nprobe, search.k_factor, k, min_rerank=search.min_rerank
        )
        _, I = art.index.search(xq, k, params=params)
    except RuntimeError as exc:  # FAISS C++ errors arrive as RuntimeError
        raise VersionRefused(f"{art.path}: FAISS cannot search it: {exc}") from exc
    # An exact duplicate ranked first counts too, but only if its stored embedding is the
    # query: a score match alone would pass an artifact whose rows are shuffled against the ids.
    first = art.embeddings[np.maximum(I[:, 0], 0)]
    duplicate = (I[:, 0] >= 0) & np.all(np.abs(first - xq) <= 1e-6, axis=1)
    found = (rows[:, None] == I).any(axis=1) | duplicate
    return float(found.mean())


def validate(new: Artifact, served: Artifact | None, config: ValidationConfig) -> None:
    """Raise :class:`VersionRefused` unless ``new`` may replace ``served``."""
    check_compatible(new, served)
    recall = self_recall(new, config)
    if recall < config.min_self_recall:
        raise VersionRefused(
            f"{new.path}: smoke recall check failed: {recall:.2f} of {config.smoke_queries} "
            f"own embeddings found themselves in their top {config.smoke_k} "
            f"(need {config.min_self_recall:.2f})"
        )
    logger.debug("%s passed validation (self recall %.2f)", new.version, recall)
