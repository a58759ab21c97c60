"""indexer.ann: the one definition of search settings, exact top-k and recall."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer import ann
from support import clustered_vectors


def test_effective_k_factor_has_the_min_rerank_floor() -> None:
    assert ann.effective_k_factor(4, 64, 100) == 4.0
    assert ann.effective_k_factor(1, 64, 10) == 6.4
    assert np.isclose(ann.effective_k_factor(2, 0, 7), 2.0)


def test_search_params_nest_the_ivf_settings_under_the_refine_stage() -> None:
    xb = clustered_vectors(2000)
    index = faiss.index_factory(xb.shape[1], "IVF16,PQ8x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add(xb)
    params = ann.search_params(index, 4, 2, 10, min_rerank=64)
    assert isinstance(params, faiss.IndexRefineSearchParameters)
    assert params.k_factor == pytest.approx(6.4)  # the min_rerank floor for k=10
    # the nested IVF settings take effect: the same results as nprobe set on the index itself
    _, I = index.search(xb[:20], 10, params=params)
    faiss.extract_index_ivf(index).nprobe = 4
    index.k_factor = 6.4  # type: ignore[attr-defined]
    assert np.array_equal(I, index.search(xb[:20], 10)[1])
    plain = faiss.index_factory(xb.shape[1], "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    assert isinstance(ann.search_params(plain, 4, 2, 10), faiss.SearchParametersIVF)


def test_recall_counts_neither_padding_nor_repeats() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])  # the second query has 2 true ids
    # fewer than k results, padded with -1 (FAISS's padding): -1s must never count as hits
    found = np.array([[1, 2, -1, -1], [5, -1, -1, -1]])
    assert ann.recall_per_query(found, truth).tolist() == [0.5, 0.5]
    assert ann.recall_at_k(found, truth) == pytest.approx(0.5)
    # ragged lists and a repeated id
    assert ann.recall_at_k([np.array([1, 1, 1]), np.array([6, 5])], truth) == pytest.approx(
        (0.25 + 1.0) / 2
    )
    # nothing found at all, and nothing to find
    assert ann.recall_at_k(np.full((1, 3), -1), np.array([[7, 8, 9]])) == 0.0
    assert ann.recall_at_k([np.array([1])], np.array([[-1, -1]])) == 1.0


def test_recall_counts_ties_as_found_when_told() -> None:
    truth = np.array([[1, 2]])
    found = np.array([[1, 9]])  # 9 scores exactly as 2: an equal choice among ties
    tied = np.array([[True, True]])
    assert ann.recall_per_query(found, truth).tolist() == [0.5]
    assert ann.recall_per_query(found, truth, tied=tied).tolist() == [1.0]


def test_exact_search_blocks_masks_and_flat_index_agree(tmp_path: Path) -> None:
    xb = clustered_vectors(5000, seed=3)
    xq = clustered_vectors(20, seed=4)
    eligible = np.random.default_rng(0).random(len(xb)) < 0.3
    scores = xq @ xb.T
    scores[:, ~eligible] = -np.inf
    want = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    np.save(tmp_path / "xb.npy", xb)
    mapped = np.load(tmp_path / "xb.npy", mmap_mode="r")
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    for source in (xb, mapped, flat):
        D, I = ann.exact_search(source, xq, 10, eligible=eligible)
        assert ann.recall_at_k(I, want) == 1.0
        assert eligible[I].all()
        assert np.all(np.diff(D, axis=1) <= 1e-6)  # best first
    # fewer eligible rows than k: padded with -1
    few = np.zeros(len(xb), dtype=bool)
    few[[3, 4000]] = True
    _, I = ann.exact_search(mapped, xq[:1], 5, eligible=few)
    assert sorted(I[0][:2].tolist()) == [3, 4000] and I[0][2:].tolist() == [-1, -1, -1]


def test_fp16_store_is_exact_to_its_rounding_and_honours_the_mask() -> None:
    """Refine(SQfp16)'s stage is the server's vector store: a selector search over it agrees
    with exact float32 search up to fp16 rounding, and other stages are not stores."""
    xb = clustered_vectors(5000, seed=3)
    xq = clustered_vectors(20, seed=4)
    eligible = np.random.default_rng(1).random(len(xb)) < 0.1
    index = faiss.index_factory(
        xb.shape[1], "IVF16,PQ8x4fs,Refine(SQfp16)", faiss.METRIC_INNER_PRODUCT
    )
    index.train(xb)
    index.add(xb)
    store = ann.vector_store(index)
    assert isinstance(store, faiss.IndexScalarQuantizer)
    D, I = ann.exact_search(store, xq, 50, eligible=eligible)
    D32, I32 = ann.exact_search(xb, xq, 50, eligible=eligible)
    assert eligible[I].all()
    assert ann.recall_at_k(I, I32) >= 0.99  # only near-ties may swap
    assert np.abs(D - D32).max() <= 2e-3
    few = np.zeros(len(xb), dtype=bool)
    few[[3, 4000]] = True  # fewer eligible rows than k: padded with -1, as FAISS pads
    _, I = ann.exact_search(store, xq[:1], 5, eligible=few)
    assert sorted(I[0][:2].tolist()) == [3, 4000] and I[0][2:].tolist() == [-1, -1, -1]
    sq8 = faiss.index_factory(xb.shape[1], "IVF16,PQ8x4fs,Refine(SQ8)", faiss.METRIC_INNER_PRODUCT)
    sq8.train(xb)
    sq8.add(xb)
    assert ann.vector_store(sq8) is None  # too coarse to stand for the vectors
    plain = faiss.index_factory(xb.shape[1], "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    assert ann.vector_store(plain) is None


def test_exact_search_spans_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "EXACT_CHUNK_ROWS", 333)  # many blocks, the best rows in several
    xb = clustered_vectors(2000, seed=5)
    xq = clustered_vectors(5, seed=6)
    _, I = ann.exact_search(xb, xq, 50)
    want = np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :50]
    assert ann.recall_at_k(I, want) == 1.0


def test_merge_topk_keeps_the_best_and_drops_padding() -> None:
    D, I = ann.merge_topk(
        [np.array([0.9, 0.5, -1.0]), np.array([0.7])], [np.array([1, 2, -1]), np.array([10])], 3
    )
    assert I.tolist() == [1, 10, 2] and D.tolist() == pytest.approx([0.9, 0.7, 0.5])


def test_recall_interval_of_padded_results_stays_within_what_queries_can_give() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, -1, -1], [7, 8, 9, 10]] * 20)
    # padded (-1) and repeated ids never count: per query 0.5, 0.5 and 0.25
    found = np.array([[1, 2, -1, -1], [5, -1, -1, -1], [7, 7, 7, -1]] * 20)
    per_query = ann.recall_per_query(found, truth)
    assert per_query[:3].tolist() == [0.5, 0.5, 0.25]
    low, high = ann.recall_interval(per_query)
    assert 0.25 <= low <= per_query.mean() <= high <= 0.5
    everything = ann.recall_per_query(truth, truth)  # a query with 2 true ids finds both
    assert ann.recall_interval(everything) == (1.0, 1.0)
