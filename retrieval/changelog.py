"""The durable log of acknowledged admin changes (pause, resume, upsert, delete).

One JSON object per line in ``<artifact root>/changes.jsonl``: ``seq`` (1, 2, ...), ``ts``
(UTC, ISO 8601), ``op`` and the op's fields. A change is appended and fsynced before the
admin call returns OK, so everything acknowledged survives a crash. On start, and whenever a
new index version is loaded, the changes logged after that version's catalog snapshot are
replayed on top of it: nothing acknowledged is lost, and a rebuild from an older export does
not resurrect a paused or deleted ad.

A torn last line (a crash in the middle of an append) was never acknowledged and is ignored.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from indexer.artifact import AdMeta
from indexer.durable import fsync_path

if TYPE_CHECKING:
    from retrieval.eligibility import Overlay
    from retrieval.searcher import Searcher

logger = logging.getLogger(__name__)

CHANGELOG_FILE = "changes.jsonl"


def changelog_file(shard: int | None) -> str:
    """The log's name at the artifact root: one per shard, as a shard's leaves share the root."""
    return CHANGELOG_FILE if shard is None else f"changes.shard-{shard}.jsonl"


Op = Literal["pause", "resume", "upsert", "delete"]


@dataclass(frozen=True)
class Change:
    """One acknowledged change. ``ads`` (upsert) holds full ad JSON with a base64 embedding."""

    seq: int
    ts: datetime
    op: Op
    ad_ids: tuple[str, ...] = ()
    campaign_ids: tuple[str, ...] = ()
    advertiser_ids: tuple[str, ...] = ()
    ads: tuple[dict[str, Any], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "ts": self.ts.isoformat(), "op": self.op}
        for name in ("ad_ids", "campaign_ids", "advertiser_ids", "ads"):
            value = getattr(self, name)
            if value:
                out[name] = list(value)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Change:
        return cls(
            seq=int(obj["seq"]),
            ts=datetime.fromisoformat(obj["ts"]),
            op=obj["op"],
            ad_ids=tuple(obj.get("ad_ids", ())),
            campaign_ids=tuple(obj.get("campaign_ids", ())),
            advertiser_ids=tuple(obj.get("advertiser_ids", ())),
            ads=tuple(obj.get("ads", ())),
        )


def encode_vector(x: np.ndarray) -> str:
    """Exact, compact text form of a float32 vector for the log."""
    return base64.b64encode(np.ascontiguousarray(x, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def apply_change(change: Change, overlay: Overlay) -> None:
    """How a logged change modifies eligibility: the same for a live admin call and a replay."""
    if change.op in ("pause", "resume"):
        status = "paused" if change.op == "pause" else "active"
        overlay.set_status(status, change.ad_ids, change.campaign_ids, change.advertiser_ids)
    elif change.op == "delete":
        overlay.delete(change.ad_ids)
    else:
        for ad in change.ads:
            overlay.upsert(AdMeta.from_json(ad), decode_vector(ad["embedding"]))


def replay(searcher: Searcher, changes: Sequence[Change]) -> None:
    """Apply logged changes to a freshly loaded searcher (ids unknown to it are skipped)."""
    for change in changes:
        searcher.apply(partial(apply_change, change))


class ChangeLog:
    """Append-only, fsynced JSONL log; appends are serialised by a lock."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._entries = self._read()
        self._last_seq = self._entries[-1].seq if self._entries else 0

    def _read(self) -> list[Change]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # An append cut short by a crash: never fsynced, so never acknowledged. Cut it off
            # so the next append starts on a fresh line.
            logger.warning("%s: dropping a torn last entry (%d bytes)", self.path, len(data) - end)
            with self.path.open("r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        entries = []
        for number, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(Change.from_json(json.loads(line)))
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{self.path}:{number}: corrupt change log entry: {exc}") from exc
        logger.info("Change log %s: %d entries", self.path, len(entries))
        return entries

    def since(self, snapshot_at: datetime) -> list[Change]:
        """Changes acknowledged after ``snapshot_at``, in order."""
        return [c for c in self._entries if c.ts > snapshot_at]

    def append(
        self,
        op: Op,
        *,
        ad_ids: Sequence[str] = (),
        campaign_ids: Sequence[str] = (),
        advertiser_ids: Sequence[str] = (),
        ads: Sequence[dict[str, Any]] = (),
    ) -> Change:
        """Durably record a change; returns it once it is on disk (fsynced)."""
        with self._lock:
            change = Change(
                seq=self._last_seq + 1,
                ts=datetime.now(UTC),
                op=op,
                ad_ids=tuple(ad_ids),
                campaign_ids=tuple(campaign_ids),
                advertiser_ids=tuple(advertiser_ids),
                ads=tuple(ads),
            )
            line = json.dumps(change.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n"
            new_file = not self.path.exists()
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if new_file:  # the file's directory entry must be durable too
                fsync_path(self.path.parent)
            self._entries.append(change)
            self._last_seq = change.seq
            return change
