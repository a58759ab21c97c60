from __future__ import annotations

import pytest

from indexer.params import MIN_POINTS_PER_LIST, choose_nlist, choose_params, choose_pq_m, nlist_of


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


def test_small_corpus_gets_ivf_flat_and_large_gets_ivf_pq_with_reranking() -> None:
    assert choose_params(300, 384).index_factory == "IVF4,Flat"
    p = choose_params(100_000, 384)
    assert p.index_factory == "IVF1024,PQ96x4fs,RFlat"
    assert 1 <= p.nprobe <= p.nlist
    assert p.train_size <= 100_000


def test_explicit_parameters_win() -> None:
    p = choose_params(50_000, 384, index_factory="IVF256,PQ48np", nprobe=32, k_factor=8)
    assert (p.index_factory, p.nlist, p.nprobe, p.k_factor) == ("IVF256,PQ48np", 256, 32, 8)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="not an IVF index"):
        choose_params(1000, 384, index_factory="HNSW32")
    with pytest.raises(ValueError, match="4096 lists for only 1000"):
        choose_params(1000, 384, index_factory="IVF4096,Flat")
    with pytest.raises(ValueError, match="nprobe"):
        choose_params(1000, 384, index_factory="IVF16,Flat", nprobe=17)
    assert nlist_of("IVF1024_HNSW32,PQ48x4fs") == 1024
