"""OpenMP threads per search: the cores for a lone search, one each while searches overlap."""

from __future__ import annotations

import os
import sys
import threading

import faiss
import numpy as np
import pytest

from indexer.ann import (
    BitmapSelector,
    exact_search,
    recall_at_k,
    search_params,
    use_serving_implementation,
)
from retrieval.threads import BACKGROUND_NICE, SearchThreads, available_cores, become_background


def test_a_lone_search_gets_alone_threads_overlapping_ones_busy_and_the_count_is_restored() -> None:
    threads = SearchThreads(busy=1, alone=2, window=4, max_overlap=0.1)
    faiss.omp_set_num_threads(1)
    with threads.search() as first:
        assert first == 2 and faiss.omp_get_max_threads() == 2
        seen: list[int] = []

        def other() -> None:
            with threads.search() as n:
                seen.append(faiss.omp_get_max_threads())
                assert n == 1
            seen.append(faiss.omp_get_max_threads())  # restored on that thread too

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert seen[0] == 1
    assert faiss.omp_get_max_threads() == 1
    # Searches overlapped lately (1 of 2, average 0.25 over a window of 4): lone searches stay
    # on one thread until the average decays below 0.1, here after 4 more lone searches.
    later = []
    for _ in range(5):
        with threads.search() as n:
            later.append(n)
    assert later == [1, 1, 1, 2, 2], (later, threads.overlap)
    with pytest.raises(ValueError, match="thread counts"):
        SearchThreads(busy=0)
    assert available_cores() >= 1


def test_background_work_takes_one_openmp_thread_and_on_linux_the_lowest_priority() -> None:
    before_omp = faiss.omp_get_max_threads()
    before_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    faiss.omp_set_num_threads(2)
    seen: dict[str, int] = {}

    def work() -> None:
        seen["nice"] = become_background()
        seen["omp"] = faiss.omp_get_max_threads()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    try:
        assert seen["omp"] == 1 and faiss.omp_get_max_threads() == 2  # per thread: ours unchanged
        if sys.platform.startswith("linux"):  # per thread too: this one keeps its nice value
            assert seen["nice"] == BACKGROUND_NICE
            assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before_nice
        else:
            assert seen["nice"] == 0
    finally:
        faiss.omp_set_num_threads(before_omp)


def _fast_scan(factory: str) -> tuple[faiss.Index, np.ndarray]:
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((5000, 32)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    index = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add(xb)
    return index, xb


def test_serving_implementation_is_set_only_where_faiss_supports_it() -> None:
    index, xb = _fast_scan("IVF16,PQ16x4fs,RFlat")
    use_serving_implementation(index)
    assert faiss.downcast_index(index.base_index).implem == 15  # type: ignore[attr-defined]
    odd, _ = _fast_scan("IVF16,PQ16x4fs_64")  # block size 64: implementation 15 would fail
    use_serving_implementation(odd)
    assert faiss.downcast_index(odd).implem == 0  # type: ignore[attr-defined]
    odd.search(xb[:2], 5)  # and it still searches
    plain, _ = _fast_scan("IVF16,Flat")
    use_serving_implementation(plain)  # not fast-scan: left alone
    plain.search(xb[:2], 5)


def test_two_threads_reach_the_recall_of_one_and_honour_the_selector() -> None:
    index, xb = _fast_scan("IVF16,PQ16x4fs,RFlat")
    use_serving_implementation(index)
    eligible = np.random.default_rng(1).random(len(xb)) < 0.5
    selector = BitmapSelector(eligible)
    params = search_params(index, 8, 4, 20, sel=selector.sel)
    xq = xb[:100] + np.float32(0.1)
    _, truth = exact_search(xb, xq, 20, eligible=eligible)
    recall = {}
    for n in (1, 2):
        faiss.omp_set_num_threads(n)
        found = [index.search(xq[i : i + 1], 20, params=params)[1][0] for i in range(len(xq))]
        assert all(eligible[f].all() for f in found)  # the selector holds on both paths
        recall[n] = recall_at_k(found, truth)
    faiss.omp_set_num_threads(1)
    # Not identical lists: near-ties among quantized scores are kept differently when the
    # probed lists are split over threads; the quality is the same.
    assert recall[1] >= 0.8
    assert abs(recall[2] - recall[1]) <= 0.02, recall
