"""benchmarks/interests.py at tiny sizes: synthetic topics (no model), real build and servers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.docs import REQUIRED
from benchmarks.interests import InterestsBenchConfig, User, esci_users, run_quality
from indexer.ann import exact_search, normalize
from indexer.build import BuildConfig, build
from indexer.catalog import write_catalog_jsonl
from indexer.records import AdRecord

N, D, TOPICS = 3000, 32, 30


def test_quality_rows_compare_the_average_with_several_interests(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    centres = normalize(rng.standard_normal((TOPICS, D)).astype(np.float32))
    xb = normalize(centres[rng.integers(0, TOPICS, N)] + 0.3 * rng.standard_normal((N, D)))
    ids = [f"ad-{i}" for i in range(N)]
    records = [
        AdRecord(ad_id=a, advertiser_id=f"adv-{i % 90}", campaign_id="c") for i, a in enumerate(ids)
    ]
    write_catalog_jsonl(records, tmp_path / "ads.jsonl", embeddings=xb)
    result = build(
        BuildConfig(catalog=tmp_path / "ads.jsonl", out=tmp_path / "index", index_factory="IVF32,Flat", nprobe=32, threads=1)
    )  # fmt: skip
    eligible = np.ones(N, dtype=bool)

    def users(k: int) -> list[User]:
        out = []
        for u in range(20):
            xq = centres[[u, (u + 7) % TOPICS]]
            truth = exact_search(xb, xq, k // 2)[1]
            out.append(
                User(xq, np.ones(2), normalize(xq.mean(axis=0, keepdims=True))[0], [set(t.tolist()) for t in truth], [])
            )  # fmt: skip
        return out

    cfg = InterestsBenchConfig(merge_costs=(0.65,), workdir=tmp_path)
    rows = run_quality(cfg, "toy", result.version_dir, xb, eligible, ids, users, (20,), None)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"averaged", "averaged-exact", "interests"}  # no pins: pin methods skipped
    assert by["interests"]["interest_recall"] >= 0.95  # IVF32,Flat at nprobe 32: exact
    assert by["averaged-exact"]["interest_recall"] < by["interests"]["interest_recall"]
    assert by["interests"]["worst_interest_recall"] > by["averaged"]["worst_interest_recall"]
    for r in rows:  # self-describing, as published to docs/results/
        assert set(REQUIRED) <= json.loads(json.dumps(r)).keys()
        assert (r["dataset"], r["nb"], r["d"], r["kind"]) == ("toy", N, D, "quality")
        assert r["threads"]["clients"] == 1 and r["command"] == cfg.command


def test_esci_users_have_disjoint_relevant_products() -> None:
    xq = normalize(np.random.default_rng(0).standard_normal((40, D)).astype(np.float32))
    qrels = [{i: 3, 100 + i % 5: 2, 200 + i: 1} for i in range(40)]
    users = esci_users(InterestsBenchConfig(esci_users=25), xq, qrels)
    assert [len(u.relevant) for u in users] == [2] * 25 + [3] * 25
    for u in users:
        assert sum(len(r) for r in u.relevant) == len(set().union(*u.relevant))
        assert all(r and all(p < 200 for p in r) for r in u.relevant)  # grade >= 2 only
        np.testing.assert_allclose(np.linalg.norm(u.averaged), 1.0, atol=1e-5)
