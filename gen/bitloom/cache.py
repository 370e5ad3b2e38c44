"""The per-user cache of built simulation models (Verilator, the HLS C simulation), the
lock that keeps parallel processes from building the same one twice, and the pruning that
keeps a cache folder under ``BITLOOM_CACHE_MAX_GB`` (least recently used entries first)."""

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


#: the default ceiling of one cache folder (``BITLOOM_CACHE_MAX_GB`` overrides it)
DEFAULT_MAX_GB = 8.0


def max_bytes() -> int:
    """The size a cache folder is pruned to, from ``BITLOOM_CACHE_MAX_GB``."""
    raw = os.environ.get("BITLOOM_CACHE_MAX_GB", "")
    try:
        gigabytes = float(raw) if raw else DEFAULT_MAX_GB
    except ValueError:
        gigabytes = DEFAULT_MAX_GB
    return int(gigabytes * 2**30)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def prune(folder: Path, marker: str, limit: int | None = None) -> list[Path]:
    """Delete the least recently used entries of ``folder`` (sub-folders holding ``marker``,
    whose time stamp a user of the entry refreshes) until the folder is under ``limit``
    bytes. An entry whose ``<name>.lock`` another process holds is left alone. Returns the
    deleted entries."""
    import shutil

    limit = max_bytes() if limit is None else limit
    entries = sorted((p for p in folder.iterdir() if (p / marker).exists()),
                     key=lambda p: (p / marker).stat().st_mtime)
    sizes = {p: folder_bytes(p) for p in entries}
    total = sum(sizes.values())
    deleted = []
    for entry in entries:
        if total <= limit:
            break
        lock = entry.with_suffix(".lock")
        with open(lock, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            try:
                shutil.rmtree(entry, ignore_errors=True)
                for sibling in folder.glob(f"{entry.name}.*"):
                    if sibling != lock:
                        sibling.unlink(missing_ok=True)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        total -= sizes[entry]
        deleted.append(entry)
    return deleted
