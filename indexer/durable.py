"""Durability on disk: the one fsync by path that publishing, caches and logs share."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path.

    A rename (or a new file's name) is only durable once the directory holding the name is
    synced too: call this on the directory after the rename.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
