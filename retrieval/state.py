"""The index the server answers from: loaded, swapped atomically, readiness reported on change.

Admin changes and swaps are serialised by one lock (``admin_lock``); searches never take it.
Loading a version replays the change log entries made after its catalog snapshot, so pauses,
upserts and deletes survive restarts and rebuilds.

A load reads, verifies (checksums) and validates (``retrieval.validation``: dimension, model,
smoke recall) the new version before taking ``admin_lock``, so admin calls are held up only by
the change log replay and the swap itself. The swap is one reference assignment: a call that
already read the old searcher finishes on it, and the old version is freed once the last such
call returns (the ``freed`` event). A refused version leaves the served one untouched.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from indexer import artifact
from indexer.ann import omp_threads, use_serving_implementation
from retrieval.changelog import ChangeLog, changelog_file, replay
from retrieval.errors import IndexNotReady, VersionNotHeld
from retrieval.metrics import Metrics
from retrieval.searcher import DEFAULT_EXACT_MAX_ROWS, Searcher
from retrieval.validation import ValidationConfig, validate

logger = logging.getLogger(__name__)


class IndexState:
    """Holds the current :class:`Searcher`; readers never lock (a reference read is atomic).

    ``on_serving(True)`` is called whenever a version starts serving, ``on_serving(False)`` at
    creation and on :meth:`shutdown` (the server maps it to gRPC health). ``on_load`` sees each
    accepted version before it serves (the recall controller sets its default point there).
    """

    def __init__(
        self,
        on_serving: Callable[[bool], None] = lambda serving: None,
        *,
        max_k: int,
        exact_max_rows: int = DEFAULT_EXACT_MAX_ROWS,
        metrics: Metrics | None = None,
        validation: ValidationConfig | None = None,
        on_load: Callable[[Searcher], None] | None = None,
        shard: int | None = None,
    ):
        self._on_serving = on_serving
        self._on_load = on_load
        self._shard = shard  # which shard of a sharded version to load (None: not sharded)
        self._max_k = max_k
        self._exact_max_rows = exact_max_rows
        self._metrics = metrics or Metrics()
        self._validation = validation or ValidationConfig()
        self._searcher: Searcher | None = None
        self.changelog: ChangeLog | None = None
        self.admin_lock = threading.RLock()
        self._load_lock = threading.Lock()  # one load at a time (watcher and Reload may race)
        self._closed = False
        self.refused: dict[str, str] = {}  # version name -> why it was refused
        self._set_health(serving=False)
        self._metrics.watch_ads(self._ad_counts)

    def _set_health(self, *, serving: bool) -> None:
        if serving and self._closed:
            return  # draining: a late load must not advertise the server again
        self._on_serving(serving)

    def current(self) -> Searcher:
        searcher = self._searcher
        if searcher is None:
            raise IndexNotReady(
                "no index is loaded yet: build one with 'adindex build' or wait for the server to load it"
            )
        return searcher

    def searcher_for(self, version: str) -> Searcher:
        """The searcher of ``version`` ("" = the current one); a call pinned to a version
        this server does not hold fails rather than answer from another."""
        searcher = self.current()
        if version and version != searcher.version:
            raise VersionNotHeld(
                f"index_version: {version!r} is not loaded here; serving {searcher.version!r}"
            )
        return searcher

    def searchers(self) -> list[Searcher]:
        """Every loaded searcher, the current one first (admin changes apply to all)."""
        return [self.current()]

    def holds(self, version: str) -> bool:
        """Whether ``version`` is loaded (the watcher does not load it again)."""
        return self._searcher is not None and self._searcher.version == version

    @property
    def loaded(self) -> bool:
        return self._searcher is not None

    def _ad_counts(self) -> tuple[int, int]:
        searcher = self._searcher
        if searcher is None:
            return 0, 0
        view = searcher.view
        return view.ad_count, view.active_count

    def load(self, path: Path) -> Searcher:
        """Load, verify and validate ``path`` (root or version directory), then swap it in.

        Raises:
            ArtifactError: missing, corrupted or refused (``VersionRefused``); the served
                index keeps serving and the version is remembered in ``refused``.
        """
        with self._load_lock:
            started = time.perf_counter()
            name = artifact.resolve(path).name
            current = self._searcher
            try:
                art = artifact.load(path, shard=self._shard)
                use_serving_implementation(art.index)  # validate what will be served
                with omp_threads(1):  # beside the searches of the version being served
                    validate(art, current.artifact if current else None, self._validation)
            except artifact.ArtifactError as exc:
                self.refused[name] = str(exc)
                self._metrics.index_events.labels("refused").inc()
                # str(exc): a log record holding the exception would keep its traceback's
                # frames, and with them the served searcher, alive in any buffering handler
                logger.warning("Refused index version %s: %s", name, str(exc))
                raise
            searcher = Searcher(art, max_k=self._max_k, exact_max_rows=self._exact_max_rows)
            if self._on_load is not None:
                self._on_load(searcher)
            self._metrics.index_events.labels("loaded").inc()
            replayed, previous = self._swap(searcher)
            self._metrics.index_load.observe(time.perf_counter() - started)
        self.refused.pop(name, None)
        serving = self._searcher is searcher
        if serving:
            m = art.manifest
            self._metrics.set_index(searcher.version, m.model.name, m.index.factory)
        if previous is not None:
            self._retire(previous)
        logger.info(
            "%s index %s (%d ads, %d eligible, %d logged changes replayed) from %s%s",
            "Serving" if serving else "Prepared",
            searcher.version,
            searcher.ntotal,
            searcher.active_count,
            replayed,
            art.path,
            f", replacing {previous.version}" if previous else "",
        )
        return searcher

    def _swap(self, searcher: Searcher) -> tuple[int, Searcher | None]:
        """Replay logged changes onto ``searcher`` and install it; returns (replayed, old)."""
        with self.admin_lock:
            art = searcher.artifact
            log_path = art.root / changelog_file(art.shard)
            if self.changelog is None or self.changelog.path != log_path:
                self.changelog = ChangeLog(log_path)
            replayed = self.changelog.since(art.manifest.catalog.snapshot_at)
            replay(searcher, replayed)
            previous = self._install(searcher)
        return len(replayed), previous

    def _install(self, searcher: Searcher) -> Searcher | None:
        """Make a loaded, replayed searcher current (under ``admin_lock``); returns the old one."""
        previous, self._searcher = self._searcher, searcher
        self._set_health(serving=True)
        return previous

    def _retire(self, previous: Searcher) -> None:
        """Count a replaced version and log when its last in-flight call has let it go."""
        previous.retired = True
        self._metrics.index_events.labels("swapped").inc()
        weakref.finalize(previous, self._freed, previous.version)

    def _freed(self, version: str) -> None:
        self._metrics.index_events.labels("freed").inc()
        logger.info("Freed index %s (its last in-flight call finished)", version)

    def shutdown(self) -> None:
        """Stop advertising the server (health NOT_SERVING) for good; searches still work."""
        self._closed = True
        self._on_serving(False)
