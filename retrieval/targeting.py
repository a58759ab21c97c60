"""Targeting masks: which artifact rows admit a user context (country, locale, device).

Ads share a few hundred distinct targeting specs, so each distinct spec is asked once
(``Targeting.admits``, the one definition of the semantics) and the answer is broadcast to
rows through a code array. Masks are cached per context: contexts repeat across requests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from indexer.artifact import AdMeta
from indexer.records import Targeting

Context = tuple[str, str, str]  # (country, locale, device); "" does not filter


class TargetingIndex:
    """Per-artifact: distinct targeting specs and a row -> spec code array."""

    def __init__(self, ads: Sequence[AdMeta], *, cache_size: int = 256):
        codes: dict[Targeting, int] = {}
        self._codes = np.fromiter(
            (codes.setdefault(a.targeting, len(codes)) for a in ads), dtype=np.int32, count=len(ads)
        )
        self._specs = list(codes)  # insertion order = code
        self._cache: OrderedDict[Context, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def distinct(self) -> int:
        return len(self._specs)

    def admits(self, context: Context) -> np.ndarray:
        """Read-only (n,) bool mask of the rows whose targeting admits ``context``."""
        with self._lock:
            mask = self._cache.get(context)
            if mask is not None:
                self._cache.move_to_end(context)
                return mask
        ok = np.array([t.admits(*context) for t in self._specs], dtype=bool)
        mask = ok[self._codes]
        mask.setflags(write=False)
        with self._lock:
            self._cache[context] = mask
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return mask
