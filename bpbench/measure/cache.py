"""The per-user cache of figures that cost time to get and do not change between runs.

One JSON file per kind of figure in `$BPBENCH_CACHE` or the platform's cache directory
(platformdirs): `{"kind": ..., "entries": {key: entry}}`, written atomically. The key says what
an entry is valid for; a file that cannot be read counts as empty (it is rewritten), and one that
cannot be written leaves the figure in use for this run only (a read-only home must not stop a run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    env = os.environ.get("BPBENCH_CACHE")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("bpbench"))


class Cache:
    """One cache file: `Cache("counts.json", "bpbench-count-cache")`."""

    def __init__(self, file_name: str, kind: str):
        self.file_name, self.kind = file_name, kind

    @property
    def path(self) -> Path:
        return cache_dir() / self.file_name

    def entries(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
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
        entries = self.entries()
        entries[key] = entry
        try:
            results.write_json(path, {"kind": self.kind, "entries": entries})
        except OSError:
            return None
        return path
