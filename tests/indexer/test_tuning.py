from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer import artifact, tuning
from indexer.advice import advice, below_target_message
from indexer.ann import exact_search, recall_at_k
from indexer.ann import recall_interval as ann_interval
from indexer.build import BuildConfig, build
from indexer.catalog import write_catalog_jsonl
from indexer.manifest import (
    BuildInfo,
    CatalogInfo,
    Counts,
    IndexSpec,
    Manifest,
    ModelInfo,
    OperatingPoint,
    SearchDefaults,
)
from indexer.probe import rerank_probes
from indexer.queries import QuerySet, catalog_queries, file_queries
from indexer.report import describe
from indexer.tuning import (
    Tuning,
    TuningConfig,
    _row_done,
    allowed_best,
    choose,
    gated,
    k_factor_grid,
    measure,
    nprobe_grid,
    pareto_frontier,
    row_order,
    tune,
)
from retrieval.searcher import Searcher
from support import clustered_vectors, make_records


def pt(nprobe: int, k_factor: int, recall: float, p50_ms: float) -> OperatingPoint:
    return OperatingPoint(nprobe, k_factor, recall, p50_ms, p50_ms * 2)


# A synthetic curve: k_factor 1 plateaus at 0.80; k_factor 4 reaches 0.95 at nprobe 16.
CURVE = [
    pt(4, 1, 0.70, 0.10),
    pt(8, 1, 0.79, 0.12),
    pt(16, 1, 0.80, 0.20),  # dominated by (8, 4)
    pt(4, 4, 0.75, 0.11),
    pt(8, 4, 0.90, 0.15),
    pt(16, 4, 0.95, 0.22),
    pt(32, 4, 0.97, 0.40),
    pt(32, 8, 0.96, 0.50),  # dominated by (32, 4)
]


def test_frontier_keeps_points_nothing_beats_on_both_recall_and_latency() -> None:
    marked = {(p.nprobe, p.k_factor): p.frontier for p in pareto_frontier(CURVE)}
    assert not marked[(16, 1)] and not marked[(32, 8)]
    assert all(marked[key] for key in [(4, 1), (8, 1), (4, 4), (8, 4), (16, 4), (32, 4)])


def test_choice_is_the_cheapest_point_reaching_the_target() -> None:
    points = pareto_frontier(CURVE)
    assert choose(points, 0.95) == next(p for p in points if (p.nprobe, p.k_factor) == (16, 4))
    assert choose(points, 0.965) is not None and choose(points, 0.965).nprobe == 32  # type: ignore[union-attr]
    assert choose(points, 0.99) is None
    # Explicit values restrict the choice: only nprobe 32 / only k_factor 8.
    assert choose(points, 0.95, nprobe=32) == next(
        p for p in points if (p.nprobe, p.k_factor) == (32, 4)
    )
    assert choose(points, 0.95, k_factor=8).k_factor == 8  # type: ignore[union-attr]
    assert choose(points, 0.95, nprobe=8) is None


def test_rows_stop_where_more_lists_cannot_pay_off() -> None:
    cfg = TuningConfig(target_recall=0.95)
    first = [pt(1, 4, 0.20, 0.1), pt(2, 4, 0.30, 0.1), pt(4, 4, 0.45, 0.1)]
    assert not _row_done(first, [], cfg), "gains still growing"
    assert _row_done([*first, pt(8, 4, 0.96, 0.3)], [], cfg), "reached the target"
    assert _row_done([*first, pt(8, 4, 0.451, 0.2)], [], cfg), "plateau"
    earlier = [*first, pt(8, 4, 0.96, 0.3)]
    # A later row far below the target but with growing gains goes on ...
    assert not _row_done([pt(1, 1, 0.20, 0.05), pt(2, 1, 0.25, 0.05)], earlier, cfg)
    # ... and stops once its gains shrink too much to ever get there, or it is too slow.
    shrinking = [pt(1, 1, 0.20, 0.05), pt(2, 1, 0.40, 0.05), pt(4, 1, 0.50, 0.06)]
    assert _row_done(shrinking, earlier, cfg)
    assert not _row_done(shrinking, [], cfg), "the first row runs to its plateau"
    assert _row_done([pt(1, 8, 0.2, 0.1), pt(2, 8, 0.4, 0.37)], earlier, cfg), "1.2x slower"
    # An explicit nprobe is always measured.
    fixed = TuningConfig(target_recall=0.95, nprobe=8)
    assert not _row_done([pt(1, 4, 0.96, 0.1)], [], fixed)


def test_grids() -> None:
    assert nprobe_grid(16) == [1, 2, 3, 4, 6, 8, 12, 16]
    assert nprobe_grid(48, fixed=10) == [1, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32, 48]
    cfg = TuningConfig(k_factors=(1, 2, 4, 8), min_rerank=64)
    assert k_factor_grid(True, cfg, 100) == [1, 2, 4, 8]
    # At k=10 the min_rerank floor makes k_factor 1, 2 and 4 all re-rank 64 candidates.
    assert k_factor_grid(True, cfg, 10) == [1, 8]
    assert k_factor_grid(False, cfg, 100) == [1]


def test_an_explicit_k_factor_is_measured_first() -> None:
    assert row_order([1, 2, 4, 8]) == [4, 8, 2, 1]
    assert row_order([1, 2, 4, 8, 32], explicit=32) == [32, 8, 4, 2, 1]


def test_a_spent_budget_still_publishes_the_explicit_k_factor() -> None:
    # At 1M a build given k_factor 32 ran out of budget in the default k_factor 4 row and
    # published nprobe 2; the explicit row now comes first, and at least one point is measured.
    xb = clustered_vectors(2000)
    index = faiss.index_factory(xb.shape[1], "IVF16,PQ16x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add(xb)
    cfg = TuningConfig(target_recall=0.999, recall_k=20, k_factor=8, time_budget_s=1e-9)
    t = tune(index, xb, catalog_queries(xb, 50, seed=2), 16, cfg)
    assert t.truncated and len(t.points) == 1
    assert allowed_best(t, cfg).k_factor == 8


def test_recall_matches_the_set_definition() -> None:
    rng = np.random.default_rng(3)
    found = np.array([rng.choice(60, 10, replace=False) for _ in range(40)])
    found[:, -3:] = -1  # FAISS pads with -1
    truth = np.array([rng.choice(60, 10, replace=False) for _ in range(40)])
    by_sets = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist(), strict=True))
    assert recall_at_k(found, truth) == pytest.approx(by_sets / truth.size)


def test_default_queries_are_held_out_and_deterministic() -> None:
    xb = clustered_vectors(3000)
    a = catalog_queries(xb, 200, seed=1)
    b = catalog_queries(xb, 200, seed=1)
    np.testing.assert_array_equal(a.xq, b.xq)
    assert a.xq.shape == (200, xb.shape[1]) and a.xq.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a.xq, axis=1), 1.0, atol=1e-5)
    nearest = (a.xq @ xb.T).max(axis=1)
    assert nearest.max() < 0.99, "no query is a copy of an indexed vector"
    assert a.source == "catalog-sample" and "200" in a.description


def test_query_file_is_checked_and_sampled(tmp_path: Path) -> None:
    path = tmp_path / "users.npy"
    np.save(path, clustered_vectors(50, 16))
    with pytest.raises(ValueError, match=r"shape \(nq, 32\)"):
        file_queries(path, 32, max_queries=10, seed=0)
    qs = file_queries(path, 16, max_queries=10, seed=0)
    assert qs.xq.shape == (10, 16) and qs.source == "file" and qs.path == str(path)
    bad = clustered_vectors(5, 16)
    bad[3] = 0.0
    np.save(path, bad)
    with pytest.raises(ValueError, match="row 3"):
        file_queries(path, 16, max_queries=10, seed=0)


def test_tuning_a_real_index_reaches_the_target_on_its_frontier() -> None:
    xb = clustered_vectors(3000)
    index = faiss.index_factory(xb.shape[1], "IVF16,PQ16x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add(xb)
    queries = catalog_queries(xb, 100, seed=2)
    t = tune(index, xb, queries, 16, TuningConfig(target_recall=0.9, recall_k=50))
    assert t.reached and t.chosen is not None
    assert t.chosen.recall >= 0.9 and t.chosen.frontier
    assert t.best.recall >= t.chosen.recall
    # Nothing on the curve reaching the target (the lower end of its interval) is cheaper.
    assert all(p.p50_ms >= t.chosen.p50_ms for p in t.points if gated(p) >= 0.9)
    # Every k_factor was swept from nprobe 1, and deeper re-ranking never loses recall.
    rows = {kf: [p for p in t.points if p.k_factor == kf] for kf in (1, 2, 4, 8)}
    assert all(row and row[0].nprobe == 1 for row in rows.values())
    assert max(p.recall for p in rows[8]) >= max(p.recall for p in rows[1])


def test_the_server_finds_what_the_tuning_measured(tmp_path: Path) -> None:
    """Build-time recall is the searcher's recall: same parameters, same min_rerank rule."""
    records = make_records(3000, paused_every=0)
    xb = clustered_vectors(len(records))
    path = tmp_path / "ads.jsonl"
    write_catalog_jsonl(records, path, embeddings=xb)
    np.save(tmp_path / "q.npy", catalog_queries(xb, 120, seed=9).xq)
    config = BuildConfig(
        catalog=path,
        out=tmp_path / "idx",
        index_factory="IVF32,PQ16x4fs,RFlat",
        threads=1,
        recall_k=10,
        target_recall=0.9,
        queries=tmp_path / "q.npy",
    )
    m = build(config).manifest
    quality = m.quality
    assert quality is not None
    assert quality.queries.source == "file" and quality.queries.nq == 120
    assert (m.search.nprobe, m.search.k_factor) == (quality.chosen.nprobe, quality.chosen.k_factor)
    searcher = Searcher(artifact.load(tmp_path / "idx"))
    xq = np.load(tmp_path / "q.npy")
    found = [searcher.search(q, 10).ids for q in xq]
    served = recall_at_k(found, exact_search(xb, xq, 10)[1])
    assert served == pytest.approx(quality.chosen.recall, abs=0.005)


def test_describe_shows_the_curve_and_the_default() -> None:
    points = pareto_frontier(CURVE)
    chosen = choose(points, 0.95)
    assert chosen is not None
    tuning = Tuning(
        target_recall=0.95,
        recall_k=100,
        queries=QuerySet(np.zeros((3, 2)), "catalog-sample", "3 queries"),
        points=tuple(points),
        chosen=chosen,
        truncated=False,
        seconds=1.0,
    )
    manifest = Manifest(
        created_at="2026-12-01T00:00:00+00:00",
        dimension=32,
        model=ModelInfo("m", 32, "catalog embeddings"),
        index=IndexSpec("IVF32,PQ8x4fs,RFlat", 32, 1000, 1, memory_bytes_estimate=2**20),
        search=SearchDefaults(16, 4, 64),
        counts=Counts(ads=10, active=9, paused=1, rejected=0),
        catalog=CatalogInfo("ads.jsonl", "", datetime(2026, 12, 1, tzinfo=UTC)),
        build=BuildInfo({}, 1, "host", {}),
        quality=tuning.to_quality(),
        version="v1",
    )
    text = describe(manifest)
    assert "recall@100 target 0.95: reached" in text and "~1.0 MB RAM" in text
    row = next(line for line in text.splitlines() if line.endswith("<- default"))
    assert row.split()[:3] == ["4", "16", "0.9500"]
    assert sum(line.rstrip().endswith("*") for line in text.splitlines()) == 5
    assert "not measured" in describe(replace(manifest, quality=None))


# --- Intervals, deep re-ranking, the probe and its advice ---------------------------------------


def coarse_index(factory: str = "IVF8,PQ4x4fs,RFlat") -> tuple[faiss.Index, np.ndarray]:
    """An index whose 4-byte codes rank candidates so poorly that only deep re-ranking helps."""
    xb = clustered_vectors(3000)
    index = faiss.index_factory(xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add(xb)
    return index, xb


def held_out(xb: np.ndarray, nq: int = 200) -> QuerySet:
    """Catalog-sample queries without the recipe's calibration margin (as a query file)."""
    return replace(catalog_queries(xb, nq, seed=2), margin=0.0)


def test_recall_interval_brackets_the_mean_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(0)
    per_query = np.clip(rng.normal(0.95, 0.05, 2000), 0, 1)
    low, high = ann_interval(per_query[:200])
    assert low < per_query[:200].mean() < high <= 1.0
    low_all, high_all = ann_interval(per_query)
    assert high_all - low_all < (high - low) * 0.5  # ~1/sqrt(10) as wide
    assert ann_interval(per_query[:200]) == (low, high), "seeded: the same interval"
    assert ann_interval(np.ones(50)) == (1.0, 1.0)
    assert ann_interval(np.array([])) == (1.0, 1.0)


def test_the_gate_reads_the_interval_lower_end() -> None:
    tight_but_uncertain = OperatingPoint(8, 4, 0.955, 0.1, 0.2, recall_low=0.94, recall_high=0.97)
    sure = OperatingPoint(16, 4, 0.97, 0.2, 0.4, recall_low=0.955, recall_high=0.985)
    assert choose([tight_but_uncertain, sure], 0.95) == sure
    assert choose([tight_but_uncertain], 0.95) is None


def test_measured_points_carry_an_interval_widened_by_the_queries_margin() -> None:
    index, xb = coarse_index()
    qs = catalog_queries(xb, 200, seed=2)
    truth = exact_search(xb, qs.xq, 10)[1]
    p = measure(index, qs.xq, truth, nprobe=8, k_factor=32, min_rerank=64, margin=qs.margin)
    assert qs.margin > 0 and p.recall_low is not None and p.recall_high is not None
    assert p.recall_low <= p.recall - qs.margin <= p.recall + qs.margin <= p.recall_high + 1e-9


def test_slow_points_are_timed_on_fewer_calls_but_recall_counts_every_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index, xb = coarse_index()
    qs = held_out(xb, 300)
    truth = exact_search(xb, qs.xq, 10)[1]
    full = measure(index, qs.xq, truth, nprobe=8, k_factor=8, min_rerank=64)
    monkeypatch.setattr(tuning, "POINT_TIMING_S", 0.0)  # every point "slow": MIN_TIMED calls
    short = measure(index, qs.xq, truth, nprobe=8, k_factor=8, min_rerank=64)
    assert short.recall == full.recall and short.p50_ms > 0


def test_a_short_first_row_sends_the_sweep_deeper_first() -> None:
    grid = [1, 2, 4, 8, 16, 32]
    assert row_order(grid) == [4, 8, 2, 1, 16, 32]
    assert row_order(grid, first_reached=False) == [4, 8, 16, 32, 2, 1]
    assert row_order(grid, explicit=16, first_reached=False) == [16, 32, 8, 4, 2, 1]


def test_only_deep_re_ranking_reaches_the_target_and_is_published() -> None:
    index, xb = coarse_index()
    t = tune(index, xb, held_out(xb), 8, TuningConfig(target_recall=0.9, recall_k=10))
    assert t.chosen is not None and t.chosen.k_factor >= 16, t.chosen
    assert max(p.recall for p in t.points if p.k_factor <= 8) < 0.9
    assert t.chosen.recall_low is not None and t.chosen.recall_low >= 0.9


def test_the_probe_measures_what_the_index_returns() -> None:
    index, xb = coarse_index()
    qs = held_out(xb)
    truth = exact_search(xb, qs.xq, 10)[1]
    probes = rerank_probes(index, xb, qs.xq, truth, 4)
    assert [p.k_factor for p in probes] == [1, 2, 4, 8, 16, 32, 64]
    assert all(0 < p.recall <= p.coverage <= 1 for p in probes)
    # The same recall as a timed search at that depth, ties aside: 4-byte codes often give
    # candidates equal PQ scores, and which of them makes a depth's cut varies by search.
    for p in probes[2:]:
        timed = measure(index, qs.xq, truth, nprobe=4, k_factor=p.k_factor, min_rerank=0)
        assert timed.recall == pytest.approx(p.recall, abs=0.01)


def test_a_sweep_that_stops_short_of_the_depth_is_rescued_by_the_probe() -> None:
    index, xb = coarse_index()
    cfg = TuningConfig(target_recall=0.95, recall_k=10, k_factors=(1, 2, 4, 8))
    t = tune(index, xb, held_out(xb), 8, cfg)
    assert t.probes, "the sweep fell short: the probe ran"
    assert t.chosen is not None and t.chosen.k_factor >= 16
    assert (t.chosen.nprobe, t.chosen.k_factor) in {(p.nprobe, p.k_factor) for p in t.points}


def test_the_rescue_skips_a_depth_already_measured_short_of_the_gate() -> None:
    # realtext (docs/index-parameters.md 3.7.1): the probe's mean at k_factor 4 passed target +
    # margin, but that very point was the sweep's best and its interval failed the gate; the
    # rescue stopped there instead of measuring the next depth, and the build was refused.
    index, xb = coarse_index()
    qs = held_out(xb)
    truth = exact_search(xb, qs.xq, 10)[1]
    probes = rerank_probes(index, xb, qs.xq, truth, 8)
    margin = 0.02
    at_4 = next(p for p in probes if p.k_factor == 4)
    target = round(at_4.recall - margin, 4)  # the probe says depth 4 reaches it
    short = measure(index, qs.xq, truth, nprobe=8, k_factor=4, min_rerank=0, margin=margin)
    assert gated(short) < target, "measured, depth 4 fails the gate"
    cfg = TuningConfig(target_recall=target, recall_k=10, min_rerank=0)
    rescued = tuning._rescue(index, qs.xq, truth, probes, [short], 8, cfg, margin)
    assert rescued and all(p.k_factor > 4 for p in rescued), rescued
    assert gated(rescued[0]) >= target


def test_refusal_advice_says_what_was_measured() -> None:
    index, xb = coarse_index("IVF8,PQ2x4fs,RFlat")
    cfg = TuningConfig(target_recall=0.999, recall_k=10)
    t = tune(index, xb, held_out(xb), 8, cfg)
    assert not t.reached and t.probes
    message = below_target_message(t, "IVF8,PQ2x4fs,RFlat", 8, xb.shape[1], cfg)
    items = message.split("To reach it, try: ")[1].split("; ")
    assert any("deeper re-ranking" in i and "(measured)" in i for i in items), items
    assert any(i.startswith("more PQ bytes") and "(not measured)" in i for i in items), items
    assert all("measured" in i for i in items[:-1]), items
    # an explicit depth that keeps the probe's point out is named
    explicit = TuningConfig(target_recall=0.9, recall_k=10, k_factor=4)
    t = tune(index, xb, held_out(xb), 8, explicit)
    text = "; ".join(advice(t, "IVF8,PQ2x4fs,RFlat", 8, xb.shape[1], explicit))
    assert "latency not measured): --k-factor" in text, text


def test_refusal_advice_never_names_a_depth_that_failed_the_gate_when_timed() -> None:
    # realtext (docs/index-parameters.md 3.7.1): the advice said "--k-factor 4" because the
    # probe's mean passed, though the sweep had timed that very point and it failed the gate.
    index, xb = coarse_index("IVF8,PQ2x4fs,RFlat")
    cfg = TuningConfig(target_recall=0.999, recall_k=10)
    t = tune(index, xb, held_out(xb), 8, cfg)
    assert not t.reached and t.probes
    probes = sorted(t.probes, key=lambda p: p.k_factor)
    # A depth that probes above every shallower one and below some deeper one.
    i = next(i for i in range(1, len(probes) - 1)
             if max(p.recall for p in probes[:i]) < probes[i].recall - 2e-4
             and max(p.recall for p in probes[i + 1:]) > probes[i].recall)  # fmt: skip
    first, later = probes[i], [p for p in probes[i + 1 :] if p.recall > probes[i].recall]
    target = round(first.recall - t.queries.margin - 1e-4, 4)  # the probe says `first` reaches it
    failed = OperatingPoint(first.nprobe, first.k_factor, first.recall, 1.0, 2.0,
                            recall_low=target - 0.02, recall_high=1.0)  # fmt: skip
    refused = replace(t, target_recall=target, points=(*t.points, failed), chosen=None)
    items = advice(refused, "IVF8,PQ2x4fs,RFlat", 8, xb.shape[1], cfg)
    assert not any(f"--k-factor {first.k_factor}" in i for i in items), items
    assert any(f"k_factor {first.k_factor}" in i and "failed the gate" in i for i in items), items
    assert any(f"--k-factor {later[0].k_factor}" in i for i in items), items
