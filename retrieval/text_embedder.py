"""Text embedded by the server as the served version embedded its ads (upserted ads, pin text).

One model per server, loaded on first use: the one given to ``create_server``, else
``ServerConfig.model``, else the installed all-MiniLM-L6-v2, which may only embed for a
version built with that model.
"""

from __future__ import annotations

import threading
from pathlib import Path

from indexer.embedding import DEFAULT_MODEL_NAME, Embedder, SentenceTransformerEmbedder
from retrieval.errors import FailedPrecondition, InvalidArgument
from retrieval.searcher import Searcher


class TextEmbedder:
    """The server's model, shared by AdminService (upserts) and RetrievalService (pin text)."""

    def __init__(self, embedder: Embedder | None = None, model: Path | None = None):
        self._embedder = embedder
        self._model = model
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
            if self._embedder is None:
                if self._model is None and model.name != DEFAULT_MODEL_NAME:
                    raise InvalidArgument(
                        field,
                        f"this index was built with model {model.name!r}, which this server "
                        "cannot embed with; send embeddings, or start the server with --model",
                    )
                self._embedder = SentenceTransformerEmbedder(self._model)
            embedder = self._embedder
        if embedder.dimension != searcher.dimension:
            raise FailedPrecondition(
                f"the server's model gives {embedder.dimension}-d vectors, the index is "
                f"{searcher.dimension}-d"
            )
        return embedder
