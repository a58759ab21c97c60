from __future__ import annotations

import logging

import faiss
import pytest

from indexer.params import (
    MIN_POINTS_PER_LIST,
    candidate_factories,
    choose_nlist,
    choose_params,
    choose_pq_m,
    estimate_memory_bytes,
    nlist_of,
)
from support import clustered_vectors

MB = 2**20


@pytest.mark.parametrize("n", [1, 10, 300, 999, 1_000, 5_000, 54_667, 100_000, 1_000_000])
def test_nlist_trains_each_list_on_enough_points(n: int) -> None:
    nlist = choose_nlist(n)
    assert nlist >= 1
    assert nlist & (nlist - 1) == 0, "power of two"
    assert nlist == 1 or n // nlist >= MIN_POINTS_PER_LIST


def test_nlist_grows_like_sqrt_n() -> None:
    assert choose_nlist(100_000) == 1024
    assert choose_nlist(1_000_000) == 2048


@pytest.mark.parametrize("d", [32, 64, 128, 384, 768])
def test_pq_m_divides_d_and_is_even(d: int) -> None:
    m = choose_pq_m(d)
    assert d % m == 0 and m % 2 == 0


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (300, "IVF4,Flat"),  # small corpus: IVF-Flat, exact within the probed lists
        (999, "IVF16,Flat"),
        (1_000, "IVF16,PQ192x4fs,Refine(SQfp16)"),
        (5_000, "IVF128,PQ192x4fs,Refine(SQfp16)"),
        (54_667, "IVF512,PQ192x4fs,Refine(SQfp16)"),
        (100_000, "IVF1024,PQ192x4fs,Refine(SQfp16)"),
    ],
)
def test_default_factory_by_corpus_size(n: int, expected: str) -> None:
    p = choose_params(n, 384)
    assert p.index_factory == expected
    assert p.nlist == nlist_of(expected) and 1 <= p.nprobe <= p.nlist
    assert p.train_size <= n
    assert p.memory_bytes == estimate_memory_bytes(expected, n, 384)


@pytest.mark.parametrize("n", [1_000, 54_667, 100_000])
def test_memory_budget_picks_the_best_stage_that_fits(n: int) -> None:
    d = 384
    ladder = candidate_factories(n, d)
    needs = [estimate_memory_bytes(f, n, d) for f in ladder]
    assert all(need is not None for need in needs)
    assert ladder[0].endswith(",Refine(SQfp16)") and ladder[1].endswith(",Refine(SQ8)")
    assert not any("RFlat" in f for f in ladder) and "Refine" not in ladder[-1]
    for i, need in enumerate(needs):
        assert need is not None
        # A budget of exactly what this candidate needs: it, or a better one that also fits.
        p = choose_params(n, d, max_memory_mb=need / MB)
        assert p.memory_bytes is not None and p.memory_bytes <= need
        assert ladder.index(p.index_factory) <= i
        # One byte less: never this candidate or a better one.
        if i + 1 < len(ladder):
            p = choose_params(n, d, max_memory_mb=(need - 1) / MB)
            assert ladder.index(p.index_factory) > i


def test_memory_budget_at_100k() -> None:
    # 100k x 384: SQfp16 needs ~86 MB, SQ8 ~50 MB, PQ alone ~13 MB (RFlat ~159 MB: only
    # when asked for).
    f = "IVF1024,PQ192x4fs"
    assert choose_params(100_000, 384).index_factory == f"{f},Refine(SQfp16)"
    assert choose_params(100_000, 384, max_memory_mb=90).index_factory == f"{f},Refine(SQfp16)"
    assert choose_params(100_000, 384, max_memory_mb=60).index_factory == f"{f},Refine(SQ8)"
    assert choose_params(100_000, 384, max_memory_mb=45).index_factory == (
        "IVF1024,PQ96x4fs,Refine(SQ8)"
    )
    p = choose_params(100_000, 384, max_memory_mb=20)
    assert p.index_factory == f and p.memory_bytes is not None and p.memory_bytes <= 20 * MB
    assert choose_params(100_000, 384, max_memory_mb=6).index_factory == "IVF1024,PQ48x4fs"


def test_no_candidate_fits_a_tiny_budget() -> None:
    with pytest.raises(ValueError, match=r"no index of 100000 x 384 vectors fits 1\.0 MB"):
        choose_params(100_000, 384, max_memory_mb=1)
    with pytest.raises(ValueError, match="max_memory_mb must be > 0"):
        choose_params(100_000, 384, max_memory_mb=0)


def test_explicit_parameters_win(caplog: pytest.LogCaptureFixture) -> None:
    p = choose_params(50_000, 384, index_factory="IVF256,PQ48np", nprobe=32, k_factor=8)
    assert (p.index_factory, p.nlist, p.nprobe, p.k_factor) == ("IVF256,PQ48np", 256, 32, 8)
    with caplog.at_level(logging.WARNING, logger="indexer.params"):
        p = choose_params(100_000, 384, index_factory="IVF1024,Flat", max_memory_mb=10)
    assert p.index_factory == "IVF1024,Flat"
    assert "over the 10.0 MB budget" in caplog.text


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="not an IVF index"):
        choose_params(1000, 384, index_factory="HNSW32")
    with pytest.raises(ValueError, match="4096 lists for only 1000"):
        choose_params(1000, 384, index_factory="IVF4096,Flat")
    with pytest.raises(ValueError, match="nprobe"):
        choose_params(1000, 384, index_factory="IVF16,Flat", nprobe=17)
    assert nlist_of("IVF1024_HNSW32,PQ48x4fs") == 1024


@pytest.mark.parametrize(
    "factory",
    [
        "IVF32,Flat",
        "IVF32,SQ8",
        "IVF32,PQ16x4fs,RFlat",
        "IVF32,PQ8np,Refine(SQ8)",
        "IVF32,PQ16x4fs,Refine(SQfp16)",
        "IVF32_HNSW32,PQ32x4fs",
    ],
)
def test_memory_estimate_matches_the_built_index(factory: str) -> None:
    n, d = 10_000, 64
    xb = clustered_vectors(n, d)
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add(xb)
    actual = len(faiss.serialize_index(index))
    estimate = estimate_memory_bytes(factory, n, d)
    assert estimate is not None
    assert abs(estimate - actual) <= 0.03 * actual, (estimate, actual)


def test_memory_estimate_counts_the_opq_rotation() -> None:
    # (OPQ training takes too long for a unit test; the rotation is a d x d' float matrix.)
    plain = estimate_memory_bytes("IVF32,PQ16x4fs", 1000, 64)
    assert plain is not None
    assert estimate_memory_bytes("OPQ16_64,IVF32,PQ16x4fs", 1000, 64) == plain + 64 * 64 * 4


def test_memory_estimate_of_unknown_components_is_none() -> None:
    assert estimate_memory_bytes("IVF32,LSH", 1000, 64) is None
    assert estimate_memory_bytes("IVF32,PQ16x4fs,Refine(PQ8)", 1000, 64) is None
