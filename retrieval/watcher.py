"""Watch an artifact root's ``LATEST`` and hot-swap each newly published version in.

One background thread polls ``LATEST`` (a few bytes; every ``poll_s``). When it names a version
other than the one served, the thread loads and validates it (``IndexState.load``) while the
served version keeps answering, then swaps. A refused version is not tried again while
``LATEST`` keeps naming it (versions are immutable once published); ``adindex reload`` or a new
``LATEST`` tries again. The same loop loads the first version of a server started on an empty
root.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from indexer.artifact import ArtifactError, resolve
from retrieval.state import IndexState

logger = logging.getLogger(__name__)


class IndexWatcher:
    """Polls ``root/LATEST``; call :meth:`start` once and :meth:`stop` on shutdown."""

    def __init__(self, state: IndexState, root: Path, *, poll_s: float = 1.0):
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0; got {poll_s}")
        self._state = state
        self._root = root
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-watcher", daemon=True)
        self._unreadable: str | None = None  # last LATEST problem logged (log it once)
        self.checks = 0  # polls done (tests wait on it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def check(self) -> bool:
        """Load ``LATEST`` if it names a new, not yet refused version; True if one was swapped in."""
        try:
            target = resolve(self._root)
        except ArtifactError as exc:  # no LATEST yet, or being replaced right now
            if str(exc) != self._unreadable:
                logger.info("Waiting for a published version: %s", str(exc))
                self._unreadable = str(exc)
            return False
        self._unreadable = None
        if self._state.holds(target.name) or target.name in self._state.refused:
            return False
        logger.info("New version %s published; loading it in the background", target.name)
        try:
            self._state.load(target)
        except ArtifactError:
            return False  # logged and counted by IndexState.load; the old version serves on
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # keep watching whatever one attempt did
                logger.exception("Index watcher check failed")
            self.checks += 1
            self._stop.wait(self._poll_s)
