"""The versioned index artifact: the one contract between the indexer and the server.

Layout of an artifact root (``adindex build --out ROOT``)::

    ROOT/
      LATEST                      name of the newest published version (one line)
      20261125T191500Z-3f2a1c9e/  one directory per version, never modified once published
        manifest.json             the typed manifest (``indexer.manifest``): schema, model and text
                                  fields, factory string, search defaults, counts, quality,
                                  sha256 + size of every file
        index.faiss               the FAISS index; FAISS id i is row i of ads.jsonl
        ads.jsonl                 one line per ad: id, advertiser, campaign, status, targeting, title
        embeddings.npy            (n, d) float32 unit vectors, row i = FAISS id i; kept for exact
                                  search, re-ranking checks and rebuilds without re-embedding
        rejects.jsonl             only when the build ran with --skip-invalid
        pins.jsonl, pin_embeddings.npy, pin_rejects.jsonl
                                  only when built with --pins: the pin table (indexer.pins)

A sharded version (``adindex build --shards N``, ``indexer.shards``) holds one directory per
shard instead of the three index files, each a complete version of its own ads that a leaf
loads with ``load(root, shard=i)``; the version's manifest names every shard and checksums
every file below it::

      20261125T191500Z-5b7d0e21/
        manifest.json             the version: "shards" section, files "shard-0/index.faiss", ...
        shard-0/                  manifest.json ("shards": {"index": 0, ...}), index.faiss,
        shard-1/ ...              ads.jsonl, embeddings.npy: the ads that hash to this shard

Publishing is atomic: everything is written into a hidden temporary directory beside the
versions, fsynced, renamed into place, and only then is ``LATEST`` replaced (write, fsync,
rename). A crash at any moment leaves the previous ``LATEST`` and its version intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.durable import fsync_path
from indexer.manifest import FileEntry, Manifest, ManifestError
from indexer.records import AdRecord, Targeting

if TYPE_CHECKING:
    import faiss

    from indexer.pins import PinTable

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
ADS_FILE = "ads.jsonl"
EMBEDDINGS_FILE = "embeddings.npy"
REJECTS_FILE = "rejects.jsonl"
LATEST = "LATEST"
_TMP_PREFIX = ".tmp-"


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete, corrupted or incompatible."""


@dataclass(frozen=True)
class AdMeta:
    """What retrieval needs to know about one ad (row i = FAISS id i)."""

    ad_id: str
    advertiser_id: str
    campaign_id: str
    status: str
    targeting: Targeting
    title: str

    @classmethod
    def from_record(cls, r: AdRecord) -> AdMeta:
        return cls(r.ad_id, r.advertiser_id, r.campaign_id, r.status, r.targeting, r.title)

    def to_json(self) -> dict[str, Any]:
        return {
            "ad_id": self.ad_id,
            "advertiser_id": self.advertiser_id,
            "campaign_id": self.campaign_id,
            "status": self.status,
            "targeting": self.targeting.to_json(),
            "title": self.title,
        }

    @classmethod
    def from_json(
        cls, obj: Mapping[str, Any], interned: dict[tuple[Any, ...], Targeting] | None = None
    ) -> AdMeta:
        """Read back what :meth:`to_json` wrote (validated then, so not re-validated here).

        Args:
            obj: the JSON object.
            interned: targeting specs seen so far; ads share a few hundred distinct specs, and
                sharing one object each saves memory and a second per 100k ads on load.
        """
        t = obj.get("targeting") or {}
        key = (
            tuple(t.get("countries", ())),
            tuple(t.get("locales", ())),
            tuple(t.get("devices", ())),
        )
        targeting = interned.get(key) if interned is not None else None
        if targeting is None:
            targeting = Targeting(*key)
            if interned is not None:
                interned[key] = targeting
        return cls(
            ad_id=obj["ad_id"],
            advertiser_id=obj["advertiser_id"],
            campaign_id=obj["campaign_id"],
            status=obj["status"],
            targeting=targeting,
            title=obj.get("title", ""),
        )


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified index version."""

    path: Path
    manifest: Manifest
    index: faiss.Index
    ads: list[AdMeta]
    # (n, d) read-only, as serving holds them: the re-ranking stage's vectors in place (float32
    # for RFlat, float16 for Refine(SQfp16)), else embeddings.npy memory-mapped.
    embeddings: np.ndarray
    pins: PinTable | None = None  # built with --pins: in the ads' space (same model, dimension)
    shard: int | None = None  # which shard of a sharded version (path is its directory)

    def exact_embeddings(self) -> np.ndarray:
        """embeddings.npy as built: (n, d) float32, memory-mapped read-only; ground truth."""
        exact: np.ndarray = np.load(self.path / EMBEDDINGS_FILE, mmap_mode="r")
        return exact

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def root(self) -> Path:
        """The artifact root the version was published under (where LATEST is)."""
        return self.path.parent if self.shard is None else self.path.parent.parent

    @property
    def dimension(self) -> int:
        return self.manifest.dimension


def new_version_name(now: datetime | None = None) -> str:
    """A sortable, unique version name: UTC timestamp plus a random suffix."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_ads(ads: Sequence[AdMeta], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for ad in ads:
            f.write(json.dumps(ad.to_json(), ensure_ascii=False, separators=(",", ":")))
            f.write("\n")


def read_ads(path: Path) -> list[AdMeta]:
    interned: dict[tuple[Any, ...], Targeting] = {}
    with path.open(encoding="utf-8") as f:
        return [AdMeta.from_json(json.loads(line), interned) for line in f]


@contextmanager
def staging_dir(root: Path, version: str) -> Iterator[Path]:
    """A temporary directory under ``root`` that is removed unless it was published."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{_TMP_PREFIX}{version}-{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def seal(staged: Path, *, version: str, manifest: Manifest) -> Manifest:
    """Checksum and fsync every file below ``staged``, then write its ``manifest.json``.

    Files in subdirectories (a sharded version's ``shard-0/...``) are listed by their
    relative path, so the manifest vouches for everything below it.

    Returns:
        The manifest as written, with ``version`` and ``files`` filled in.
    """
    files = {}
    for p in sorted(staged.rglob("*")):
        fsync_path(p)  # a directory too: the names of its files are then durable
        if p.is_file():
            files[p.relative_to(staged).as_posix()] = FileEntry(_sha256(p), p.stat().st_size)
    manifest = replace(manifest, version=version, files=files)
    mpath = staged / MANIFEST
    mpath.write_text(manifest.dumps(), encoding="utf-8")
    fsync_path(mpath)
    fsync_path(staged)
    return manifest


def publish(root: Path, staged: Path, *, version: str, manifest: Manifest) -> Manifest:
    """Checksum, fsync and atomically publish a staged version directory; point LATEST at it.

    Args:
        root: artifact root; the version lands at ``root / version``.
        staged: directory holding every file of the version except the manifest.
        version: version name (see :func:`new_version_name`).
        manifest: the version's manifest; ``version`` and ``files`` are filled in here.

    Returns:
        The manifest as written to ``root / version / manifest.json``.
    """
    manifest = seal(staged, version=version, manifest=manifest)
    final = root / version
    os.rename(staged, final)
    fsync_path(root)
    set_latest(root, version)
    logger.info("Published %s", final)
    return manifest


def set_latest(root: Path, version: str) -> None:
    """Atomically point ``root/LATEST`` at an existing, complete version."""
    if not (root / version / MANIFEST).is_file():
        raise ArtifactError(f"{root / version}: no {MANIFEST}; refusing to point {LATEST} at it")
    tmp = root / f"{_TMP_PREFIX}{LATEST}-{os.getpid()}"
    tmp.write_text(version + "\n", encoding="utf-8")
    fsync_path(tmp)
    os.replace(tmp, root / LATEST)
    fsync_path(root)


def resolve(path: Path) -> Path:
    """Turn an artifact root (with ``LATEST``) or a version directory into a version directory."""
    if (path / MANIFEST).is_file():
        return path
    latest = path / LATEST
    if not latest.is_file():
        raise ArtifactError(
            f"{path}: neither a version directory ({MANIFEST}) nor a root ({LATEST})"
        )
    version = latest.read_text(encoding="utf-8").strip()
    if not version or "/" in version or version.startswith("."):
        raise ArtifactError(f"{latest}: malformed version name {version!r}")
    return path / version


def read_manifest(version_dir: Path) -> Manifest:
    """Read and check a version's manifest (schema and every field's type)."""
    path = version_dir / MANIFEST
    try:
        return Manifest.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from exc
    except ManifestError as exc:
        raise ArtifactError(f"{path}: {exc}") from exc


def verify(version_dir: Path, manifest: Manifest) -> None:
    """Check every file's size and sha256 against the manifest."""
    for name, entry in manifest.files.items():
        p = version_dir / name
        if not p.is_file():
            raise ArtifactError(f"{p}: missing (listed in {MANIFEST})")
        if p.stat().st_size != entry.bytes:
            raise ArtifactError(f"{p}: {p.stat().st_size} bytes, manifest says {entry.bytes}")
        if _sha256(p) != entry.sha256:
            raise ArtifactError(f"{p}: sha256 mismatch, the file is corrupted")


def load(
    path: Path, *, expected_dimension: int | None = None, shard: int | None = None
) -> Artifact:
    """Load and verify a version (or the ``LATEST`` version of a root).

    Args:
        path: artifact root, version directory, or a shard's directory.
        expected_dimension: refuse any other dimension.
        shard: which shard of a sharded version to load (None: the version is not sharded).

    Raises:
        ArtifactError: missing files, checksum mismatch, wrong format or dimension, a sharded
            version without ``shard`` or the other way round.
    """
    version_dir = resolve(path)
    manifest = read_manifest(version_dir)
    if manifest.shards is not None or shard is not None:
        version_dir, manifest = _shard_of_version(version_dir, manifest, shard)
    verify(version_dir, manifest)
    d = manifest.dimension
    if expected_dimension is not None and d != expected_dimension:
        raise ArtifactError(f"{version_dir}: dimension {d}, expected {expected_dimension}")
    import faiss  # here: reading manifests (adindex info) needs no FAISS

    try:
        index = faiss.read_index(str(version_dir / INDEX_FILE))
    except RuntimeError as exc:
        raise ArtifactError(f"{version_dir / INDEX_FILE}: FAISS cannot read it: {exc}") from exc
    ads = read_ads(version_dir / ADS_FILE)
    stored = np.load(version_dir / EMBEDDINGS_FILE, mmap_mode="r")
    if index.d != d or stored.shape != (len(ads), d) or index.ntotal != len(ads):
        raise ArtifactError(
            f"{version_dir}: inconsistent artifact: index d={index.d} ntotal={index.ntotal}, "
            f"embeddings {stored.shape}, {len(ads)} ads, manifest dimension {d}"
        )
    xb = _refine_vectors(index)
    if xb is None:
        xb = stored
    else:  # one copy of the vectors in memory: the re-ranking stage's (checked against the file)
        rows = np.unique(np.linspace(0, len(ads) - 1, min(len(ads), 16)).astype(np.int64))
        # float16 rounds a unit vector's component by at most 2^-11 (to nearest, ties either way)
        tolerance = 0.0 if xb.dtype == np.float32 else 2.0**-11
        if len(ads) and not np.all(np.abs(xb[rows] - stored[rows]) <= tolerance):
            raise ArtifactError(
                f"{version_dir / EMBEDDINGS_FILE}: rows differ from the index's own vectors"
            )
    from indexer.pins import PinsError, load_pins  # here: FAISS-free readers stay light

    try:
        pins = load_pins(version_dir, manifest)
    except PinsError as exc:
        raise ArtifactError(str(exc)) from exc
    return Artifact(
        path=version_dir,
        manifest=manifest,
        index=index,
        ads=ads,
        embeddings=xb,
        pins=pins,
        shard=None if manifest.shards is None else manifest.shards.index,
    )


class _Borrowed:
    """Lends a numpy view of memory that FAISS owns, keeping its owner alive (``arr.base``)."""

    def __init__(self, owner: object, address: int, shape: tuple[int, int], typestr: str):
        self.owner = owner
        self.__array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (address, True),  # read-only
            "version": 3,
        }


def _refine_vectors(index: faiss.Index) -> np.ndarray | None:
    """The (n, d) vectors the re-ranking stage holds, as a read-only view of its memory.

    float32 for ``RFlat``, float16 for ``Refine(SQfp16)`` (its codes are IEEE half floats).
    Serving reads them for exact plans, shadow recall and validation instead of mapping
    embeddings.npy too: the vectors, held once. None for other index types.
    """
    import faiss

    from indexer.ann import vector_store

    stage = vector_store(index)
    if stage is None:
        return None
    n, d = int(stage.ntotal), int(stage.d)
    if isinstance(stage, faiss.IndexFlat):
        pointer, count, typestr = stage.get_xb(), n * d, "<f4"  # count of floats
    else:  # SQfp16: 2·d bytes of codes per vector
        pointer, count, typestr = stage.codes.data(), n * d * 2, "<f2"
    address = faiss.rev_swig_ptr(pointer, count).__array_interface__["data"][0]
    return np.asarray(_Borrowed(index, address, (n, d), typestr))


def shard_dir(version_dir: Path, shard: int) -> Path:
    """Where shard ``shard`` of a sharded version lives."""
    return version_dir / f"shard-{shard}"


def _shard_of_version(
    version_dir: Path, manifest: Manifest, shard: int | None
) -> tuple[Path, Manifest]:
    """The directory and manifest of one shard, vouched for by the version's manifest."""
    info = manifest.shards
    if info is None:
        raise ArtifactError(f"{version_dir}: not sharded; serve it without --shard")
    if info.index is not None:  # a shard's own directory was given
        if shard not in (None, info.index):
            raise ArtifactError(f"{version_dir}: is shard {info.index}, not shard {shard}")
        return version_dir, manifest
    if shard is None:
        raise ArtifactError(
            f"{version_dir}: sharded into {info.count}; load one shard (adindex serve "
            "--shard I) and put adindex root in front"
        )
    if not 0 <= shard < info.count:
        raise ArtifactError(f"{version_dir}: shard {shard} of {info.count} does not exist")
    sub = shard_dir(version_dir, shard)
    # The version's manifest vouches for the shard's manifest, which vouches for its files.
    listed = f"{sub.name}/{MANIFEST}"
    entry = manifest.files.get(listed)
    if entry is None:
        raise ArtifactError(f"{version_dir}: {MANIFEST} lists no {listed}")
    verify(version_dir, replace(manifest, files={listed: entry}))
    shard_manifest = read_manifest(sub)
    got = shard_manifest.shards
    if shard_manifest.version != manifest.version or got is None or got.index != shard:
        raise ArtifactError(f"{sub}: its {MANIFEST} is not shard {shard} of {manifest.version}")
    return sub, shard_manifest


def list_versions(root: Path) -> list[str]:
    """Published versions under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )
