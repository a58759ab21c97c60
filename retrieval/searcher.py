"""Search one loaded artifact: approximate neighbours among eligible ads only.

Eligibility (active status) is applied inside FAISS with an ``IDSelectorBitmap`` rather than by
post-filtering, so paused ads never take a slot in the top k and never come back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

from indexer.artifact import Artifact
from retrieval.errors import DimensionMismatch, InvalidArgument

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hits:
    """Search results for one query, best first."""

    ids: np.ndarray  # (m,) int64 FAISS ids (row numbers of the artifact), m <= k
    scores: np.ndarray  # (m,) float32 inner products


def _bitmap(mask: np.ndarray) -> np.ndarray:
    # IDSelectorBitmap reads bit (i & 7) of byte i >> 3: little bit order.
    return np.packbits(mask.astype(bool), bitorder="little")


class Searcher:
    """Thread-safe search over one artifact (the index is only read; parameters are per call)."""

    def __init__(self, art: Artifact, *, max_k: int = 1000):
        self.artifact = art
        self.max_k = max_k
        search = art.manifest["search"]
        self.default_nprobe = int(search["nprobe"])
        self.k_factor = int(search["k_factor"])
        self.min_rerank = int(search.get("min_rerank", 0))
        self.nlist = int(art.manifest["index"]["nlist"])
        self.ntotal = int(art.index.ntotal)
        self._has_refine = isinstance(faiss.downcast_index(art.index), faiss.IndexRefine)
        active = np.fromiter(
            (a.status == "active" for a in art.ads), dtype=bool, count=len(art.ads)
        )
        self.active_count = int(active.sum())
        # The selector keeps a raw pointer into this array: it must live as long as the searcher.
        self._active_bits = _bitmap(active)
        self._active_sel = faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(self._active_bits))

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def dimension(self) -> int:
        return self.artifact.dimension

    def check_query(self, user_embedding: np.ndarray) -> np.ndarray:
        """Validate and L2-normalise one query; returns shape (1, d) float32."""
        x = np.asarray(user_embedding, dtype=np.float32).reshape(1, -1)
        if x.shape[1] == 0:
            raise InvalidArgument("user_embedding", "is empty")
        if x.shape[1] != self.dimension:
            raise DimensionMismatch(
                "user_embedding",
                f"has {x.shape[1]} values, the index dimension is {self.dimension}",
            )
        bad = ~np.isfinite(x[0])
        if bad.any():
            raise InvalidArgument(
                "user_embedding", f"value at position {int(np.argmax(bad))} is not finite"
            )
        norm = float(np.linalg.norm(x))
        if norm == 0.0:
            raise InvalidArgument(
                "user_embedding", "is the zero vector, which has no direction to search"
            )
        return x / norm

    def _params(self, nprobe: int, k: int, sel: faiss.IDSelector) -> faiss.SearchParameters:
        # Keyword arguments, not attribute assignment: FAISS's Python wrapper then keeps the
        # nested objects alive (the C++ structs hold raw pointers). Its type stubs lack them.
        ivf = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)  # type: ignore[call-arg]
        if not self._has_refine:
            return ivf
        return faiss.IndexRefineSearchParameters(  # type: ignore[call-arg]
            k_factor=max(float(self.k_factor), self.min_rerank / k), base_index_params=ivf, sel=sel
        )

    def search(self, user_embedding: np.ndarray, k: int, nprobe: int = 0) -> Hits:
        """Top-k eligible ads for one user embedding.

        Args:
            user_embedding: shape (d,) or (1, d), any scale; it is normalised here.
            k: candidates wanted, in [1, max_k].
            nprobe: lists to probe, in [0, nlist]; 0 means the artifact's default.

        Returns:
            At most k hits (fewer only when fewer eligible ads are reachable).
        """
        if not 1 <= k <= self.max_k:
            raise InvalidArgument("k", f"must be in [1, {self.max_k}], got {k}")
        if not 0 <= nprobe <= self.nlist:
            raise InvalidArgument(
                "nprobe", f"must be in [0, {self.nlist}] (0 = default), got {nprobe}"
            )
        xq = self.check_query(user_embedding)
        k = min(k, self.ntotal)
        params = self._params(nprobe or self.default_nprobe, k, self._active_sel)
        D, I = self.artifact.index.search(xq, k, params=params)
        keep = I[0] >= 0  # FAISS pads with -1 when fewer than k eligible ids were reached
        return Hits(ids=I[0][keep], scores=D[0][keep])
