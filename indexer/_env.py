"""Process settings that must be in place before FAISS (and its OpenMP runtime) loads."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads otherwise busy-wait and steal the cores from gRPC workers and from the
# next FAISS call: on a 2-core machine that slowed PQ training by an order of magnitude.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tokenizers' own thread pool does not survive fork and warns about it; we embed in one thread pool.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray 2.60 turns token authentication on for `ray start` clusters, but a driver that joins one
# with RAY_AUTH_MODE unset sends no token and is refused (InvalidAuthToken, measured); token
# mode also joins clusters without it. Ray reads the mode when it loads, hence here.
if "RAY_AUTH_MODE" not in os.environ and (
    os.environ.get("RAY_AUTH_TOKEN")
    or Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").is_file()
):
    os.environ["RAY_AUTH_MODE"] = "token"
