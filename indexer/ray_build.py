"""``adindex build --engine ray``: the same build, its heavy stages spread over a Ray cluster.

Imported only for ``engine="ray"`` (``ray`` is the optional ``[ray]`` extra). What runs where:

- Ray tasks, one per catalog file: read and check the file with the format readers and the
  ``Builder`` of a local build (``indexer.catalog.read_part``), so rows get the same checks,
  messages and real line numbers. A file is the unit: its rules (duplicates, embeddings in
  every row or none) span the file. Big catalogs come as part files; one file is one task.
- The driver (the ``adindex build`` process): decides on the rows with the same function as a
  local build (``indexer.catalog_validation.decide``), looks the texts up in the embedding
  cache, and trains the IVF quantizer and codes on a sample.
- A Ray Data actor pool embeds the texts the cache does not have; each actor loads the model
  once (``map_batches`` with ``ActorPoolStrategy``). The catalog is read and decided before it
  starts, so no read stage waits for the CPUs the actors hold.
- Ray tasks add blocks of vectors to copies of the trained empty index; the driver merges them
  in catalog order (``IndexIVF.merge_from`` with the block's first row as id offset), so FAISS
  id i is row i of ads.jsonl, as in a local build.
- The driver then runs the stages every engine shares (``indexer.build.index_and_publish``):
  the recall gate, the manifest and the atomic publish. The output is the same artifact.

The catalog path (and the model, if not the installed one) must be readable on every node,
as with any Ray Data read: a shared file system or the same path everywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import faiss
import grpc
import numpy as np
import pyarrow as pa
import ray
from tqdm import tqdm

from indexer.build import (
    BuildConfig,
    BuildError,
    BuildResult,
    RayOptions,
    embed_catalog,
    index_and_publish,
    timeit,
    train_empty,
)
from indexer.catalog import catalog_files, catalog_sha256, read_part
from indexer.catalog_validation import CatalogPart, decide
from indexer.embedding import (
    DEFAULT_BACKEND,
    Embedder,
    SentenceTransformerEmbedder,
    embedder_identity,
)
from indexer.params import IndexParams
from indexer.records import Catalog, CatalogError

logger = logging.getLogger(__name__)

EmbedderFactory = Callable[[], Embedder]
GCS_PROBE_S = 10.0  # how long a listening address has to answer as a Ray head


def build_on_ray(
    config: BuildConfig, *, embedder_factory: EmbedderFactory | None = None
) -> BuildResult:
    """:func:`indexer.build.build` with ``engine="ray"``: same checks, same artifact.

    Args:
        config: the build; ``config.ray`` says which cluster and how to use it.
        embedder_factory: makes the embedder in each actor (picklable; default: loads
            ``config.model``). The driver makes one too, for the embedder's identity.

    Raises:
        BuildError: no cluster at ``config.ray.address``, or actors embedding with another
            embedder than the driver's; plus everything a local build raises.
    """
    # The default embedder runs its own thread pool (ONNX Runtime): one thread per reserved
    # CPU, or two actors on two cores run four threads and crawl.
    threads = config.ray.cpus_per_actor if DEFAULT_BACKEND == "onnx" else None
    factory = embedder_factory or partial(
        SentenceTransformerEmbedder, config.model, threads=threads
    )
    timings: dict[str, float] = {}
    faiss.omp_set_num_threads(config.threads)
    with ray_session(config.ray, timings) as nodes:
        with timeit("Reading catalog", timings):
            catalog = read_on_ray(config)
        with timeit(f"Embedding {len(catalog.records)} ads", timings):
            needs_model = catalog.embeddings is None or config.model is not None
            embedder = factory() if needs_model else None
            encode = None
            if embedder is not None:
                encode = partial(
                    encode_on_ray,
                    factory=factory,
                    identity=embedder_identity(embedder),
                    options=config.ray,
                )
            vectors = embed_catalog(catalog, config, embedder, encode=encode)
        make_index = partial(index_on_ray, options=config.ray)
        return index_and_publish(vectors, config, timings, make_index=make_index, nodes=nodes)


# --- the cluster ---------------------------------------------------------------------------


@contextmanager
def ray_session(options: RayOptions, timings: dict[str, float]) -> Iterator[int]:
    """Connect to the cluster (or start a local Ray) for the build; yields its node count.

    Without an address (nor ``RAY_ADDRESS``) a local Ray is started. A connection that was open
    before is used and left open; one opened here is closed, and a local Ray started here is
    stopped with it: no Ray process outlives the build.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a build
    if ray.is_initialized():
        yield _alive_nodes()
        return
    address = options.address or os.environ.get("RAY_ADDRESS")  # Ray's own convention
    if address:
        _check_reachable(address)  # (the token: indexer._env)
        with timeit("Joining a Ray cluster", timings):
            try:
                ray.init(address=address, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BuildError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    else:
        with timeit("Starting a local Ray", timings):
            # "local": a Ray of its own, even where `ray start` runs a cluster on this machine
            # (which ray.init() without an address would join).
            cpus = options.num_cpus or os.cpu_count() or 1
            ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    try:
        nodes = _alive_nodes()
        logger.info("Ray: %d node(s), %s CPUs", nodes, ray.cluster_resources().get("CPU", 0))
        yield nodes
    finally:
        ray.shutdown()


def _alive_nodes() -> int:
    return len([node for node in ray.nodes() if node.get("Alive")])


def _check_reachable(address: str) -> None:
    """Fail fast where no cluster listens: ``ray.init`` would retry for minutes."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    hint = (
        "start one with `ray start --head` (it prints the address to pass), or leave out "
        "--ray-address to start a local Ray for this build; nothing was published"
    )
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise BuildError(f"no Ray cluster at {address!r} ({exc}): {hint}") from exc
    # Something listens; a Ray head's GCS speaks gRPC there. Anything else (a wrong port, the
    # dashboard) would keep ray.init retrying for minutes.
    channel = grpc.insecure_channel(f"{host or '127.0.0.1'}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=GCS_PROBE_S)
    except grpc.FutureTimeoutError:
        raise BuildError(
            f"no Ray cluster at {address!r}: something listens there but does not answer as a "
            f"Ray head's GCS (gRPC) within {GCS_PROBE_S:.0f} s; {hint}"
        ) from None
    finally:
        channel.close()


def _cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 0))


# --- reading -------------------------------------------------------------------------------


def _read_file(path: Path, text_fields: tuple[str, ...]) -> CatalogPart | Exception:
    """One catalog file, checked on a worker; a file-level error comes back as the value, so
    the driver raises it unchanged (not wrapped in a Ray error)."""
    pa.set_cpu_count(1)  # Arrow's decoding pool, sized to the one CPU the task reserved
    try:
        return read_part(path, text_fields)
    except (CatalogError, OSError) as exc:
        return exc


def read_on_ray(config: BuildConfig) -> Catalog:
    """Read and check each catalog file in a Ray task; decide on the driver, as locally."""
    files = catalog_files(config.catalog)
    read = ray.remote(num_cpus=1)(_read_file)
    refs = [read.remote(f, config.text_fields) for f in files]
    parts: list[CatalogPart] = []
    for path, ref in zip(files, tqdm(refs, desc="Reading files", unit="file"), strict=True):
        part = ray.get(ref)
        if isinstance(part, OSError):
            raise BuildError(
                f"{path}: a Ray worker cannot read it ({part}); every node must see the catalog "
                "at the same path"
            ) from part
        if isinstance(part, Exception):
            raise part
        parts.append(part)
    source = config.catalog
    return decide(parts, source, catalog_sha256(source, parts), skip_invalid=config.skip_invalid)


# --- embedding -----------------------------------------------------------------------------


class _EmbedActor:
    """A Ray Data actor: loads the embedder once, then embeds batch after batch."""

    def __init__(self, factory: EmbedderFactory, threads: int):
        os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch or OpenMP start a pool
        self.embedder = factory()
        if "torch" in sys.modules:  # torch's intra-op pool is per process: size it on purpose
            sys.modules["torch"].set_num_threads(threads)
        self.identity = embedder_identity(self.embedder)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        xb = self.embedder.encode([str(t) for t in batch["text"]])
        n = len(xb)
        return {
            "row": batch["row"],
            "embedding": xb,
            "identity": np.array([self.identity] * n),
            "node": np.array([self.node] * n),
        }


def encode_on_ray(
    texts: list[str], *, factory: EmbedderFactory, identity: str, options: RayOptions
) -> np.ndarray:
    """Embed texts with a pool of actors; (len(texts), d) float32 in input order.

    Raises:
        BuildError: an actor embeds with another embedder than ``identity`` (vectors of two
            embedders never go into one index), or rows went missing.
    """
    n = len(texts)
    per = options.cpus_per_actor
    node_cpus = [int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes()
                 if node.get("Alive")]  # fmt: skip
    if per > max(node_cpus, default=0):
        raise BuildError(
            f"--ray-cpus-per-actor {per} exceeds every node's CPUs ({max(node_cpus, default=0)} "
            "at most): no embedding actor could ever be scheduled; nothing was published"
        )
    fits = max(1, sum(c // per for c in node_cpus))  # an actor lives on one node
    actors = min(options.actors or fits, fits)
    if options.actors is not None and options.actors > fits:
        logger.warning(
            "%d actors x %d CPUs do not fit the cluster's %d CPUs: using %d",
            options.actors,
            per,
            _cpus(),
            actors,
        )
    # A few blocks per actor (and no more actors than blocks): the pool stays busy to the end.
    block = max(1, min(16 * options.batch_size, -(-n // (4 * actors))))
    actors = min(actors, -(-n // block))
    tables = [
        pa.table({"row": np.arange(s, min(s + block, n)), "text": texts[s : s + block]})
        for s in range(0, n, block)
    ]
    logger.info("Embedding %d texts with %d Ray actor(s) of %d CPU(s)", n, actors, per)
    out = ray.data.from_arrow(tables).map_batches(
        _EmbedActor,
        fn_constructor_args=(factory, per),
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=options.batch_size,
        batch_format="numpy",
        num_cpus=per,
    )
    xb: np.ndarray | None = None
    done = np.zeros(n, dtype=bool)
    by_node: Counter[str] = Counter()
    # Closed on the way out, error or not: an abandoned iterator shuts its executor down only
    # when collected, after ray.shutdown(), and that shutdown re-connects a driver to Ray.
    batches = iter(out.iter_batches(batch_size=None, batch_format="numpy"))
    with tqdm(total=n, desc="Embedding on Ray", unit="text") as bar, _closing(batches):
        for batch in batches:
            found = set(batch["identity"].tolist())
            if found != {identity}:
                raise BuildError(
                    f"Ray actors embed with {sorted(found)}, the driver with {identity!r}: "
                    "refusing to mix vectors of different embedders in one index (install the "
                    "same model and embedder on every node)"
                )
            rows, x = batch["row"], batch["embedding"]
            if xb is None:
                xb = np.empty((n, x.shape[1]), dtype=np.float32)
            xb[rows] = x
            done[rows] = True
            by_node.update(batch["node"].tolist())
            bar.update(len(rows))
    if xb is None or not done.all():
        raise BuildError(f"Ray returned vectors for {int(done.sum())} of {n} texts")
    logger.info("Texts embedded per node: %s", {k[:8]: v for k, v in by_node.items()})
    return xb


@contextmanager
def _closing(it: Iterator[object]) -> Iterator[None]:
    try:
        yield
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


# --- indexing ------------------------------------------------------------------------------


def _add_block(blob: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Add a block to a copy of the trained empty index; returns the serialized IVF part."""
    faiss.omp_set_num_threads(1)  # one CPU per task, as reserved
    index = faiss.deserialize_index(blob)
    base = _without_refine(index)
    base.add(xb)  # ids 0..len-1 here; the driver offsets them by the block's first row
    return faiss.serialize_index(base)


def _list_sizes(ivf: faiss.IndexIVF) -> np.ndarray:
    lists = ivf.invlists
    assert lists is not None
    return np.array([lists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)


def _merge_would_corrupt(ivf: faiss.IndexIVF, sizes: np.ndarray, incoming: np.ndarray) -> bool:
    """Whether ``merge_from`` would append to a fast-scan list whose size is a non-zero
    multiple of its block's byte size: FAISS 1.15's ``BlockInvertedLists::add_entries`` then
    copies whole blocks to the wrong offset and overruns the heap (the driver crashed with
    ``malloc(): corrupted top size``). Adding that block's vectors with ``add`` is safe."""
    assert ivf.invlists is not None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.BlockInvertedLists):  # type: ignore[attr-defined]
        return False
    hit = (sizes > 0) & (sizes % lists.block_size == 0) & (incoming > 0)
    return bool(hit.any())


def _without_refine(index: faiss.Index) -> faiss.Index:
    """The index under a re-ranking stage (which the driver fills itself), or the index."""
    top = faiss.downcast_index(index)
    return faiss.downcast_index(top.base_index) if isinstance(top, faiss.IndexRefine) else top


def index_on_ray(
    xb: np.ndarray, params: IndexParams, seed: int, *, options: RayOptions
) -> faiss.Index:
    """Train on the driver, add blocks in Ray tasks, merge in order (an ``IndexMaker``)."""
    index = train_empty(xb, params, seed=seed)
    n = len(xb)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index: nothing to merge, add here
        ivf = None
    if ivf is None or n <= options.add_block_rows:
        index.add(xb)
        return index
    blob = ray.put(faiss.serialize_index(index))
    add = ray.remote(num_cpus=1)(_add_block)
    starts = range(0, n, options.add_block_rows)
    refs = [add.remote(blob, xb[s : s + options.add_block_rows]) for s in starts]
    logger.info("Adding %d vectors in %d Ray tasks", n, len(refs))
    sizes = _list_sizes(ivf)
    added_here = 0
    for s, ref in zip(starts, tqdm(refs, desc="Merging blocks", unit="block"), strict=True):
        block = faiss.deserialize_index(ray.get(ref))
        part = faiss.extract_index_ivf(block)  # a view into block: keep block alive
        incoming = _list_sizes(part)
        if _merge_would_corrupt(ivf, sizes, incoming):
            ivf.add(xb[s : s + options.add_block_rows])  # ids ntotal.. = s..: same rows
            added_here += 1
        else:
            ivf.merge_from(part, s)  # ids s..: row s.. of the catalog
        sizes += incoming
    if added_here:
        logger.info("Added %d of %d blocks on the driver (a merge there corrupts)", added_here,
                    len(refs))  # fmt: skip
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexRefine):
        top.refine_index.add(xb)  # exact re-ranking codes: cheap, in catalog order
    for wrapper in (top, _without_refine(index)):  # wrappers count what their parts hold
        wrapper.ntotal = n
    if ivf.ntotal != n:
        raise BuildError(f"merged {ivf.ntotal} vectors, expected {n}")
    return index
