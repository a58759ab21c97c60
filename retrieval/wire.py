"""RetrieveResponse bytes assembled from candidates serialised once per version.

Building a response message costs a Python object per candidate (docs/serving.md, "The
server's own cost per call", measures the server with and without it). Protobuf lets a
message be concatenated instead: ``candidates`` (field 1) is a repeated, length-delimited
field, so a response is each candidate's ``0x0a <length> <Candidate bytes>`` followed by the
scalar fields. The id fields of every artifact ad's Candidate (``ad_id``, ``advertiser_id``,
``campaign_id``) are encoded once when the version loads, into one fixed-width byte table; per
call a numpy gather picks the hits' rows, writes each one's score (field 4, a 4-byte float)
and ``shard`` (field 8) after them, and keeps each row's own length.

The bytes are exactly ``RetrieveResponse.SerializeToString()`` of the same message (fields in
number order, zero values omitted; tests/retrieval/test_wire.py checks both). Anything the
table cannot express takes the message path: upserted ads (not in the table), an exact zero
score (proto3 omits it, which changes the candidate's length), an ad whose ids exceed the
table's width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.artifact import AdMeta

# Ads whose three ids need more than this many bytes of Candidate are served by the message
# path, so that one long id does not widen the table for every ad.
MAX_HEAD_BYTES = 192
_SCORE_TAG = 0x25  # field 4, fixed32
_SHARD_TAG = 0x40  # field 8, varint


def varint(n: int) -> bytes:
    """Protobuf base-128 varint; negative int32/int64 values as their 64-bit two's complement."""
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(tag: int, text: str) -> bytes:
    data = text.encode("utf-8")
    return bytes((tag,)) + varint(len(data)) + data if data else b""


def _ids(ad: AdMeta) -> bytes:
    """A Candidate's fields 1-3 (ad, advertiser, campaign ids)."""
    return _string(0x0A, ad.ad_id) + _string(0x12, ad.advertiser_id) + _string(0x1A, ad.campaign_id)


class CandidateTable:
    """Every ad of one artifact as the start of its ``candidates`` entry, for ``encode``.

    Row i holds ad i's ``0x0a <length>`` and Candidate fields 1-3, then room for the score's
    tag and 4 bytes and the shard field; ``_head[i]`` is the length of the part before the
    score (0: the ad is too long for the table and takes the message path).
    """

    def __init__(self, ads: Sequence[AdMeta], shard: int):
        shard_field = bytes((_SHARD_TAG,)) + varint(shard) if shard else b""
        self._tail = 5 + len(shard_field)  # the score's tag and 4 bytes, then the shard field
        heads = []
        for ad in ads:
            body = _ids(ad)
            heads.append(b"\x0a" + varint(len(body) + self._tail) + body)
        lengths = np.fromiter(map(len, heads), dtype=np.int64, count=len(heads))
        fits = np.flatnonzero(lengths <= MAX_HEAD_BYTES)
        width = int(lengths[fits].max(initial=0)) + self._tail
        self._table = np.zeros((len(heads), width), dtype=np.uint8)
        # Scatter the concatenated heads into their rows (vectorised), then each row's tail.
        blob = np.frombuffer(b"".join([heads[i] for i in fits.tolist()]), dtype=np.uint8)
        n = lengths[fits]
        cols = np.arange(len(blob)) - np.repeat(np.cumsum(n) - n, n)
        self._table[np.repeat(fits, n), cols] = blob
        self._table[fits, n] = _SCORE_TAG
        for j, byte in enumerate(shard_field):
            self._table[fits, n + 5 + j] = byte
        self._head = np.zeros(len(heads), dtype=np.uint8)  # MAX_HEAD_BYTES fits
        self._head[fits] = n
        self._width = width
        self._cols = np.arange(width)
        self._score = np.arange(1, 5)  # the score's bytes, after its tag
        self.ntotal = len(heads)

    @property
    def nbytes(self) -> int:
        """Memory the table holds (~50 bytes per ad with short ids)."""
        return int(self._table.nbytes + self._head.nbytes)

    def encode(self, ids: np.ndarray, scores: np.ndarray) -> bytes | None:
        """The ``candidates`` entries of these hits, in order; None when one needs the message
        path (an upserted ad, an ad too long for the table, or an exact zero score).

        Args:
            ids: (m,) int64 artifact rows (an upserted ad's id is >= ntotal).
            scores: (m,) float32.
        """
        if len(ids) == 0:
            return b""
        if int(ids.max()) >= self.ntotal:
            return None
        head = self._head[ids]
        score_bytes = np.ascontiguousarray(scores, dtype="<f4").view(np.uint8).reshape(-1, 4)
        if not head.all() or not score_bytes.any(axis=1).all():
            return None
        rows = self._table[ids]  # a copy: the scores are written into it
        at = (np.arange(len(ids)) * self._width + head)[:, None] + self._score
        rows.reshape(-1)[at] = score_bytes
        out: bytes = rows[self._cols < (head + self._tail)[:, None]].tobytes()
        return out


def scalar_fields(
    *,
    index_version: str,
    nprobe: int,
    plan: str,
    shards_answered: Sequence[int] = (),
    shard_count: int = 0,
    k_factor: int = 0,
) -> bytes:
    """RetrieveResponse fields 2, 3, 4, 10, 11 and 15 in number order (zero values omitted)."""
    out = _string(0x12, index_version)
    out += b"\x18" + varint(nprobe) if nprobe else b""
    out += _string(0x22, plan)
    if shards_answered:
        packed = b"".join(varint(s) for s in shards_answered)
        out += b"\x52" + varint(len(packed)) + packed
    out += b"\x58" + varint(shard_count) if shard_count else b""
    out += b"\x78" + varint(k_factor) if k_factor else b""
    return out
