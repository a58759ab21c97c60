"""Benchmark systems: hnswlib's saved index reused only over the very vectors it was built on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.datasets import calibrated
from benchmarks.systems_ext import Hnsw


def test_hnswlib_reuses_its_cached_index_only_for_the_same_vectors(tmp_path: Path) -> None:
    ds = calibrated(2000, 20, 16, seed=3)
    cache = tmp_path / "hnsw.bin"
    first = Hnsw("ip", (64,), m=8, ef_construction=40, cache=cache).build(ds, tmp_path)
    assert cache.is_file() and "reused_index" not in first.extra
    again = Hnsw("ip", (64,), m=8, ef_construction=40, cache=cache)
    built = again.build(ds, tmp_path)
    assert built.extra["reused_index"] == str(cache) and built.build_s == first.build_s
    found = again.searcher({"ef_search": 64}, ds.xq, 10)(0)
    assert len(found) == 10 and set(found) <= set(range(ds.nb))
    other = calibrated(2000, 20, 16, seed=4)  # same shape, other vectors: built anew
    rebuilt = Hnsw("ip", (64,), m=8, ef_construction=40, cache=cache).build(other, tmp_path)
    assert "reused_index" not in rebuilt.extra
    assert not np.array_equal(other.xb, ds.xb)
