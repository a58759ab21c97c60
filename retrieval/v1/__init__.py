"""Generated gRPC code for retrieval.v1 (from proto/ by `make proto`; do not edit)."""

from __future__ import annotations
