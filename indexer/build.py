"""Catalog -> embeddings -> trained FAISS index -> published artifact version."""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import faiss
import numpy as np

from indexer import artifact
from indexer.advice import below_target_message
from indexer.ann import normalize
from indexer.catalog import read_catalog, write_rejects
from indexer.embedding import Embedder, SentenceTransformerEmbedder, embedder_identity
from indexer.manifest import (
    DEFAULT_TEXT_SEPARATOR,
    BuildInfo,
    CatalogInfo,
    Counts,
    IndexSpec,
    Manifest,
    ModelInfo,
    OperatingPoint,
    PinsInfo,
    SearchDefaults,
)
from indexer.params import DEFAULT_MIN_RERANK, IndexParams, choose_params
from indexer.pins import PinFile, PinsError, embed_pins, read_pins, write_pins
from indexer.queries import QuerySet, catalog_queries, file_queries
from indexer.records import DEFAULT_TEXT_FIELDS, PIN_TEXT_FIELDS, Catalog
from indexer.tuning import Tuning, TuningConfig, allowed_best, tune

logger = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """The build cannot go on; the message says what to change. Nothing was published."""


class RecallBelowTarget(BuildError):
    """The index cannot reach the target recall at any measured setting; nothing was published.

    ``tuning`` holds the measured curve (the message names the best point and what to change).
    """

    def __init__(self, message: str, tuning: Tuning):
        super().__init__(message)
        self.tuning = tuning


@dataclass(frozen=True)
class BuildConfig:
    """One build: where the catalog is, where versions go, and how to index."""

    catalog: Path
    out: Path
    model: Path | None = None  # None: the installed all-MiniLM-L6-v2
    index_factory: str | None = None  # None: chosen from corpus size (indexer.params)
    nprobe: int | None = None
    k_factor: int | None = None
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    text_separator: str = DEFAULT_TEXT_SEPARATOR
    skip_invalid: bool = False
    # A pins file to embed with the ads' model into the version's pin table (indexer.pins).
    pins: Path | None = None
    pin_text_fields: tuple[str, ...] = PIN_TEXT_FIELDS
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 1234
    # Recall gate (indexer.tuning): a version is published only if some measured
    # (nprobe, k_factor) reaches recall@recall_k >= target_recall against exact search.
    target_recall: float = 0.95
    recall_k: int = 100
    max_memory_mb: float | None = None  # RAM budget for the index; None: no limit
    queries: Path | None = None  # held-out queries (.npy, (nq, d)); None: sampled from the catalog
    max_eval_queries: int = 500
    eval_budget_s: float = 40.0  # for the nprobe x k_factor sweep (exact search comes on top)
    allow_below_target: bool = False  # publish anyway, marked quality.below_target
    # When the catalog was exported from the source of truth. Admin changes (pause, upsert,
    # delete) acknowledged after this moment are replayed on top of the new version; None
    # takes the catalog file's modification time.
    snapshot_at: datetime | None = None
    # Split the version into this many shards by ad id (indexer.shards); None: one index.
    shards: int | None = None

    def __post_init__(self) -> None:
        if self.shards is not None and self.shards < 1:
            raise ValueError(f"shards must be >= 1; got {self.shards}")
        if self.shards is not None and self.pins is not None:
            # A root would have to resolve engaged pins into interests before fanning out.
            raise ValueError("--pins with --shards is not supported yet: build pins unsharded")
        if not self.text_fields:
            raise ValueError("text_fields must name at least one field")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1; got {self.threads}")
        if not 0.0 <= self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in [0, 1]; got {self.target_recall}")
        if self.recall_k < 1:
            raise ValueError(f"recall_k must be >= 1; got {self.recall_k}")
        if self.max_memory_mb is not None and self.max_memory_mb <= 0:
            raise ValueError(f"max_memory_mb must be > 0; got {self.max_memory_mb}")
        if self.max_eval_queries < 1 or self.eval_budget_s <= 0:
            raise ValueError(
                f"max_eval_queries must be >= 1 and eval_budget_s > 0; got "
                f"{self.max_eval_queries} and {self.eval_budget_s}"
            )


@dataclass(frozen=True)
class BuildResult:
    version_dir: Path
    manifest: Manifest


@contextmanager
def timeit(stage: str, timings: dict[str, float]) -> Iterator[None]:
    """Log and record how long a build stage took."""
    logger.info("%s ...", stage)
    t0 = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - t0, 3)
    logger.info("%s: %.2f s", stage, timings[stage])


def embed_catalog(
    catalog: Catalog,
    config: BuildConfig,
    embedder: Embedder | None,
) -> tuple[np.ndarray, ModelInfo]:
    """Vectors for every record: the catalog's own, or the model's embedding of its text.

    Returns:
        (xb, model): xb of shape (n, d), float32, unit rows; what the manifest records.
    """
    if catalog.embeddings is not None:
        xb = normalize(catalog.embeddings, inplace=True)  # the build owns the catalog's matrix
        if config.model is not None:
            embedder = embedder or SentenceTransformerEmbedder(config.model)
            if embedder.dimension != xb.shape[1]:
                raise BuildError(
                    f"{catalog.source}:{catalog.lines[0]}: embedding: dimension {xb.shape[1]} "
                    f"differs from the query model {embedder.model_name} ({embedder.dimension}-d)"
                )
        name = embedder.model_name if embedder is not None else "precomputed"
        return xb, ModelInfo(name, int(xb.shape[1]), "catalog embeddings")
    embedder = embedder or SentenceTransformerEmbedder(config.model)
    model = ModelInfo(
        embedder.model_name,
        embedder.dimension,
        "text",
        text_fields=config.text_fields,
        text_separator=config.text_separator,
        embedder=embedder_identity(embedder),
    )
    xb = embedder.encode([model.text_of(r) for r in catalog.records], progress=True)
    return xb, model


def train_empty(xb: np.ndarray, params: IndexParams, *, seed: int) -> faiss.Index:
    """Create the index from its factory string and train it on a seeded sample of xb."""
    n, d = xb.shape
    index = faiss.index_factory(d, params.index_factory, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=params.train_size, replace=False))
    index.train(xb[sample])
    return index


def train_index(xb: np.ndarray, params: IndexParams, *, seed: int) -> faiss.Index:
    """Create the index from its factory string, train it on a seeded sample, add everything."""
    index = train_empty(xb, params, seed=seed)
    index.add(xb)  # FAISS ids 0..n-1 follow catalog order: row i of ads.jsonl
    return index


def build(config: BuildConfig, *, embedder: Embedder | None = None) -> BuildResult:
    """Read, embed, index and atomically publish a new artifact version.

    Args:
        config: what to build.
        embedder: an already loaded embedder (tests, the demo); default loads ``config.model``.

    Raises:
        CatalogError: invalid records (and ``skip_invalid`` is off).
        RecallBelowTarget: no measured operating point reaches ``target_recall`` (and
            ``allow_below_target`` is off); nothing is written under ``config.out``.
        BuildError: anything else that stops the build; the previous version keeps serving.
    """
    timings: dict[str, float] = {}
    faiss.omp_set_num_threads(config.threads)
    with timeit("Reading catalog", timings):
        catalog = read_catalog(
            config.catalog, skip_invalid=config.skip_invalid, text_fields=config.text_fields
        )
    pin_file = None
    if config.pins is not None:
        with timeit("Reading pins", timings):
            pin_file = read_pins(
                config.pins, skip_invalid=config.skip_invalid, text_fields=config.pin_text_fields
            )
        text_model = catalog.embeddings is None or config.model is not None
        if pin_file.embeddings is None and embedder is None and text_model:
            embedder = SentenceTransformerEmbedder(config.model)  # one model: ads and pins
    with timeit(f"Embedding {len(catalog.records)} ads", timings):
        xb, model = embed_catalog(catalog, config, embedder)
    if pin_file is not None:
        with timeit(f"Embedding {len(pin_file.records)} pins", timings):
            pins = _embed_pins(pin_file, model, embedder, config)
    n, d = xb.shape
    params, queries = _plan(config, xb)
    logger.info(
        "Index %s (nlist=%d, nprobe=%d) over %d x %d",
        params.index_factory,
        params.nlist,
        params.nprobe,
        n,
        d,
    )
    if config.shards is not None:
        from indexer.shards import build_shards  # imports this module

        return build_shards(config, catalog, xb, model, params, queries, timings)
    with timeit("Training and adding", timings):
        try:
            index = train_index(xb, params, seed=config.seed)
        except RuntimeError as exc:  # FAISS C++ errors arrive as RuntimeError
            raise BuildError(f"FAISS could not build {params.index_factory!r}: {exc}") from exc
    with timeit(f"Evaluating recall@{config.recall_k} on {len(queries.xq)} queries", timings):
        tuning = tune(index, xb, queries, params.nlist, tuning_config(config))
    point = recall_gate(tuning, params, d, config)
    version = artifact.new_version_name()
    with timeit("Publishing", timings), artifact.staging_dir(config.out, version) as staged:
        faiss.write_index(index, str(staged / artifact.INDEX_FILE))
        np.save(staged / artifact.EMBEDDINGS_FILE, xb)
        artifact.write_ads(
            [artifact.AdMeta.from_record(r) for r in catalog.records], staged / artifact.ADS_FILE
        )
        if catalog.rejects:
            write_rejects(catalog.rejects, staged / artifact.REJECTS_FILE)
        manifest = _manifest(catalog, params, model, tuning, point, timings, config)
        if pin_file is not None:
            write_pins(staged, pin_file, pins[0])
            manifest = replace(manifest, pins=pins[1])
        manifest = artifact.publish(config.out, staged, version=version, manifest=manifest)
    return BuildResult(version_dir=config.out / version, manifest=manifest)


def _embed_pins(
    pin_file: PinFile, model: ModelInfo, embedder: Embedder | None, config: BuildConfig
) -> tuple[np.ndarray, PinsInfo]:
    try:
        return embed_pins(pin_file, model, embedder, text_fields=config.pin_text_fields)
    except PinsError as exc:
        raise BuildError(str(exc)) from exc


def _plan(config: BuildConfig, xb: np.ndarray) -> tuple[IndexParams, QuerySet]:
    """What to build (indexer.params) and the held-out queries to measure it with."""
    n, d = xb.shape
    try:
        params = choose_params(
            n,
            d,
            index_factory=config.index_factory,
            nprobe=config.nprobe,
            k_factor=config.k_factor,
            max_memory_mb=config.max_memory_mb,
        )
        return params, eval_queries(config, xb)
    except ValueError as exc:
        raise BuildError(str(exc)) from exc


def eval_queries(config: BuildConfig, xb: np.ndarray) -> QuerySet:
    """Held-out queries for the recall gate: ``config.queries`` or a catalog sample."""
    if config.queries is not None:
        return file_queries(
            config.queries, xb.shape[1], max_queries=config.max_eval_queries, seed=config.seed
        )
    return catalog_queries(xb, min(config.max_eval_queries, len(xb)), seed=config.seed)


def tuning_config(config: BuildConfig) -> TuningConfig:
    return TuningConfig(
        target_recall=config.target_recall,
        recall_k=config.recall_k,
        max_queries=config.max_eval_queries,
        min_rerank=DEFAULT_MIN_RERANK,
        nprobe=config.nprobe,
        k_factor=config.k_factor,
        time_budget_s=config.eval_budget_s,
        seed=config.seed,
    )


def recall_gate(tuning: Tuning, params: IndexParams, d: int, config: BuildConfig) -> OperatingPoint:
    """The operating point to publish as the default, or RecallBelowTarget.

    Raises:
        RecallBelowTarget: no allowed point reaches the target and ``allow_below_target`` is off.
    """
    if tuning.chosen is not None:
        c = tuning.chosen
        logger.info(
            "Recall@%d %.3f >= %.3f at nprobe %d, k_factor %d (%.2f ms p50, %.2f ms p99)",
            tuning.recall_k,
            c.recall,
            tuning.target_recall,
            c.nprobe,
            c.k_factor,
            c.p50_ms,
            c.p99_ms,
        )
        return c
    message = below_target_message(
        tuning, params.index_factory, params.nlist, d, tuning_config(config)
    )
    if not config.allow_below_target:
        raise RecallBelowTarget(
            message + "\nNothing was published and LATEST is unchanged; --allow-below-target "
            "publishes it anyway, marked below target in its manifest.",
            tuning,
        )
    point = allowed_best(tuning, tuning_config(config))
    logger.warning(
        "Publishing below target (--allow-below-target) with nprobe %d, k_factor %d "
        "(recall@%d %.3f), marked below target in the manifest: %s",
        point.nprobe,
        point.k_factor,
        tuning.recall_k,
        point.recall,
        message,
    )
    return point


def _versions(names: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _snapshot_time(config: BuildConfig, catalog: Catalog) -> datetime:
    snap = config.snapshot_at or datetime.fromtimestamp(catalog.source.stat().st_mtime, UTC)
    return snap if snap.tzinfo else snap.replace(tzinfo=UTC)  # naive times are UTC


def _manifest(
    catalog: Catalog,
    params: IndexParams,
    model: ModelInfo,
    tuning: Tuning,
    point: OperatingPoint,
    timings: dict[str, float],
    config: BuildConfig,
) -> Manifest:
    n = len(catalog.records)
    paused = sum(r.status == "paused" for r in catalog.records)
    software = ["adindex", "faiss-cpu", "sentence-transformers", "torch", "numpy"]
    return Manifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        dimension=model.dimension,
        model=model,
        index=IndexSpec(
            factory=params.index_factory,
            nlist=params.nlist,
            train_size=params.train_size,
            seed=config.seed,
            memory_bytes_estimate=params.memory_bytes,
        ),
        search=SearchDefaults(point.nprobe, point.k_factor, DEFAULT_MIN_RERANK),
        counts=Counts(ads=n, active=n - paused, paused=paused, rejected=len(catalog.rejects)),
        catalog=CatalogInfo(str(catalog.source), catalog.sha256, _snapshot_time(config, catalog)),
        build=BuildInfo(dict(timings), config.threads, platform.node(), _versions(software)),
        quality=replace(tuning.to_quality(max_memory_mb=config.max_memory_mb), chosen=point),
    )
