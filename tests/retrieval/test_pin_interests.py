"""Quotas and pin clustering: the pure parts of multi-interest retrieval (the server tests are
in test_interests.py)."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.ann import normalize
from retrieval.interests import InterestConfig, quotas
from retrieval.pin_interests import pin_importance, pin_interests, ward_clusters


@pytest.mark.parametrize(
    ("weights", "k", "expected"),
    [
        ([1.0], 10, [10]),
        ([3.0, 1.0], 40, [30, 10]),  # by weight: the floor (4) does not bind
        ([8.0, 1.0, 1.0], 40, [32, 4, 4]),  # 32.0 : 4.0 : 4.0, exactly at the floor
        ([10.0, 1.0, 1.0], 40, [32, 4, 4]),  # 33.3 : 3.3 : 3.3: floored, the rest to the first
        ([0.98, 0.01, 0.01], 100, [80, 10, 10]),  # the floor: 10% of k each
        ([1.0, 1.0, 1.0], 10, [4, 3, 3]),  # remainder to the first of equals
        ([1.0, 2.0, 1.0], 1, [0, 1, 0]),  # more interests than k: by weight alone
        ([5.0] * 8, 4, [1, 1, 1, 1, 0, 0, 0, 0]),
    ],
)
def test_quotas(weights: list[float], k: int, expected: list[int]) -> None:
    q = quotas(np.array(weights), k, min_share=0.1)
    assert q.tolist() == expected and q.sum() == k


def test_quotas_always_sum_to_k() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        m, k = int(rng.integers(1, 9)), int(rng.integers(1, 300))
        w = rng.random(m) + 1e-3
        q = quotas(w, k, min_share=float(rng.random() * 0.3))
        assert q.sum() == k and (q >= 0).all()
        heavier = np.argsort(-w, kind="stable")
        assert (np.diff(q[heavier]) <= 1).all()  # a heavier interest never gets less (but ties)


def _blobs(sizes: list[int], noise: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = normalize(rng.standard_normal((len(sizes), 64)).astype(np.float32))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = normalize(centres[labels] + noise * rng.standard_normal((len(labels), 64)))
    return x, labels


def test_ward_separates_distinct_interests_and_keeps_one_together() -> None:
    x, labels = _blobs([6, 3, 1], noise=0.08)
    found = ward_clusters(x, merge_cost=0.65)
    assert found.tolist() == labels.tolist()  # numbered by first pin
    assert ward_clusters(x, merge_cost=10.0).tolist() == [0] * 10  # no threshold: one cluster
    assert ward_clusters(x, merge_cost=0.0).tolist() == list(range(10))  # every pin alone
    assert ward_clusters(x[:1], merge_cost=0.65).tolist() == [0]


def test_ward_cost_of_two_pins_is_one_minus_cosine() -> None:
    x = normalize(np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32))  # cosine 0.6
    assert ward_clusters(x, merge_cost=0.41).tolist() == [0, 0]
    assert ward_clusters(x, merge_cost=0.39).tolist() == [0, 1]


def test_importance_decays_by_half_life_from_the_newest_engagement() -> None:
    day = 86_400
    t = np.array([100 * day, 70 * day, 40 * day, 0])
    got = pin_importance(t, np.array([1.0, 1.0, 2.0, 1.0]), half_life_s=30 * day)
    np.testing.assert_allclose(got, [1.0, 0.5, 0.5, 1.0])  # unknown time: as the newest


def test_pin_interests_weights_medoids_and_cap() -> None:
    x, _ = _blobs([5, 3, 2], noise=0.08)
    importance = np.ones(10)
    importance[5:8] = 3.0  # the 3-pin cluster outweighs the 5-pin one
    found = pin_interests(x, importance, max_interests=2, merge_cost=0.65, vector="mean")
    assert [sorted(f.rows) for f in found] == [[5, 6, 7], [0, 1, 2, 3, 4]]
    assert [round(f.weight, 4) for f in found] == [round(9 / 14, 4), round(5 / 14, 4)]
    for f in found:
        rows = list(f.rows)
        assert f.rows[0] == f.medoid
        centrality = (x[rows] @ x[rows].T).sum(axis=1)
        assert f.medoid == rows[int(np.argmax(centrality))]
        np.testing.assert_allclose(
            f.vector, normalize((importance[rows] @ x[rows])[None])[0], atol=1e-6
        )
    medoids = pin_interests(x, importance, max_interests=2, merge_cost=0.65, vector="medoid")
    assert [f.vector.tolist() for f in medoids] == [x[f.medoid].tolist() for f in found]
    with pytest.raises(ValueError, match="max_interests must be >= 1"):
        pin_interests(x, importance, max_interests=0, merge_cost=0.65, vector="mean")


def test_interest_config_is_validated() -> None:
    with pytest.raises(ValueError, match="pin_interests must be in"):
        InterestConfig(max_interests=2, pin_interests=3)
    with pytest.raises(ValueError, match="min_share must be in"):
        InterestConfig(min_share=1.5)
