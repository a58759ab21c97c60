"""Benchmark datasets: a synthetic set calibrated to real sentence embeddings, and its statistics.

IVF recall measured on easy synthetic blobs flatters every index: a mixture of a few thousand
isotropic blobs puts 99.97% of a query's exact top-100 into its 8 nearest inverted lists, where
all-MiniLM-L6-v2 embeddings of real product titles put 73% there. ``calibrated`` generates a
seeded hierarchical anisotropic Gaussian mixture on the unit sphere whose neighbour statistics
(``neighbour_stats``) match the real ones (``REAL_MINILM_STATS``):

    shared mean direction          every vector leans the same way (random pairs have cos ~0.11)
    -> topics                      broad regions of the sphere
    -> clusters within topics      Zipf-like sizes; each with its own anisotropic shape
    -> points                      power-law eigen-spectrum: most variance in few directions
    queries                        same process, never base points: noisier, sometimes between
                                   two clusters of a topic, plus an off-manifold component

Usage::

    python -m benchmarks.datasets --nb 54667 --nq 1000 [--nlist 1024]
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import math
import os
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

# Idle OpenMP threads otherwise busy-wait and steal the 2 shared cores (FAISS is imported lazily,
# after this line, so the setting is in place when its OpenMP runtime loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Measured on all-MiniLM-L6-v2 embeddings (384-d, unit norm) of 54,667 real product titles with
# real search queries; locality with 1,024 spherical k-means lists (~53 vectors per list).
REAL_MINILM_STATS: dict[str, float] = {
    "cos_1st": 0.65,
    "cos_kth": 0.45,  # k = 100
    "cos_random": 0.11,
    "locality_nprobe8": 0.73,
    "locality_nprobe16": 0.82,
    "locality_nprobe128": 0.96,
}
CALIBRATION_NB = 54_667  # base vectors in the real measurement
REAL_POINTS_PER_LIST = 53  # 54,667 base vectors / 1,024 lists
CHUNK_ROWS = 65_536  # rows generated per step: bounds memory, and results do not depend on nb
DEFAULT_NPROBES = (8, 16, 128)
_BASE_STREAM, _QUERY_STREAM = 1, 2


@dataclass(frozen=True)
class Dataset:
    """Base vectors, query vectors and the metric to compare them with.

    Attributes:
        name: short identifier, e.g. ``"calibrated-54667"``.
        xb: base vectors, shape (nb, d), float32, C-contiguous.
        xq: query vectors, shape (nq, d), float32, C-contiguous.
        metric: ``"ip"`` (rows of unit norm: inner product = cosine) or ``"l2"``.
        description: how the data was made or where it came from.
    """

    name: str
    xb: np.ndarray
    xq: np.ndarray
    metric: Literal["ip", "l2"]
    description: str

    def __post_init__(self) -> None:
        if self.xb.ndim != 2 or self.xq.ndim != 2 or self.xb.shape[1] != self.xq.shape[1]:
            raise ValueError(
                f"xb and xq must be (n, d) with the same d; got {self.xb.shape} and {self.xq.shape}"
            )

    @property
    def d(self) -> int:
        return int(self.xb.shape[1])

    @property
    def nb(self) -> int:
        return int(self.xb.shape[0])

    @property
    def nq(self) -> int:
        return int(self.xq.shape[0])


@dataclass(frozen=True)
class MixtureParams:
    """Parameters of the hierarchical anisotropic mixture (defaults: the calibrated values).

    A base vector of cluster c in topic t is, before normalisation to unit length::

        mean_weight * m + topic_weight * a_t + cluster_weight * a_c + point_weight * (z * g_c) @ U.T

    m is a random unit vector shared by all (it sets the cosine of random pairs); U a random
    rotation; s the power-law spectrum, s_i^2 proportional to i^-spectrum_alpha (i = 1..d),
    sum 1; a_t and a_c are draws of (z * s) @ U.T with z ~ N(0, I_d), so their expected squared
    norm is 1 and most of their variance lies in a few directions; g_c = s * (the cluster's
    lognormal per-axis gains, sigma ``gain_sigma``), rescaled to unit squared norm, which gives
    each cluster its own anisotropic shape. Clusters belong to random topics (clusters_per_topic
    on average) and hold base points in Zipf-like shares (rank^-cluster_size_zipf over a random
    ranking). There are CALIBRATION_NB / points_per_cluster clusters at nb = CALIBRATION_NB, and
    their number grows as nb^cluster_growth: like Heaps' law for words, a bigger catalog has both
    more niches and more items per niche.

    A query picks a cluster with the same shares, with probability ``query_between_prob`` moves
    its centre up to halfway towards another cluster of the same topic, swaps ``point_weight``
    for ``query_weight``, and adds isotropic noise of norm ~``query_iso_weight``: like a short,
    noisy query text, it has a part that no base vector shares, which lowers every cosine.
    """

    points_per_cluster: float
    cluster_growth: float
    clusters_per_topic: float
    cluster_size_zipf: float
    spectrum_alpha: float
    mean_weight: float
    topic_weight: float
    cluster_weight: float
    point_weight: float
    gain_sigma: float
    query_weight: float
    query_between_prob: float
    query_iso_weight: float

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0; got {value}")
        if self.points_per_cluster < 1 or self.clusters_per_topic < 1:
            raise ValueError(
                f"points_per_cluster and clusters_per_topic must be >= 1; "
                f"got {self.points_per_cluster} and {self.clusters_per_topic}"
            )
        if self.query_between_prob > 1:
            raise ValueError(f"query_between_prob must be in [0, 1]; got {self.query_between_prob}")


# Calibrated by damped Gauss-Newton steps on finite differences of neighbour_stats at
# nb=54,667, nq=1,000, nlist=1,024, seed 1338 (0.03 = one unit of error for every statistic).
# What these values reach, at that size and at scale with the same ~53 vectors per list
# (``python -m benchmarks.datasets --nb N``), beside REAL_MINILM_STATS: docs/benchmarks.md,
# "Neighbour statistics". Clusters in proportion to nb (cluster_growth=1) made IVF locality fall
# as nb grew and a fixed number of clusters (0) made it rise; sqrt(nb) (0.5) keeps it near the
# real values.
CALIBRATED = MixtureParams(
    points_per_cluster=37.0,  # at nb=54,667: ~1,480 clusters; fewer per cluster than per list
    cluster_growth=0.5,  # clusters ~ sqrt(nb): keeps IVF locality steady as nb grows (above)
    clusters_per_topic=16.0,  # ~92 topics at nb=54,667
    cluster_size_zipf=0.58,  # largest cluster ~70x the smallest at nb=54,667
    spectrum_alpha=0.83,  # top 10 of 384 directions hold 32% of the variance, top 50 hold 57%
    mean_weight=0.55,  # sets cos_random
    topic_weight=0.6,
    cluster_weight=0.72,
    point_weight=1.27,  # points spread wider than clusters are apart: IVF lists cut through them
    gain_sigma=0.5,
    query_weight=0.69,
    query_between_prob=0.3,
    query_iso_weight=0.44,  # scales query cosines down by ~1/sqrt(1 + 0.44^2 / |q|^2)
)


# An outside 1M x 384 set whose queries' neighbours are tightly packed: the 1st and the 100th
# at cosine ~0.54 and ~0.44 (calibrated at 1M: 0.676 / 0.534). Its queries sit further off the
# catalog's manifold, which scales every query cosine down by ~0.8: at 1M the exact top-100
# spans only ~0.11 of cosine, so PQ's scoring error reorders it and re-ranking must go deep.
TIGHT_STATS: dict[str, float] = {"cos_1st": 0.54, "cos_kth": 0.44}

# CALIBRATED with noisier queries (measured with neighbour_stats: docs/index-parameters.md).
TIGHT = dataclasses.replace(CALIBRATED, query_iso_weight=1.15)


@dataclass(frozen=True)
class _Structure:
    """The mixture's fixed parts, drawn once per (nb, d, params, seed)."""

    rotation: np.ndarray  # U, (d, d) float32
    centres: np.ndarray  # (n_clusters, d) float32: mean + topic + cluster parts
    gains: np.ndarray  # (n_clusters, d) float32: g_c
    cluster_p: np.ndarray  # (n_clusters,) float64: share of base points (and queries)
    topic_of: np.ndarray  # (n_clusters,) int64
    by_topic: np.ndarray  # (n_clusters,) int64: cluster ids sorted by topic
    # (n_topics + 1,) int64: topic t's clusters are by_topic[topic_start[t] : topic_start[t + 1]]
    topic_start: np.ndarray


def _aniso(rng: np.random.Generator, n: int, scale: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """n draws of (z * scale) @ U.T: shape (n, d), float32."""
    z = rng.standard_normal((n, rotation.shape[0]), dtype=np.float32)
    z *= scale
    out: np.ndarray = z @ rotation.T
    return out


def _structure(nb: int, d: int, params: MixtureParams, seed: int) -> _Structure:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    rotation = (q * np.sign(np.diag(r))).astype(np.float32)  # Haar-random rotation
    s2 = np.arange(1, d + 1, dtype=np.float64) ** -params.spectrum_alpha
    spectrum = np.sqrt(s2 / s2.sum()).astype(np.float32)

    growth = (nb / CALIBRATION_NB) ** params.cluster_growth
    n_clusters = max(1, round(CALIBRATION_NB / params.points_per_cluster * growth))
    n_topics = max(1, round(n_clusters / params.clusters_per_topic))
    mean = rng.standard_normal(d)
    mean *= params.mean_weight / np.linalg.norm(mean)
    topics = params.topic_weight * _aniso(rng, n_topics, spectrum, rotation)
    topic_of = rng.integers(0, n_topics, n_clusters)
    centres = params.cluster_weight * _aniso(rng, n_clusters, spectrum, rotation)
    centres += topics[topic_of]
    centres += mean.astype(np.float32)

    g = spectrum * np.exp(params.gain_sigma * rng.standard_normal((n_clusters, d)))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    cluster_p = (rng.permutation(n_clusters) + 1.0) ** -params.cluster_size_zipf
    cluster_p /= cluster_p.sum()
    by_topic = np.argsort(topic_of, kind="stable")
    topic_start = np.searchsorted(topic_of[by_topic], np.arange(n_topics + 1))
    return _Structure(
        rotation, centres, g.astype(np.float32), cluster_p, topic_of, by_topic, topic_start
    )


def _chunks(n: int) -> Iterator[tuple[int, int, int]]:
    """(chunk index, start, stop) over n rows in steps of CHUNK_ROWS."""
    for i, start in enumerate(range(0, n, CHUNK_ROWS)):
        yield i, start, min(n, start + CHUNK_ROWS)


def _normalize_rows(x: np.ndarray) -> None:
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def _draw(
    st: _Structure, rng: np.random.Generator, c: np.ndarray, weight: float, out: np.ndarray
) -> None:
    """out = weight * (z * g_c) @ U.T for clusters c; out has shape (len(c), d), float32."""
    z = rng.standard_normal(out.shape, dtype=np.float32)
    z *= st.gains[c]
    z *= np.float32(weight)
    np.matmul(z, st.rotation.T, out=out)


def _base(st: _Structure, nb: int, params: MixtureParams, seed: int) -> np.ndarray:
    xb = np.empty((nb, st.rotation.shape[0]), dtype=np.float32)
    for i, start, stop in _chunks(nb):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _BASE_STREAM, i]))
        c = rng.choice(len(st.cluster_p), size=stop - start, p=st.cluster_p)
        _draw(st, rng, c, params.point_weight, xb[start:stop])
        xb[start:stop] += st.centres[c]
        _normalize_rows(xb[start:stop])
    return xb


def _queries(st: _Structure, nq: int, params: MixtureParams, seed: int) -> np.ndarray:
    d = st.rotation.shape[0]
    xq = np.empty((nq, d), dtype=np.float32)
    for i, start, stop in _chunks(nq):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _QUERY_STREAM, i]))
        n = stop - start
        c = rng.choice(len(st.cluster_p), size=n, p=st.cluster_p)
        # Some queries fall between two clusters of one topic ("running shoes" vs "trail shoes").
        topic = st.topic_of[c]
        lo, hi = st.topic_start[topic], st.topic_start[topic + 1]
        other = st.by_topic[lo + (rng.random(n) * (hi - lo)).astype(np.int64)]
        between = rng.random(n) < params.query_between_prob
        t = (rng.uniform(0.0, 0.5, n) * between).astype(np.float32)[:, None]
        _draw(st, rng, c, params.query_weight, xq[start:stop])
        xq[start:stop] += (1 - t) * st.centres[c] + t * st.centres[other]
        iso = rng.standard_normal((n, d), dtype=np.float32)
        iso *= np.float32(params.query_iso_weight / math.sqrt(d))
        xq[start:stop] += iso
        _normalize_rows(xq[start:stop])
    return xq


def generate(
    nb: int, nq: int, d: int = 384, *, params: MixtureParams = CALIBRATED, seed: int = 1338
) -> Dataset:
    """A seeded hierarchical anisotropic Gaussian mixture on the unit sphere.

    Args:
        nb: base vectors; the number of clusters and topics grows with it.
        nq: query vectors, drawn from the same process but never from the base.
        d: dimension.
        params: mixture parameters.
        seed: the same (nb, nq, d, params, seed) always gives the same arrays; xb does not depend on nq.

    Returns:
        Dataset with xb (nb, d) and xq (nq, d), float32 rows of unit L2 norm, metric ``"ip"``.
    """
    if nb < 1 or nq < 0 or d < 2:
        raise ValueError(f"need nb >= 1, nq >= 0, d >= 2; got nb={nb}, nq={nq}, d={d}")
    st = _structure(nb, d, params, seed)
    xb = _base(st, nb, params, seed)
    xq = _queries(st, nq, params, seed)
    return Dataset(
        name=f"calibrated-{nb}",
        xb=xb,
        xq=xq,
        metric="ip",
        description=(
            f"hierarchical anisotropic Gaussian mixture on the unit sphere, d={d}, seed={seed}, "
            f"{len(st.cluster_p)} clusters in {len(st.topic_start) - 1} topics, {params}"
        ),
    )


def calibrated(nb: int, nq: int, d: int = 384, *, seed: int = 1338) -> Dataset:
    """The synthetic set calibrated to all-MiniLM-L6-v2 neighbour statistics (see ``CALIBRATED``).

    Generated in chunks of ``CHUNK_ROWS`` rows: 1,000,000 x 384 needs ~1.6 GB (the output) plus
    ~0.5 GB of temporaries.

    Returns:
        Dataset with xb (nb, d) and xq (nq, d), float32 rows of unit L2 norm, metric ``"ip"``.
    """
    return generate(nb, nq, d, params=CALIBRATED, seed=seed)


def tight(nb: int, nq: int, d: int = 384, *, seed: int = 1338) -> Dataset:
    """The calibrated catalog with tightly packed query neighbourhoods (``TIGHT``, ``TIGHT_STATS``).

    The base vectors are those of ``calibrated(nb, ...)``; only the queries differ.
    """
    ds = generate(nb, nq, d, params=TIGHT, seed=seed)
    return dataclasses.replace(ds, name=f"tight-{nb}")


def default_nlist(nb: int) -> int:
    """nb / 53 rounded to the nearest power of two: the list density of the real measurement."""
    return 1 << max(0, round(math.log2(max(nb / REAL_POINTS_PER_LIST, 1.0))))


def neighbour_stats(
    ds: Dataset,
    *,
    k: int = 100,
    nlist: int | None = None,
    nprobes: Sequence[int] = DEFAULT_NPROBES,
    sample_nq: int = 1000,
    seed: int = 0,
    max_train_points: int | None = None,
    niter: int = 20,
) -> dict[str, float]:
    """How hard a dataset is for IVF: neighbour cosines and IVF locality.

    Exact top-k by inner product (``indexer.ann.exact_search``) for up to ``sample_nq`` queries; the
    "locality" at nprobe p is the fraction of those top-k ids that lie in the p inverted lists
    nearest to the query, with lists from spherical k-means trained on the base.

    Args:
        ds: dataset whose rows have unit norm (cosines are read as inner products).
        k: neighbours per query.
        nlist: k-means lists; default ``default_nlist(nb)`` (~53 base vectors per list).
        nprobes: the nprobe values to report locality at; each must be <= nlist.
        sample_nq: queries used (a seeded sample when nq is larger).
        seed: seed for the query sample, the random pairs and k-means.
        max_train_points: train k-means on a seeded sample of this many base vectors (all when
            None); every base vector is then assigned to its nearest list.
        niter: k-means iterations.

    Returns:
        ``cos_1st``, ``cos_kth`` (mean cosine of the 1st and k-th exact neighbour), ``cos_random``
        (mean cosine of 10,000 random base pairs), ``locality_nprobe{p}`` for each p, and
        ``nlist``, ``nb``, ``nq``, ``k``, ``train_points``, ``stats_s`` for the record.
    """
    import faiss

    if ds.metric != "ip":
        raise ValueError(
            f"neighbour_stats reads inner products as cosines: needs metric 'ip', got {ds.metric!r}"
        )
    nlist = default_nlist(ds.nb) if nlist is None else nlist
    if not 1 <= k <= ds.nb or not nprobes or max(nprobes) > nlist or nlist > ds.nb:
        raise ValueError(
            f"need 1 <= k <= nb, nprobes <= nlist <= nb; got k={k}, nprobes={nprobes}, nlist={nlist}, nb={ds.nb}"
        )
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    xq = (
        ds.xq if ds.nq <= sample_nq else ds.xq[np.sort(rng.choice(ds.nq, sample_nq, replace=False))]
    )
    from indexer.ann import exact_search  # FAISS loads after OMP_WAIT_POLICY is set

    D, I = exact_search(ds.xb, xq, k)

    i, j = rng.integers(0, ds.nb, (2, 10_000))
    keep = i != j
    stats: dict[str, float] = {
        "cos_1st": float(D[:, 0].mean()),
        "cos_kth": float(D[:, k - 1].mean()),
        "cos_random": float(np.einsum("ij,ij->i", ds.xb[i[keep]], ds.xb[j[keep]]).mean()),
    }
    xt = ds.xb
    if max_train_points is not None and max_train_points < ds.nb:
        xt = ds.xb[np.sort(rng.choice(ds.nb, max_train_points, replace=False))]
    km = faiss.Kmeans(
        ds.d, nlist, niter=niter, spherical=True, seed=seed, max_points_per_centroid=1 << 30
    )
    km.train(xt)
    stats.update(_locality(km.index, ds.xb, xq, I, nprobes))
    stats.update(nlist=nlist, nb=ds.nb, nq=len(xq), k=k, train_points=len(xt))
    stats["stats_s"] = round(time.perf_counter() - t0, 1)
    return stats


def _locality(
    quantizer: Any, xb: np.ndarray, xq: np.ndarray, I: np.ndarray, nprobes: Sequence[int]
) -> dict[str, float]:
    """Fraction of the exact top-k ids I (nq, k) that lie in the query's p nearest lists, per p."""
    _, list_of = quantizer.search(xb, 1)  # each base vector's list: (nb, 1)
    _, probe = quantizer.search(xq, max(nprobes))  # each query's lists, nearest first: (nq, P)
    lists_of_topk = list_of[:, 0][I]  # (nq, k)
    out = {}
    for p in nprobes:
        hit = (lists_of_topk[:, :, None] == probe[:, None, :p]).any(axis=2)
        out[f"locality_nprobe{p}"] = float(hit.mean())
    return out


def blobs(
    nb: int,
    nq: int,
    d: int = 384,
    *,
    points_per_blob: int = 100,
    spread: float = 0.5,
    seed: int = 1338,
) -> Dataset:
    """The easy regime, for contrast: isotropic Gaussian blobs around random unit centres.

    Queries are fresh draws from the same blobs. With ``points_per_blob`` >= k, a query's exact
    top-k lie inside its own blob, which k-means covers with a few lists: IVF locality at
    nprobe 8 is close to 1, which is why such data flatters every IVF index.

    Args:
        nb: base vectors; there are max(1, nb // points_per_blob) blobs.
        nq: queries.
        d: dimension.
        points_per_blob: mean base vectors per blob.
        spread: norm of a point's offset from its blob centre, relative to the centre's norm 1.
        seed: the same arguments always give the same arrays.

    Returns:
        Dataset with xb (nb, d) and xq (nq, d), float32 rows of unit L2 norm, metric ``"ip"``.
    """
    n_blobs = max(1, nb // points_per_blob)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    centres = rng.standard_normal((n_blobs, d), dtype=np.float32)
    _normalize_rows(centres)

    def draw(n: int) -> np.ndarray:
        x = rng.standard_normal((n, d), dtype=np.float32)
        x *= np.float32(spread / math.sqrt(d))
        x += centres[rng.integers(0, n_blobs, n)]
        _normalize_rows(x)
        return x

    return Dataset(
        name=f"blobs-{nb}",
        xb=draw(nb),
        xq=draw(nq),
        metric="ip",
        description=f"{n_blobs} isotropic Gaussian blobs on the unit sphere, spread {spread}, d={d}, seed={seed}",
    )


# Where the Debian package dataset-fashion-mnist puts the files.
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
_IDX_DTYPES = {0x08: np.dtype(np.uint8)}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in .gz), as used by (Fashion-)MNIST.

    Format: a big-endian magic of two zero bytes, a type byte (0x08 = uint8) and a dimension
    count; then one big-endian uint32 per dimension; then the data in C order.

    Returns:
        Array with the file's shape, uint8.

    Raises:
        ValueError: the file is not an uint8 IDX file, or its size does not match its header.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not a uint8 IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        raise ValueError(
            f"{path}: header says shape {shape}, but {len(raw) - header} data bytes follow"
        )
    return np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=header).reshape(shape)


def load_fashion_mnist(root: Path = FASHION_MNIST_ROOT) -> Dataset | None:
    """Fashion-MNIST as a benchmark set: 60,000 train images as base, 10,000 test images as queries.

    Reads ``train-images-idx3-ubyte.gz`` and ``t10k-images-idx3-ubyte.gz`` under root, as
    installed by the Debian package ``dataset-fashion-mnist`` (not a dependency: install it to use it).

    Returns:
        Dataset with xb (60000, 784) and xq (10000, 784), float32 pixel values 0..255 (not
        normalised), metric ``"l2"``; or None, with the reason logged, when the files are absent.
    """
    files = [root / "train-images-idx3-ubyte.gz", root / "t10k-images-idx3-ubyte.gz"]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        logger.warning(
            "Fashion-MNIST not loaded: missing %s (apt-get install dataset-fashion-mnist)",
            ", ".join(missing),
        )
        return None
    xb, xq = (read_idx(p) for p in files)
    return Dataset(
        name="fashion-mnist",
        xb=np.ascontiguousarray(xb.reshape(len(xb), -1), dtype=np.float32),
        xq=np.ascontiguousarray(xq.reshape(len(xq), -1), dtype=np.float32),
        metric="l2",
        description=f"Fashion-MNIST 28x28 images from {root}: train as base, t10k as queries, raw pixels",
    )


@dataclass(frozen=True)
class StatsRun:
    """One ``python -m benchmarks.datasets`` run: which data, and how to measure it."""

    dataset: Literal["calibrated", "tight", "blobs"]
    nb: int
    nq: int
    d: int = 384
    seed: int = 1338
    k: int = 100
    nlist: int | None = None
    max_train_points: int | None = None
    threads: int = 2

    def __post_init__(self) -> None:
        if self.nb < 1 or self.nq < 1 or self.d < 2 or self.threads < 1:
            raise ValueError(f"nb, nq, threads must be >= 1 and d >= 2; got {self}")


def format_table(stats: dict[str, float], real: dict[str, float] = REAL_MINILM_STATS) -> str:
    """The statistics beside the real ones, one line each: name, synthetic, real, difference."""
    lines = [f"{'stat':<22}{'synthetic':>10}{'real':>8}{'diff':>8}"]
    for key, value in real.items():
        if key in stats:
            lines.append(f"{key:<22}{stats[key]:>10.3f}{value:>8.3f}{stats[key] - value:>+8.3f}")
    return "\n".join(lines)


def run(cfg: StatsRun, cmd: str = "(from Python: benchmarks.datasets.run)") -> dict[str, Any]:
    """Generate the dataset, measure it, and return one self-describing JSON-ready record."""
    import faiss

    from benchmarks.provenance import provenance

    faiss.omp_set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    make = {"calibrated": calibrated, "tight": tight, "blobs": blobs}[cfg.dataset]
    ds = make(cfg.nb, cfg.nq, cfg.d, seed=cfg.seed)
    gen_s = time.perf_counter() - t0
    logger.info(
        "Generated %s: %d x %d base, %d queries in %.1f s", ds.name, ds.nb, ds.d, ds.nq, gen_s
    )
    nlist = default_nlist(ds.nb) if cfg.nlist is None else cfg.nlist
    nprobes = [p for p in DEFAULT_NPROBES if p <= nlist] or [nlist]
    stats = neighbour_stats(
        ds, k=cfg.k, nlist=nlist, nprobes=nprobes, max_train_points=cfg.max_train_points
    )
    return {
        "benchmark": "datasets",
        "kind": "neighbour_stats",
        "name": ds.name,
        **asdict(cfg),
        "dataset": ds.name,
        "threads": {"kmeans": cfg.threads},
        "nlist": nlist,
        "gen_s": round(gen_s, 2),
        "stats": {key: round(v, 4) if isinstance(v, float) else v for key, v in stats.items()},
        "real": REAL_MINILM_STATS,
        **provenance(cmd),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.datasets``: print the statistics beside the real ones, then a JSON line."""
    parser = argparse.ArgumentParser(
        description="Neighbour statistics of a synthetic dataset vs real MiniLM embeddings."
    )
    parser.add_argument("--dataset", choices=["calibrated", "tight", "blobs"], default="calibrated")
    parser.add_argument("--nb", type=int, default=54_667, help="base vectors")
    parser.add_argument(
        "--nq", type=int, default=1_000, help="queries (at most 1,000 are measured)"
    )
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--seed", type=int, default=1338)
    parser.add_argument(
        "--nlist", type=int, default=None, help="k-means lists; default nb/53 as a power of two"
    )
    parser.add_argument(
        "--max-train-points", type=int, default=None, help="train k-means on a sample this large"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/datasets/neighbour-stats.jsonl"),
        help="append the JSON line here (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # FAISS's loader logs every SIMD variant it tries at INFO.
    logging.getLogger("faiss").setLevel(logging.WARNING)
    cfg = StatsRun(
        dataset=args.dataset,
        nb=args.nb,
        nq=args.nq,
        d=args.d,
        seed=args.seed,
        nlist=args.nlist,
        max_train_points=args.max_train_points,
        threads=args.threads,
    )
    from benchmarks.provenance import command

    record = run(cfg, command(argv, module="benchmarks.datasets"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    stats = record["stats"]
    print(
        f"{record['name']}: nb={cfg.nb} nq={stats['nq']} d={cfg.d} nlist={stats['nlist']} "
        f"(k-means on {stats['train_points']}), generated in {record['gen_s']:.1f} s, measured in {stats['stats_s']:.1f} s"
    )
    print(format_table(stats))
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
