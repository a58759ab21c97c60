"""Test helpers: seeded data, brute-force ground truth, a fake embedder (imported by tests)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from indexer.ann import normalize
from indexer.records import AdRecord, Targeting

D = 32


class HashEmbedder:
    """Deterministic bag-of-words embedder: texts sharing words get similar vectors.

    Fast and model-free, for unit tests; the real model is exercised by the slow tests.
    """

    model_name = "hash-bow"

    def __init__(self, dimension: int = D):
        self._d = dimension

    @property
    def dimension(self) -> int:
        return self._d

    def _word(self, word: str) -> np.ndarray:
        return (
            np.random.default_rng(zlib.crc32(word.encode()))
            .standard_normal(self._d)
            .astype(np.float32)
        )

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self._d), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i] += self._word(word)
        return normalize(out)


def clustered_vectors(n: int, d: int = D, *, n_clusters: int = 20, seed: int = 1338) -> np.ndarray:
    """Seeded unit vectors around random centres: enough structure for IVF to be meaningful."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    x = centres[rng.integers(0, n_clusters, n)] + 0.6 * rng.standard_normal((n, d))
    return normalize(x.astype(np.float32))


def make_records(n: int, *, paused_every: int = 10, seed: int = 5) -> list[AdRecord]:
    """Records whose text is a few words drawn from a small vocabulary (for HashEmbedder)."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(200)]
    out = []
    for i in range(n):
        words = " ".join(rng.choice(vocab, size=6))
        out.append(
            AdRecord(
                ad_id=f"ad-{i:05d}",
                advertiser_id=f"adv-{i % 37:03d}",
                campaign_id=f"cmp-{i % 91:03d}",
                title=words,
                description=f"about {words}",
                creative_text="shop now",
                targeting=Targeting(countries=("US",)) if i % 3 == 0 else Targeting(),
                status="paused" if paused_every and i % paused_every == 7 else "active",
            )
        )
    return out
