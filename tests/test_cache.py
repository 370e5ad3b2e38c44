"""The user cache stays under its ceiling: least recently used entries go first, an entry
another process holds is kept, and a finished Verilator build keeps only what runs."""

from __future__ import annotations

import fcntl
import os

from bitloom.cache import max_bytes, prune


def _entry(folder, name, size, used_at):
    entry = folder / name
    entry.mkdir()
    (entry / "payload").write_bytes(b"x" * size)
    (entry / "built").write_text(name)
    os.utime(entry / "built", (used_at, used_at))
    (folder / f"{name}.build.log").write_text("log")
    return entry


def test_prune_deletes_the_least_recently_used_entries_first(tmp_path):
    old = _entry(tmp_path, "old", 1000, 100)
    middle = _entry(tmp_path, "middle", 1000, 200)
    new = _entry(tmp_path, "new", 1000, 300)
    deleted = prune(tmp_path, "built", limit=2100)
    assert deleted == [old]
    assert not old.exists() and not (tmp_path / "old.build.log").exists()
    assert middle.exists() and new.exists()


def test_prune_keeps_an_entry_another_process_holds(tmp_path):
    busy = _entry(tmp_path, "busy", 1000, 100)
    idle = _entry(tmp_path, "idle", 1000, 200)
    with open(tmp_path / "busy.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        deleted = prune(tmp_path, "built", limit=1500)
    assert deleted == [idle]
    assert busy.exists()


def test_the_ceiling_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BITLOOM_CACHE_MAX_GB", "0.5")
    assert max_bytes() == 2**29
    monkeypatch.setenv("BITLOOM_CACHE_MAX_GB", "many")
    assert max_bytes() == 8 * 2**30
