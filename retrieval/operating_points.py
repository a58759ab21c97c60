"""What the recall controller learned per version, kept across restarts.

``<artifact root>/operating_points.json``, beside the change log and never inside a version
directory (those are checksummed and immutable)::

    {"schema": 1, "versions": {"20250101T000000Z-1a2b": {"nprobe": 96, "k_factor": 4,
      "build_nprobe": 48, "build_k_factor": 4, "target_recall": 0.95, "recall_k": 100,
      "moves": 2, "updated_at": "2025-01-01T00:05:00+00:00", "last_move": "raise: ..."}}}

The file is rewritten whole on each move (moves are rare): a temporary file, fsync, rename,
fsync of the root, so a crash leaves either the previous file or the new one. Entries of
versions no longer under the root are dropped when it is written. A missing file means nothing
was learned yet; an unreadable one is logged and ignored (the build's points are served).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from indexer.artifact import list_versions
from indexer.durable import fsync_path
from retrieval.controller import SearchPoint

logger = logging.getLogger(__name__)

OPERATING_POINTS_FILE = "operating_points.json"
SCHEMA = 1


@dataclass(frozen=True)
class LearnedPoint:
    """The default point the controller chose for one version, and why."""

    nprobe: int
    k_factor: int
    build_nprobe: int
    build_k_factor: int
    target_recall: float
    recall_k: int
    moves: int
    updated_at: str  # UTC, ISO 8601
    last_move: str

    @property
    def point(self) -> SearchPoint:
        return SearchPoint(self.nprobe, self.k_factor)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LearnedPoint:
        return cls(
            nprobe=int(obj["nprobe"]),
            k_factor=int(obj["k_factor"]),
            build_nprobe=int(obj["build_nprobe"]),
            build_k_factor=int(obj["build_k_factor"]),
            target_recall=float(obj["target_recall"]),
            recall_k=int(obj["recall_k"]),
            moves=int(obj["moves"]),
            updated_at=str(obj["updated_at"]),
            last_move=str(obj["last_move"]),
        )


class OperatingPointStore:
    """Reads and atomically rewrites one root's ``operating_points.json`` (thread-safe)."""

    def __init__(self, root: Path):
        self.root = root
        self.path = root / OPERATING_POINTS_FILE
        self._lock = threading.Lock()

    def read(self) -> dict[str, LearnedPoint]:
        """Every version's learned point; empty when the file is missing or unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:  # never keeps a version from loading
            logger.warning("Cannot read %s (serving build points): %s", self.path, exc)
            return {}
        try:
            obj = json.loads(text)
            if obj.get("schema") != SCHEMA:
                raise ValueError(f"schema {obj.get('schema')!r}, expected {SCHEMA}")
            return {v: LearnedPoint.from_json(e) for v, e in obj["versions"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("Ignoring %s (serving build points): %s", self.path, exc)
            return {}

    def get(self, version: str) -> LearnedPoint | None:
        return self.read().get(version)

    def put(self, version: str, learned: LearnedPoint) -> None:
        """Record ``version``'s point: temp file, fsync, rename, fsync of the root."""
        with self._lock:
            entries = self.read()
            entries[version] = learned
            present = set(list_versions(self.root))
            entries = {v: e for v, e in entries.items() if v in present or v == version}
            obj = {"schema": SCHEMA, "versions": {v: asdict(e) for v, e in sorted(entries.items())}}
            tmp = self.path.with_name(f".{OPERATING_POINTS_FILE}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            fsync_path(tmp)
            os.replace(tmp, self.path)
            fsync_path(self.root)
