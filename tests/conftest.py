"""Shared fixtures: seeded data, a fake embedder for fast tests, the real model, real servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import indexer  # noqa: F401  (first: sets the OpenMP environment before FAISS loads)
from indexer.build import BuildConfig, BuildResult, build
from indexer.catalog import write_catalog_jsonl
from indexer.embedding import SentenceTransformerEmbedder
from indexer.records import AdRecord
from support import HashEmbedder, ServerProcess, clustered_vectors, make_records


@pytest.fixture(scope="session")
def vector_catalog(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[AdRecord], np.ndarray]:
    """A 3,000-ad catalog carrying precomputed embeddings (like an ads team's own ad tower)."""
    records = make_records(3000)
    xb = clustered_vectors(len(records))
    path = tmp_path_factory.mktemp("catalog") / "ads.jsonl"
    write_catalog_jsonl(records, path, embeddings=xb)
    return path, records, xb


@pytest.fixture(scope="session")
def built_index(
    vector_catalog: tuple[Path, list[AdRecord], np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> BuildResult:
    """IVF-PQ (4-bit fast-scan) with flat re-ranking over the vector catalog; read-only for tests."""
    path, _, _ = vector_catalog
    out = tmp_path_factory.mktemp("index")
    return build(
        BuildConfig(
            catalog=path, out=out, index_factory="IVF32,PQ16x4fs,RFlat", nprobe=8, threads=1
        )
    )


@pytest.fixture(scope="session")
def real_embedder() -> SentenceTransformerEmbedder:
    """The installed all-MiniLM-L6-v2 (loaded once per session)."""
    return SentenceTransformerEmbedder()


@pytest.fixture
def hash_embedder() -> Iterator[HashEmbedder]:
    yield HashEmbedder()


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServerProcess]]:
    """Starts ``adindex serve --index INDEX ARGS...`` subprocesses; kills any still running after."""
    started: list[ServerProcess] = []

    def start(index: Path, *args: str) -> ServerProcess:
        started.append(ServerProcess(index, *args))
        return started[-1]

    yield start
    for server in started:
        server.close()
