"""The bpbench command line: a thin Typer layer over the public API (bpbench.api).

Each command lives in its own module; importing them registers them, in this order, on the one app.
Keep torch out of every cli module's imports: `bpbench --help` and `bpbench list` must start fast.
"""

from __future__ import annotations

# The order they are imported in is the order --help lists them.
from bpbench.cli import run  # noqa: F401, I001  (each import registers its commands)
from bpbench.cli import compare  # noqa: F401, I001
from bpbench.cli import graph  # noqa: F401, I001
from bpbench.cli import listing  # noqa: F401, I001
from bpbench.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
