"""Text embedded by the server as the served version embedded its ads (upserted ads, pin text).

The model is loaded on first use: the one given to ``create_server``, else
``ServerConfig.model``, else the installed all-MiniLM-L6-v2, which may only embed for a
version built with that model. The embedder must be the version's own (its manifest's
``model.embedder``: model, backend, precision, model-file hash): the server loads the same
backend and precision, and refuses to mix vectors from another embedder into the version.
"""

from __future__ import annotations

import threading
from pathlib import Path

from indexer.embedding import (
    DEFAULT_MODEL_NAME,
    Embedder,
    SentenceTransformerEmbedder,
    backend_of,
    embedder_identity,
)
from indexer.manifest import ModelInfo
from retrieval.errors import FailedPrecondition, InvalidArgument
from retrieval.searcher import Searcher


class TextEmbedder:
    """The server's model, shared by AdminService (upserts) and RetrievalService (pin text)."""

    def __init__(self, embedder: Embedder | None = None, model: Path | None = None):
        self._given = embedder
        self._model = model
        self._by_identity: dict[str, Embedder] = {}
        self._lock = threading.Lock()  # two first calls must not load the model twice

    def for_version(self, searcher: Searcher, field: str) -> Embedder:
        """The model to embed text for ``searcher``'s version.

        Args:
            searcher: the version the vectors are for.
            field: the request field that carries the text (named in errors).

        Raises:
            InvalidArgument: the version was built with a model this server cannot load.
            FailedPrecondition: the server's model gives vectors of another dimension.
        """
        model = searcher.artifact.manifest.model
        with self._lock:
            embedder = self._by_identity.get(model.embedder) or self._load(model, field)
        if embedder.dimension != searcher.dimension:
            raise FailedPrecondition(
                f"the server's model gives {embedder.dimension}-d vectors, the index is "
                f"{searcher.dimension}-d"
            )
        return embedder

    def _load(self, model: ModelInfo, field: str) -> Embedder:
        """The embedder for ``model`` (the one given, or a matching one loaded); holds the lock."""
        if self._given is not None:
            embedder: Embedder = self._given
        else:
            if self._model is None and model.name != DEFAULT_MODEL_NAME:
                raise InvalidArgument(
                    field,
                    f"this index was built with model {model.name!r}, which this server "
                    "cannot embed with; send embeddings, or start the server with --model",
                )
            backend, quantize = backend_of(model.embedder)
            try:
                embedder = SentenceTransformerEmbedder(
                    self._model, backend=backend, quantize=quantize
                )
            except (OSError, ValueError, RuntimeError) as exc:
                raise FailedPrecondition(f"the server cannot load its model: {exc}") from exc
        if model.embedder and embedder_identity(embedder) != model.embedder:
            raise FailedPrecondition(
                f"this version's ads were embedded by {model.embedder}, this server embeds with "
                f"{embedder_identity(embedder)}: its vectors must not be mixed in; send "
                "embeddings, or serve with the model that built the version (--model)"
            )
        self._by_identity[model.embedder] = embedder
        return embedder
