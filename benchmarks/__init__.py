"""Benchmarks: argparse scripts that measure adindex (never imported by the packages)."""

from __future__ import annotations
