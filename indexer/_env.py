"""Process settings that must be in place before FAISS (and its OpenMP runtime) loads."""

from __future__ import annotations

import os

# Idle OpenMP threads otherwise busy-wait and steal the cores from gRPC workers and from the
# next FAISS call: on a 2-core machine that slowed PQ training by an order of magnitude.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tokenizers' own thread pool does not survive fork and warns about it; we embed in one thread pool.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
