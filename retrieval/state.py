"""The index the server is answering from, swapped atomically, with health kept in step."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from grpc_health.v1 import health, health_pb2

from indexer import artifact
from retrieval.errors import IndexNotReady
from retrieval.searcher import Searcher

logger = logging.getLogger(__name__)

SERVICE_NAME = "retrieval.v1.RetrievalService"


class IndexState:
    """Holds the current :class:`Searcher`; readers never lock (a reference read is atomic)."""

    def __init__(self, health_servicer: health.HealthServicer, *, max_k: int):
        self._health = health_servicer
        self._max_k = max_k
        self._searcher: Searcher | None = None
        self._load_lock = threading.Lock()
        self._set_health(serving=False)

    def _set_health(self, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self._health.set(name, status)

    def current(self) -> Searcher:
        searcher = self._searcher
        if searcher is None:
            raise IndexNotReady(
                "no index is loaded yet: build one with 'adindex build' or wait for the server to load it"
            )
        return searcher

    @property
    def loaded(self) -> bool:
        return self._searcher is not None

    def load(self, path: Path) -> Searcher:
        """Load and verify ``path`` (root or version directory) and start answering from it.

        Raises:
            ArtifactError: the artifact is missing or invalid; the current index keeps serving.
        """
        with self._load_lock:
            art = artifact.load(path)
            searcher = Searcher(art, max_k=self._max_k)
            previous, self._searcher = self._searcher, searcher
            self._set_health(serving=True)
        logger.info(
            "Serving index %s (%d ads, %d active) from %s%s",
            searcher.version,
            searcher.ntotal,
            searcher.active_count,
            art.path,
            f", replacing {previous.version}" if previous else "",
        )
        return searcher

    def shutdown(self) -> None:
        self._set_health(serving=False)
