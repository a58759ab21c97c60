"""The embedding cache: a rebuild embeds only the ads whose text is new.

Embedding, not FAISS, bounds a rebuild (all-MiniLM-L6-v2 embeds ~100-130 texts/s on two
cores), and a nightly catalog changes by a few percent. Vectors are kept beside the artifact
root, keyed by what makes them, and reused by every build, local or on Ray::

    ROOT/embedding-cache/
      <key>/                         one directory per CacheKey: embedder identity, text fields,
                                     separator and dimension (the first 16 hex digits of the
                                     sha256 of identity.json)
        identity.json                what the key stands for, readable
        part-<utc time>-<rand>.parquet   text_sha256 binary(32), text string,
                                         embedding fixed_size_list<float32>[d]

Each build adds one part holding the texts it embedded; when parts pile up or hold mostly
texts the catalog no longer has, the build writes one part with the catalog's texts and
removes the parts it read. The ``text`` column costs ~10% of a part (embeddings are 1,536 B at
384-d) and makes the cache inspectable: which text each vector is for, checkable against its
key with ``sha256sum``.

Nothing in the cache is trusted: parts are written to a hidden temporary name, fsynced and
renamed; parquet page checksums, the schema, the key in each part's metadata, the row count,
the dimension and finite unit-length vectors are checked on read, and a part that fails is
ignored with a warning (its texts are embedded again). Vectors of two embedders never meet: a
different embedder, text-field choice or separator is a different key, hence a different
directory, and a part whose metadata names another key is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.durable import fsync_path
from indexer.manifest import EmbeddingInfo

logger = logging.getLogger(__name__)

CACHE_DIR = "embedding-cache"  # under the artifact root, beside the versions
IDENTITY_FILE = "identity.json"
_KEY_META = b"adindex.cache_key"
_ROWS_META = b"adindex.rows"
# Rewrite the cache as one part of the catalog's texts when it holds more parts than this ...
MAX_PARTS = 8
# ... or more rows than this many times the catalog's distinct texts.
MAX_DEAD_RATIO = 2.0
_NORM_TOLERANCE = 1e-3  # embedders return unit rows; anything else was not written by one


@dataclass(frozen=True)
class CacheKey:
    """Everything a cached vector depends on besides the text itself."""

    embedder: str  # embedder_identity()
    text_fields: tuple[str, ...]
    text_separator: str
    dimension: int

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "text_fields": list(self.text_fields)}

    @property
    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def text_digests(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sha256 of each distinct text, and how the texts map onto them.

    Returns:
        (keys, first, inverse): keys (m,) ``S32`` of the m distinct texts in order of first
        appearance; first (m,) int64, the first text of each; inverse (n,) int64, text i's key.
    """
    seen: dict[bytes, int] = {}
    first: list[int] = []
    inverse = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        digest = hashlib.sha256(text.encode()).digest()
        j = seen.setdefault(digest, len(seen))
        if j == len(first):
            first.append(i)
        inverse[i] = j
    keys = np.frombuffer(b"".join(seen), dtype="S32") if seen else np.empty(0, dtype="S32")
    return keys, np.asarray(first, dtype=np.int64), inverse


class EmbeddingCache:
    """The cache directory of one key (see the module docstring)."""

    def __init__(self, root: Path, key: CacheKey):
        self.key = key
        self.dir = root / key.digest
        self._read: list[Path] = []  # parts looked up by this build (compaction removes them)
        self._failed: list[Path] = []  # parts that could not be trusted
        self._rows_read = 0
        self.usable = self._check_identity()

    def _check_identity(self) -> bool:
        path = self.dir / IDENTITY_FILE
        if not path.exists():
            return True
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("%s: unreadable (%s); the cache is not used", path, exc)
            return False
        if found != self.key.to_json():
            logger.warning(
                "%s: holds vectors of %s, this build's key is %s; the cache is not used",
                self.dir,
                found,
                self.key.to_json(),
            )
            return False
        return True

    def parts(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("part-*.parquet") if p.is_file())

    def lookup(self, keys: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill ``out[i]`` with the cached vector of ``keys[i]`` where the cache has it.

        Args:
            keys: (m,) ``S32`` sha256 digests of distinct texts.
            out: (m, d) float32, written only where found.

        Returns:
            (m,) bool: which keys were found.
        """
        found = np.zeros(len(keys), dtype=bool)
        if not self.usable or not len(keys):
            return found
        # Search on the first 8 bytes of each digest, then compare all 32.
        k64 = np.ascontiguousarray(keys).view(np.uint64).reshape(-1, 4)[:, 0]
        order = np.argsort(k64, kind="stable")
        sorted64 = k64[order]
        for path in self.parts():
            try:
                part_keys, xb = self._read_part(path)
            except (OSError, ValueError, pa.ArrowException) as exc:
                logger.warning("%s: ignored (%s); its texts are embedded again", path, exc)
                self._failed.append(path)
                continue
            self._read.append(path)
            self._rows_read += len(part_keys)
            p64 = part_keys.view(np.uint64).reshape(-1, 4)[:, 0]
            pos = np.minimum(np.searchsorted(sorted64, p64), len(sorted64) - 1)
            hit = sorted64[pos] == p64
            rows = np.flatnonzero(hit)
            target = order[pos[rows]]
            same = keys[target] == part_keys[rows]
            out[target[same]] = xb[rows[same]]
            found[target[same]] = True
        return found

    def _read_part(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(keys (r,) S32, vectors (r, d) float32) of one part; ValueError if it is not sound."""
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        meta = pf.schema_arrow.metadata or {}
        if meta.get(_KEY_META) != self.key.digest.encode():
            raise ValueError(f"written for cache key {meta.get(_KEY_META)!r}, not this one")
        table = pf.read(columns=["text_sha256", "embedding"])
        d = self.key.dimension
        expected = pa.schema(
            [("text_sha256", pa.binary(32)), ("embedding", pa.list_(pa.float32(), d))]
        )
        if not table.schema.remove_metadata().equals(expected):
            raise ValueError(f"schema {table.schema.remove_metadata()}, expected {expected}")
        if int(meta.get(_ROWS_META, b"-1")) != table.num_rows:
            raise ValueError(f"{table.num_rows} rows, its metadata says {meta.get(_ROWS_META)!r}")
        sha = table.column("text_sha256").combine_chunks()
        emb = table.column("embedding").combine_chunks()
        values = emb.flatten()
        if sha.null_count or emb.null_count or values.null_count:
            raise ValueError("null keys or vectors")
        keys = np.frombuffer(sha.buffers()[1], dtype="S32", count=len(sha), offset=sha.offset * 32)
        xb = values.to_numpy(zero_copy_only=False).reshape(-1, d)
        norms = np.linalg.norm(xb, axis=1)
        if not (np.isfinite(norms).all() and (np.abs(norms - 1) < _NORM_TOLERANCE).all()):
            raise ValueError("vectors that are not finite and of unit length")
        return keys, xb

    def store(
        self,
        keys: np.ndarray,
        texts: Sequence[str],
        first: np.ndarray,
        xb: np.ndarray,
        new: np.ndarray,
    ) -> None:
        """Keep this build's new vectors; compact when the cache grew too big or has a bad part.

        Args:
            keys: (m,) S32 digests of the catalog's distinct texts.
            texts: the catalog's texts; ``texts[first[i]]`` is the text of ``keys[i]``.
            first: (m,) int64.
            xb: (m, d) float32, their vectors.
            new: (m,) bool, the ones embedded by this build.
        """
        if not self.usable:
            return
        compact = bool(self._failed) or (
            len(self._read) >= MAX_PARTS or self._rows_read > MAX_DEAD_RATIO * len(keys)
        )
        if not compact and not new.any():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_identity()
        rows = np.arange(len(keys)) if compact else np.flatnonzero(new)
        self._write_part(keys[rows], [texts[first[i]] for i in rows], xb[rows])
        if compact:  # the new part holds every text of the catalog: the parts read are spent
            for path in self._read + self._failed:
                path.unlink(missing_ok=True)
            fsync_path(self.dir)
            logger.info(
                "%s: compacted %d part(s) into one of %d texts",
                self.dir,
                len(self._read) + len(self._failed),
                len(rows),
            )

    def _write_identity(self) -> None:
        path = self.dir / IDENTITY_FILE
        if not path.exists():
            text = json.dumps(self.key.to_json(), indent=2, sort_keys=True, ensure_ascii=False)
            _atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))

    def _write_part(self, keys: np.ndarray, texts: list[str], xb: np.ndarray) -> Path:
        d = self.key.dimension
        table = pa.table(
            {
                "text_sha256": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(32), len(keys), [None, pa.py_buffer(keys.tobytes())]
                ),
                "text": pa.array(texts, type=pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(xb, dtype=np.float32).ravel()), d
                ),
            }
        ).replace_schema_metadata(
            {_KEY_META: self.key.digest.encode(), _ROWS_META: str(len(keys)).encode()}
        )
        now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.dir / f"part-{now}-{uuid.uuid4().hex[:8]}.parquet"
        _atomic_write(path, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))
        logger.info("%s: cached %d vectors", path, len(keys))
        return path


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a hidden temporary file, fsync, rename: readers see all of it or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        fsync_path(tmp)
        os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


Encode = Callable[[list[str]], np.ndarray]


def embed_with_cache(
    texts: Sequence[str], key: CacheKey, encode: Encode, cache_root: Path | None
) -> tuple[np.ndarray, EmbeddingInfo]:
    """Vectors for ``texts``: from the cache where it has them, ``encode`` for the rest.

    Each distinct text is embedded once. New vectors are checked (shape, finite) and cached.

    Args:
        texts: n texts, one per ad.
        key: the embedder and text settings the vectors are for.
        encode: embeds a list of texts into (len, d) float32 unit rows.
        cache_root: directory of the cache (``ROOT/embedding-cache``); None: no cache.

    Returns:
        (xb, info): xb (n, d) float32, row i = texts[i]; the counts the manifest records.
    """
    d = key.dimension
    keys, first, inverse = text_digests(texts)
    xu = np.empty((len(keys), d), dtype=np.float32)
    cache = EmbeddingCache(cache_root, key) if cache_root is not None else None
    found = cache.lookup(keys, xu) if cache is not None else np.zeros(len(keys), dtype=bool)
    missing = np.flatnonzero(~found)
    if len(found):
        logger.info(
            "Embedding %d new text(s); %d of %d distinct text(s) from the cache",
            len(missing),
            int(found.sum()),
            len(keys),
        )
    if len(missing):
        x_new = encode([texts[i] for i in first[missing]])
        if x_new.shape != (len(missing), d) or not np.isfinite(x_new).all():
            raise ValueError(
                f"the embedder returned {x_new.shape} vectors for {len(missing)} texts of "
                f"dimension {d}, or non-finite values"
            )
        xu[missing] = x_new
    if cache is not None:
        cache.store(keys, texts, first, xu, ~found)
    identity = len(keys) == len(texts)  # every text distinct: no copy
    xb = xu if identity else xu[inverse]
    embedded = int((~found)[inverse].sum())
    info = EmbeddingInfo(
        embedded=embedded,
        reused=len(texts) - embedded,
        texts_embedded=len(missing),
        cache=str(cache.dir) if cache is not None and cache.usable else None,
    )
    return xb, info
