"""The index the server answers from: loaded, swapped atomically, with health kept in step.

Admin changes and loads are serialised by one lock (``admin_lock``); searches never take it.
Loading a version replays the change log entries made after its catalog snapshot, so pauses,
upserts and deletes survive restarts and rebuilds.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

from grpc_health.v1 import health, health_pb2

from indexer import artifact
from retrieval.changelog import CHANGELOG_FILE, ChangeLog
from retrieval.errors import IndexNotReady
from retrieval.searcher import DEFAULT_EXACT_MAX_ROWS, Searcher

logger = logging.getLogger(__name__)

SERVICE_NAME = "retrieval.v1.RetrievalService"


class IndexState:
    """Holds the current :class:`Searcher`; readers never lock (a reference read is atomic)."""

    def __init__(
        self,
        health_servicer: health.HealthServicer,
        *,
        max_k: int,
        exact_max_rows: int = DEFAULT_EXACT_MAX_ROWS,
    ):
        self._health = health_servicer
        self._max_k = max_k
        self._exact_max_rows = exact_max_rows
        self._searcher: Searcher | None = None
        self.changelog: ChangeLog | None = None
        self.admin_lock = threading.RLock()
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
        """Load and verify ``path`` (root or version directory), replay changes, start answering.

        Raises:
            ArtifactError: the artifact is missing or invalid; the current index keeps serving.
        """
        with self.admin_lock:
            art = artifact.load(path)
            log_path = art.path.parent / CHANGELOG_FILE
            if self.changelog is None or self.changelog.path != log_path:
                self.changelog = ChangeLog(log_path)
            searcher = Searcher(art, max_k=self._max_k, exact_max_rows=self._exact_max_rows)
            snapshot = datetime.fromisoformat(art.manifest["catalog"]["snapshot_at"])
            replayed = self.changelog.since(snapshot)
            if replayed:
                from retrieval.admin import replay  # admin builds on state; import late

                replay(searcher, replayed)
            previous, self._searcher = self._searcher, searcher
            self._set_health(serving=True)
        logger.info(
            "Serving index %s (%d ads, %d eligible, %d logged changes replayed) from %s%s",
            searcher.version,
            searcher.ntotal,
            searcher.active_count,
            len(replayed),
            art.path,
            f", replacing {previous.version}" if previous else "",
        )
        return searcher

    def shutdown(self) -> None:
        self._set_health(serving=False)
