"""Data sets bpbench reads. Torch-free here: where data lives is known before torch is imported."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """Where full MNIST lives unless --data-dir says otherwise: $BPBENCH_DATA, else the platform's
    user cache directory (~/.cache/bpbench on Linux)."""
    env = os.environ.get("BPBENCH_DATA")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("bpbench"))
