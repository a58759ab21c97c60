"""Sharded versions: which shard owns an ad, and building one version as N shard indexes.

**Assignment.** Ad ``ad_id`` belongs to shard :func:`shard_of`: the first 8 bytes of
sha256(ad_id), read big-endian, modulo the shard count. It is the same in every process, on
every machine and in every Python (never ``hash()``, which is salted per process), so the
build, the leaves (which refuse upserts of ads they do not own) and the root (which routes
admin calls) always agree. The version's manifest records the rule (``shards.assignment``).

**Build** (``adindex build --shards N``). The index is trained once, on the same seeded
sample of the whole catalog an unsharded build uses; each shard gets a copy of the trained,
empty index (``faiss.clone_index``) and its own ads are added to it. Every shard therefore
shares the coarse quantizer and the PQ codebooks: scores are comparable across shards, and a
query probes, in every shard, the lists it would probe in one index over the whole catalog.

**Recall gate.** Measured on the version *as served*, not per shard: a FAISS ``IndexShards``
over the shard indexes searches each with the same (nprobe, k_factor) and merges by score,
which is what ``adindex root`` does with its leaves' answers. The question the gate answers
is how much of the whole catalog's exact top-k a caller gets back; a shard's recall against
its own ads' top-k does not answer it. As served, recall is at least the unsharded index's at
the same setting (up to ties): the probed lists are the same, and each shard re-ranks
``k * k_factor`` candidates of its own where one index re-ranks that many in all. Latency in
the sweep is the sum over the shards on one thread (CPU per call), not the fan-out's wall
time. The build holds the catalog's vectors twice (once in shard order).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from indexer import artifact
from indexer.manifest import Counts, Manifest, ShardEntry, ShardsInfo

if TYPE_CHECKING:  # the root routes with shard_of and never loads FAISS or the build
    from indexer.build import BuildConfig, BuildResult, Vectors
    from indexer.params import IndexParams
    from indexer.queries import QuerySet
    from indexer.records import AdRecord

logger = logging.getLogger(__name__)

ASSIGNMENT = "sha256(utf-8 ad_id), first 8 bytes big-endian, modulo count"


def shard_of(ad_id: str, count: int) -> int:
    """The shard (in ``[0, count)``) that owns ``ad_id``; see the module docstring."""
    digest = hashlib.sha256(ad_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def assign(ad_ids: Sequence[str], count: int) -> list[np.ndarray]:
    """Rows of each shard, in catalog order: ``out[s]`` is an int64 array of row numbers."""
    owner = np.fromiter((shard_of(a, count) for a in ad_ids), dtype=np.int64, count=len(ad_ids))
    return [np.flatnonzero(owner == s) for s in range(count)]


def _counts(records: Sequence[AdRecord]) -> Counts:
    paused = sum(r.status == "paused" for r in records)
    return Counts(ads=len(records), active=len(records) - paused, paused=paused, rejected=0)


def build_shards(
    config: BuildConfig,
    vectors: Vectors,
    params: IndexParams,
    queries: QuerySet,
    timings: dict[str, float],
    *,
    nodes: int = 1,
) -> BuildResult:
    """Train once, fill ``config.shards`` copies, gate recall as served, publish one version.

    Args:
        config: the build (``config.shards`` >= 1).
        vectors: the validated records and their (n, d) float32 unit vectors (row i = record i).
        params, queries: as the unsharded build chose them.
        timings: per-stage seconds, extended here.
        nodes: machines the vectors were made on (the manifest records it).

    Raises:
        BuildError: a shard would hold no ad, or FAISS cannot build the factory string.
        RecallBelowTarget: as for an unsharded build; nothing is published.
    """
    import faiss

    from indexer.build import (
        BuildError,
        BuildResult,
        _manifest,
        recall_gate,
        timeit,
        train_empty,
        tuning_config,
    )
    from indexer.tuning import tune

    catalog, xb = vectors.catalog, vectors.xb
    count = config.shards or 1
    rows = assign([r.ad_id for r in catalog.records], count)
    empty = [s for s, r in enumerate(rows) if len(r) == 0]
    if empty:
        raise BuildError(f"shard {empty[0]} of {count} gets no ad of {len(xb)}: use fewer shards")
    with timeit("Training", timings):
        try:
            trained = train_empty(xb, params, seed=config.seed)
        except RuntimeError as exc:  # FAISS C++ errors arrive as RuntimeError
            raise BuildError(f"FAISS could not build {params.index_factory!r}: {exc}") from exc
    xb_served = xb[np.concatenate(rows)]  # shard order: IndexShards numbers ids this way
    offsets = np.cumsum([0, *(len(r) for r in rows)])
    with timeit(f"Adding to {count} shards", timings):
        indexes = [faiss.clone_index(trained) for _ in range(count)]
        for s, index in enumerate(indexes):
            index.add(xb_served[offsets[s] : offsets[s + 1]])
    # Not threaded (shards searched in turn: CPU per call); ids numbered in shard order.
    served = faiss.IndexShards(xb.shape[1], False, True)  # type: ignore[call-arg]
    for index in indexes:
        served.add_shard(index)
    with timeit(f"Evaluating recall@{config.recall_k} as served (fan-out to {count})", timings):
        tuning = tune(served, xb_served, queries, params.nlist, tuning_config(config))
    point = recall_gate(tuning, params, xb.shape[1], config)
    version = artifact.new_version_name()
    with timeit("Publishing", timings), artifact.staging_dir(config.out, version) as staged:
        base = _manifest(vectors, params, tuning, point, timings, config, nodes)
        entries = []
        for s, index in enumerate(indexes):
            records = [catalog.records[i] for i in rows[s].tolist()]
            sub = artifact.shard_dir(staged, s)
            sub.mkdir()
            faiss.write_index(index, str(sub / artifact.INDEX_FILE))
            np.save(sub / artifact.EMBEDDINGS_FILE, xb_served[offsets[s] : offsets[s + 1]])
            artifact.write_ads(
                [artifact.AdMeta.from_record(r) for r in records], sub / artifact.ADS_FILE
            )
            own = ShardsInfo(count=count, assignment=ASSIGNMENT, index=s)
            shard_manifest = replace(base, counts=_counts(records), shards=own)
            artifact.seal(sub, version=version, manifest=shard_manifest)
            entries.append(ShardEntry(name=sub.name, counts=shard_manifest.counts))
        if catalog.rejects:
            from indexer.catalog import write_rejects

            write_rejects(catalog.rejects, staged / artifact.REJECTS_FILE)
        shards = ShardsInfo(count=count, assignment=ASSIGNMENT, entries=tuple(entries))
        manifest: Manifest = artifact.publish(
            config.out, staged, version=version, manifest=replace(base, shards=shards)
        )
    logger.info("Shards: %s ads", ", ".join(str(e.counts.ads) for e in entries))
    return BuildResult(version_dir=config.out / version, manifest=manifest)
