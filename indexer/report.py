"""Readable reports of a manifest: index, search defaults and the measured recall curve."""

from __future__ import annotations

from collections.abc import Sequence

from indexer.manifest import Manifest, OperatingPoint


def describe(manifest: Manifest) -> str:
    """A manifest's index, search defaults and recall curve as a readable text table."""
    index, search, counts, model = manifest.index, manifest.search, manifest.counts, manifest.model
    memory = index.memory_bytes_estimate
    text = (
        "precomputed embeddings"
        if model.source != "text"
        else (f"text {'+'.join(model.text_fields)} embedded by {model.embedder or model.name}")
    )
    lines = [
        f"version   {manifest.version}  (built {manifest.created_at})",
        f"ads       {counts.ads} ({counts.paused} paused, {counts.rejected} rejected), "
        f"{manifest.dimension}-d, model {model.name} ({text})",
        f"index     {index.factory}  nlist {index.nlist}"
        + (f"  ~{memory / 2**20:.1f} MB RAM (estimate)" if memory else ""),
        f"search    nprobe {search.nprobe}, k_factor {search.k_factor}, "
        f"min_rerank {search.min_rerank}",
    ]
    if (pins := manifest.pins) is not None:
        how = "precomputed" if pins.source != "text" else f"text {'+'.join(pins.text_fields)}"
        lines.append(f"pins      {pins.count} ({pins.rejected} rejected), {how}, from {pins.path}")
    shards = manifest.shards
    if shards is not None and shards.index is not None:
        lines.append(
            f"shard     {shards.index} of {shards.count} (search and quality: the version's)"
        )
    elif shards is not None:
        sizes = ", ".join(f"{e.name} {e.counts.ads}" for e in shards.entries)
        lines.append(f"shards    {shards.count} ({sizes}); recall measured as served, merged")
    quality = manifest.quality
    if quality is None:
        return "\n".join([*lines, "quality   not measured"])
    chosen = quality.chosen
    verdict = "BELOW TARGET (published with --allow-below-target)"
    if not quality.below_target:
        verdict = "reached"
    interval = ""
    if chosen.recall_low is not None and chosen.recall_high is not None:
        interval = f" ({chosen.recall_low:.3f}-{chosen.recall_high:.3f})"
    lines += [
        f"quality   recall@{quality.recall_k} target {quality.target_recall}: {verdict}; "
        f"default nprobe {chosen.nprobe}, k_factor {chosen.k_factor}: recall {chosen.recall:.3f}"
        f"{interval}, {chosen.p50_ms:.2f} ms p50, {chosen.p99_ms:.2f} ms p99",
        f"queries   {quality.queries.description}",
        *([f"interval  {quality.interval}"] if quality.interval else []),
        f"measured  {quality.latency}; {quality.seconds} s"
        + (" (sweep cut short by its time budget)" if quality.truncated else ""),
        "",
        *format_curve(quality.curve, chosen, quality.recall_k),
    ]
    return "\n".join(lines)


def format_curve(
    points: Sequence[OperatingPoint], chosen: OperatingPoint | None, recall_k: int
) -> list[str]:
    """One line per point: k_factor, nprobe, recall, p50, p99; * = frontier, <- = default."""
    head = f"{'k_factor':>8} {'nprobe':>7} {f'recall@{recall_k}':>11} {'p50 ms':>8} {'p99 ms':>8}"
    out = [f"{head}  frontier"]
    for p in points:
        mark = "   *" if p.frontier else "    "
        if chosen is not None and (p.nprobe, p.k_factor) == (chosen.nprobe, chosen.k_factor):
            mark += "   <- default"
        line = f"{p.k_factor:>8} {p.nprobe:>7} {p.recall:>11.4f} {p.p50_ms:>8.3f} {p.p99_ms:>8.3f}"
        out.append(line + mark)
    return out
