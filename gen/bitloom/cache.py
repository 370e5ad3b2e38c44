"""The per-user cache of built simulation models (Verilator, the HLS C simulation) and the
lock that keeps parallel processes from building the same one twice."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("BITLOOM_CACHE") or Path.home() / ".cache" / "bitloom"
    return Path(root)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock so parallel test workers do not build the same model twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
