"""The per-user cache of figures that cost time to get and do not change between runs.

One JSON file per kind of figure in `$BPBENCH_CACHE` or the platform's cache directory
(platformdirs): `{"kind": ..., "entries": {key: entry}}`, written atomically under a lock. The key
says what an entry is valid for; a file that cannot be read counts as empty (it is rewritten), and
one that cannot be written leaves the figure in use for this run only (a read-only home must not
stop a run). What an entry holds is checked by its user (peak.FIELDS).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path
from typing import Any, Iterator

from bpbench.errors import BadInput


def cache_dir() -> Path:
    env = os.environ.get("BPBENCH_CACHE")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("bpbench"))


CACHE_LIMIT = 4 << 20      # bytes a cache file may hold: thousands of entries
LOCK_WAIT_S = 10.0


class Cache:
    """One cache file: `Cache("counts.json", "bpbench-count-cache")`.

    Read through bpbench's one reader (a regular file, bounded, nested at most config.MAX_DEPTH:
    a FIFO, a huge or a deeply nested file counts as empty); written under a lock (`NAME.lock`,
    fcntl.flock) that holds a read-merge-write, so runs storing at the same time keep each
    other's entries."""

    def __init__(self, file_name: str, kind: str):
        self.file_name, self.kind = file_name, kind

    @property
    def path(self) -> Path:
        return cache_dir() / self.file_name

    def entries(self) -> dict[str, Any]:
        from bpbench import config
        try:    # not strict: one bad number must not drop every entry (each user checks its own)
            doc = config.read_json(self.path, self.kind, CACHE_LIMIT, strict=False)
        except BadInput:
            return {}
        entries = doc.get("entries") if isinstance(doc, dict) else None
        return entries if isinstance(entries, dict) else {}

    def lookup(self, key: str) -> dict[str, Any] | None:
        entry = self.entries().get(key)
        return entry if isinstance(entry, dict) else None

    def store(self, key: str, entry: dict[str, Any]) -> Path | None:
        """Add `entry` under `key`; None when the cache cannot be written."""
        from bpbench.results import files as results
        path = self.path
        if path.exists() and not path.is_file():
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(path):
                entries = self.entries()
                entries[key] = entry
                # force: a damaged cache file is rewritten; a link to a file bpbench did not write is not
                results.write_json(path, {"kind": self.kind, "entries": entries}, self.kind,
                                   force=not path.is_symlink())
        except (OSError, BadInput):
            return None
        return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`.lock; OSError when it cannot be had within LOCK_WAIT_S."""
    import fcntl
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path.with_name(path.name + ".lock"), flags, 0o666)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(errno.EWOULDBLOCK, "the cache stayed locked") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)      # releases the lock
