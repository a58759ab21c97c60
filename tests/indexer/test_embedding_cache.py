"""The embedding cache: reuse what was embedded, never trust or mix what should not be."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from indexer import artifact
from indexer.build import BuildConfig, build
from indexer.catalog import write_catalog_jsonl
from indexer.embedding import embedder_identity
from indexer.embedding_cache import (
    IDENTITY_FILE,
    MAX_PARTS,
    CacheKey,
    EmbeddingCache,
    embed_with_cache,
)
from indexer.manifest import Manifest
from support import HashEmbedder, make_records

KEY = CacheKey("hash-bow", ("title", "description"), ". ", 32)


class Counting:
    """An encode function that remembers what it was asked to embed."""

    def __init__(self, dimension: int = 32):
        self.embedder = HashEmbedder(dimension)
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.embedder.encode(texts)

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


def texts_of(n: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} {i} about w{i % 17} and w{i % 5}" for i in range(n)]


def test_a_rebuild_embeds_only_new_texts(tmp_path: Path) -> None:
    texts = texts_of(200)
    first = Counting()
    xb1, info1 = embed_with_cache(texts, KEY, first, tmp_path)
    assert (info1.embedded, info1.reused, info1.texts_embedded) == (200, 0, 200)
    assert info1.cache == str(tmp_path / KEY.digest)
    changed = [*texts[:-2], "a new text", texts[0]]  # one new text, one repeated
    again = Counting()
    xb2, info2 = embed_with_cache(changed, KEY, again, tmp_path)
    assert again.texts == ["a new text"]
    assert (info2.embedded, info2.reused, info2.texts_embedded) == (1, 199, 1)
    np.testing.assert_array_equal(xb2[:198], xb1[:198])
    np.testing.assert_array_equal(xb2[199], xb1[0])
    np.testing.assert_allclose(xb2[198], HashEmbedder().encode(["a new text"])[0], atol=1e-6)


def test_equal_texts_are_embedded_once(tmp_path: Path) -> None:
    encode = Counting()
    xb, info = embed_with_cache(["a b", "c d", "a b"], KEY, encode, None)
    assert encode.texts == ["a b", "c d"]
    assert (info.embedded, info.reused, info.texts_embedded, info.cache) == (3, 0, 2, None)
    np.testing.assert_array_equal(xb[0], xb[2])


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.replace(KEY, embedder="hash-bow/onnx-int8/0123abcd"),
        dataclasses.replace(KEY, text_fields=("title",)),
        dataclasses.replace(KEY, text_separator=" | "),
    ],
)
def test_another_embedder_or_text_choice_is_another_cache(tmp_path: Path, other: CacheKey) -> None:
    texts = texts_of(50)
    embed_with_cache(texts, KEY, Counting(), tmp_path)
    encode = Counting()
    _, info = embed_with_cache(texts, other, encode, tmp_path)
    assert encode.texts == texts and info.reused == 0
    assert other.digest != KEY.digest
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([KEY.digest, other.digest])


def test_embedder_identity_prefers_embedder_id() -> None:
    embedder = HashEmbedder()
    assert embedder_identity(embedder) == "hash-bow"

    class WithId(HashEmbedder):
        embedder_id = "hash-bow/numpy-fp32/0123456789ab"

    assert embedder_identity(WithId()) == "hash-bow/numpy-fp32/0123456789ab"


def _only_part(root: Path) -> Path:
    (part,) = EmbeddingCache(root, KEY).parts()
    return part


def test_corrupt_or_partial_parts_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    texts = texts_of(300)
    xb, _ = embed_with_cache(texts, KEY, Counting(), tmp_path)
    part = _only_part(tmp_path)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit inside the vectors: page checksums catch it
    part.write_bytes(bytes(data))
    encode = Counting()
    with caplog.at_level(logging.WARNING, logger="indexer.embedding_cache"):
        xb2, info = embed_with_cache(texts, KEY, encode, tmp_path)
    assert info.reused == 0 and encode.texts == texts
    assert any(f"{part}: ignored" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(xb2, xb, atol=1e-6)
    # The corrupt part was replaced by a sound one: the next build reuses everything.
    assert not part.exists()
    part = _only_part(tmp_path)
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # a torn copy
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="indexer.embedding_cache"):
        _, info = embed_with_cache(texts, KEY, Counting(), tmp_path)
    assert info.reused == 0
    assert any(f"{part}: ignored" in r.getMessage() for r in caplog.records)


def test_vectors_of_another_key_are_never_mixed_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    texts = texts_of(40)
    other = dataclasses.replace(KEY, embedder="another-model")
    embed_with_cache(texts, other, Counting(), tmp_path)
    (foreign,) = EmbeddingCache(tmp_path, other).parts()
    (tmp_path / KEY.digest).mkdir()
    shutil.copy(foreign, tmp_path / KEY.digest / foreign.name)  # same texts, other embedder
    encode = Counting()
    with caplog.at_level(logging.WARNING, logger="indexer.embedding_cache"):
        _, info = embed_with_cache(texts, KEY, encode, tmp_path)
    assert info.reused == 0 and encode.texts == texts
    assert any("written for cache key" in r.getMessage() for r in caplog.records)
    # A directory whose identity.json names another key is not used at all, not even written.
    identity = tmp_path / KEY.digest / IDENTITY_FILE
    identity.write_text(json.dumps(other.to_json()))
    before = sorted(p.name for p in (tmp_path / KEY.digest).iterdir())
    _, info = embed_with_cache(texts, KEY, Counting(), tmp_path)
    assert info.reused == 0 and info.cache is None
    assert sorted(p.name for p in (tmp_path / KEY.digest).iterdir()) == before


def test_a_part_of_another_dimension_is_refused(tmp_path: Path) -> None:
    texts = texts_of(20)
    embed_with_cache(texts, KEY, Counting(), tmp_path)
    table = pq.read_table(_only_part(tmp_path))
    wrong = dataclasses.replace(KEY, dimension=16)
    # The same key digest in the metadata, but vectors of 32 where 16 are expected.
    cache = EmbeddingCache(tmp_path, wrong)
    cache.dir.mkdir()
    meta = {b"adindex.cache_key": wrong.digest.encode(), b"adindex.rows": b"20"}
    pq.write_table(table.replace_schema_metadata(meta), cache.dir / "part-x.parquet")
    encode = Counting(16)
    _, info = embed_with_cache(texts, wrong, encode, tmp_path)
    assert info.reused == 0 and encode.texts == texts


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def torn(table: object, where: Path, **kwargs: object) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", torn)
    with pytest.raises(OSError, match="disk full"):
        embed_with_cache(texts_of(10), KEY, Counting(), tmp_path)
    assert [p.name for p in (tmp_path / KEY.digest).iterdir()] == [IDENTITY_FILE]


def test_parts_are_compacted(tmp_path: Path) -> None:
    texts = texts_of(30)
    for i in range(MAX_PARTS + 1):  # each build changes one text: one more part each time
        texts[i] = f"changed {i}"
        _, info = embed_with_cache(texts, KEY, Counting(), tmp_path)
        assert info.texts_embedded == (30 if i == 0 else 1)
    parts = EmbeddingCache(tmp_path, KEY).parts()
    assert len(parts) == 1 and pq.read_metadata(parts[0]).num_rows == 30
    encode = Counting()
    _, info = embed_with_cache(texts, KEY, encode, tmp_path)
    assert info.reused == 30 and encode.calls == []


def _build(catalog: Path, out: Path, **kwargs: object) -> Manifest:
    config = BuildConfig(catalog=catalog, out=out, threads=1, **kwargs)  # type: ignore[arg-type]
    return build(config, embedder=HashEmbedder()).manifest


def test_rebuild_after_changing_one_percent(tmp_path: Path) -> None:
    records = make_records(1000)
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(records, path)
    out = tmp_path / "idx"
    m1 = _build(path, out)
    assert m1.embedding is not None and (m1.embedding.embedded, m1.embedding.reused) == (1000, 0)
    for i in range(0, 1000, 100):  # 1%: ten ads get new titles
        records[i] = dataclasses.replace(records[i], title=f"brand new title {i}")
    write_catalog_jsonl(records, path)
    m2 = _build(path, out)
    assert m2.embedding is not None
    assert (m2.embedding.embedded, m2.embedding.reused, m2.embedding.texts_embedded) == (
        10,
        990,
        10,
    )
    assert (
        m2.embedding.cache is not None
        and Path(m2.embedding.cache).parent == out / "embedding-cache"
    )
    assert m2.model.embedder == "hash-bow"
    fresh = _build(path, tmp_path / "fresh", embedding_cache=False)
    assert fresh.embedding is not None and fresh.embedding.cache is None
    assert (fresh.embedding.embedded, fresh.embedding.reused) == (1000, 0)
    assert not (tmp_path / "fresh" / "embedding-cache").exists()
    reused = np.load(out / m2.version / artifact.EMBEDDINGS_FILE)
    embedded = np.load(tmp_path / "fresh" / fresh.version / artifact.EMBEDDINGS_FILE)
    np.testing.assert_array_equal(reused, embedded)


def test_precomputed_embeddings_skip_the_cache(tmp_path: Path) -> None:
    records = make_records(50)
    path = tmp_path / "ads.jsonl"
    xb = HashEmbedder().encode([r.title for r in records])
    write_catalog_jsonl(records, path, embeddings=xb)
    m = build(BuildConfig(catalog=path, out=tmp_path / "idx", threads=1)).manifest
    assert m.embedding is None and m.model.name == "precomputed"
    assert not (tmp_path / "idx" / "embedding-cache").exists()
