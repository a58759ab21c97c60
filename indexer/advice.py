"""What a build that misses its recall target should change, read off its measured curve.

Each item says whether it was measured on this index (the sweep's points, the re-ranking probe
of ``indexer.probe``) or not (another index, a bigger budget): advice a measurement supports
comes first.
"""

from __future__ import annotations

import re

from indexer.tuning import Tuning, TuningConfig, choose


def advice(tuning: Tuning, factory: str, nlist: int, d: int, config: TuningConfig) -> list[str]:
    """What to change so that this index reaches its target, read off its measured curve and
    re-ranking probe. Each item says whether it was measured on this index or not."""
    out = []
    free = choose(tuning.points, tuning.target_recall)
    if free is not None:  # explicit --nprobe / --k-factor kept it below target
        out.append(
            f"nprobe {free.nprobe} with k_factor {free.k_factor} reaches {free.recall:.3f} "
            "(measured): drop or raise --nprobe / --k-factor"
        )
    best = tuning.best
    if tuning.truncated:
        out.append(
            f"the sweep ran out of its {config.time_budget_s:.0f} s budget before measuring "
            "every setting: a larger --eval-budget-s (not measured)"
        )
    if config.nprobe is not None and config.nprobe < nlist and free is None:
        out.append(f"more nprobe headroom than --nprobe {config.nprobe}")
    out += _probe_advice(tuning, nlist)
    if "RFlat" not in factory and "Refine(" not in factory:
        out.append(
            f"a re-ranking stage: '{factory},RFlat' (+{4 * d} B/vector), "
            f"',Refine(SQfp16)' (+{2 * d} B) or ',Refine(SQ8)' (+{d} B) (not measured)"
        )
    else:
        deepest = max(p.k_factor for p in tuning.points)
        if best.k_factor == deepest and not tuning.probes:
            out.append(f"deeper re-ranking: --k-factor {2 * deepest} (not measured)")
        if "Refine(SQ8)" in factory:
            out.append("a more exact re-ranking stage: Refine(SQfp16) or RFlat (not measured)")
    bigger = _more_pq_bytes(factory, d)
    if bigger is not None:
        out.append(f"more PQ bytes: {bigger!r} (not measured)")
    out.append(f"or a lower --target-recall (measured best: {best.recall:.3f})")
    return out


def _probe_advice(tuning: Tuning, nlist: int) -> list[str]:
    """The re-ranking probe's findings: how deep re-ranking must go, whether lists limit."""
    if not tuning.probes:
        return []
    out = []
    deepest = tuning.probes[-1]
    nprobe = deepest.nprobe
    wanted = tuning.target_recall + tuning.queries.margin
    reach = [p for p in tuning.probes if p.recall >= wanted]
    # A depth the sweep or the rescue timed at that nprobe failed the gate (no point passed):
    # a probed mean that passes is no advice to set it.
    timed = {(q.nprobe, q.k_factor): q for q in tuning.points}
    failed = [p for p in reach if (p.nprobe, p.k_factor) in timed]
    untried = [p for p in reach if (p.nprobe, p.k_factor) not in timed]
    for p in failed:
        q = timed[(p.nprobe, p.k_factor)]
        low = f", lower end {q.recall_low:.3f}" if q.recall_low is not None else ""
        out.append(
            f"k_factor {p.k_factor} at nprobe {nprobe} probes at {p.recall:.3f} but failed the "
            f"gate when timed ({q.recall:.3f}{low}; measured)"
        )
    if untried:
        p = untried[0]
        deeper = p.k_factor > max(q.k_factor for q in tuning.points)
        out.append(
            f"{'deeper re-ranking' if deeper else 're-ranking depth'}: k_factor {p.k_factor} "
            f"reaches {p.recall:.3f} at nprobe {nprobe} (recall measured, latency not "
            f"measured): --k-factor {p.k_factor}"
        )
    elif not reach:
        out.append(
            f"deeper re-ranking alone does not get there: k_factor {deepest.k_factor} gives "
            f"{deepest.recall:.3f} at nprobe {nprobe} (measured)"
        )
    if nprobe >= nlist:
        out.append(f"more lists cannot help: nprobe {nprobe} probes every list (measured)")
    elif deepest.coverage < wanted:
        out.append(
            f"more lists: nprobe {nprobe}'s lists hold {deepest.coverage:.3f} of the true "
            "neighbours (measured): a larger --nprobe or --eval-budget-s"
        )
    return out


def _more_pq_bytes(factory: str, d: int) -> str | None:
    match = re.search(r"PQ(\d+)", factory)
    if match is None:
        return None
    m = int(match.group(1)) * 2
    if d % m:
        return None
    return factory[: match.start(1)] + str(m) + factory[match.end(1) :]


def below_target_message(
    tuning: Tuning, factory: str, nlist: int, d: int, config: TuningConfig
) -> str:
    """Why a build is refused: the best recall reached, where, and what to change."""
    best = tuning.best
    return (
        f"recall@{tuning.recall_k} of {factory} does not reach the target "
        f"{tuning.target_recall}: best {best.recall:.3f} at nprobe {best.nprobe}, k_factor "
        f"{best.k_factor} ({best.p50_ms:.2f} ms p50), measured on "
        f"{tuning.queries.description}.\nTo reach it, try: "
        + "; ".join(advice(tuning, factory, nlist, d, config))
        + "."
    )
