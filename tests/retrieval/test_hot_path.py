"""What the per-call cost work changed on the Retrieve path keeps its meaning: search parameters
cached per view are keyed by everything a call varies (the point, which the recall controller
moves, an explicit nprobe, k) and are never shared across views or selectors."""

from __future__ import annotations

import numpy as np

from indexer.artifact import load
from indexer.build import BuildResult
from retrieval.changelog import Change, apply_change
from retrieval.controller import SearchPoint
from retrieval.eligibility import RequestFilter
from retrieval.searcher import Searcher


def test_search_parameters_are_made_once_per_view_and_point(built_index: BuildResult) -> None:
    searcher = Searcher(load(built_index.version_dir))
    rng = np.random.default_rng(1)
    xq = rng.standard_normal((4, searcher.dimension)).astype(np.float32)
    first = searcher.view
    before = [searcher.search(q, 10) for q in xq]
    assert set(first.params) == {(searcher.default_nprobe, searcher.k_factor, 10)}
    cached = first.params[(searcher.default_nprobe, searcher.k_factor, 10)]
    again = [searcher.search(q, 10) for q in xq]
    assert first.params[(searcher.default_nprobe, searcher.k_factor, 10)] is cached
    for a, b in zip(before, again, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
    searcher.search(xq[0], 10, nprobe=3)
    searcher.search(xq[0], 10, 0, RequestFilter(country="US"))  # its own selector: not cached
    assert set(first.params) == {
        (searcher.default_nprobe, searcher.k_factor, 10),
        (3, searcher.k_factor, 10),
    }
    # The recall controller moves the default point: calls then search with the new point's
    # parameters, made once, and return what that point finds.
    moved = SearchPoint(searcher.default_nprobe + 1, searcher.k_factor + 1)
    searcher.set_point(moved)
    at_moved = searcher.search(xq[0], 10)
    assert (at_moved.nprobe, at_moved.k_factor) == moved
    assert (moved.nprobe, moved.k_factor, 10) in first.params
    searcher.search(xq[0], 25)  # another k: its own parameters (the re-ranking depth is k-based)
    assert (moved.nprobe, moved.k_factor, 25) in first.params
    searcher.set_point(searcher.build_point)
    # An admin change makes a new view (a new selector): it gets its own parameters, and a
    # paused ad is never returned through them.
    top = searcher.search(xq[0], 10).ids[0]
    ad_id = searcher.artifact.ads[int(top)].ad_id
    pause = Change(
        seq=1, ts=searcher.artifact.manifest.catalog.snapshot_at, op="pause", ad_ids=(ad_id,)
    )
    searcher.apply(lambda overlay: apply_change(pause, overlay))
    assert searcher.view is not first and not searcher.view.params
    assert top not in searcher.search(xq[0], 10).ids
    assert searcher.view.params[(searcher.default_nprobe, searcher.k_factor, 10)] is not cached
