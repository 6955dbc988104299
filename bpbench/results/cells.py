"""A comparison's cells: what one cell runs (study, experiment, variant, device, overrides) and the key that names it.

Torch-free and training-free: planning, reports and saved documents share these nouns.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

# The overrides that tell runs of one experiment apart, in label order, with their short names:
# the common ones here; an experiment's own (width's "H") are added by its registry (Key.label).
LABEL_KEYS = {"data": "data", "batch_size": "batch"}


def cell_key(study: str, experiment: str, variant: str, device: str, label: str) -> str:
    """e.g. "matrix:mnist01/manual/cpu/batch=2048": unique within a comparison, stable across runs."""
    return f"{study}:{experiment}/{variant}/{device}" + (f"/{label}" if label else "")


@dataclass(frozen=True)
class Cell:
    study: str                  # "matrix" or a study's name
    experiment: str
    variant: str
    device: str
    overrides: tuple[tuple[str, Any], ...] = ()
    shown: tuple[str, ...] = ()  # further override keys the label names (those given by --set)
    tag: str = ""                # a study's own name for the run, first in the label ("strong N=2")
    reference: str | None = field(default=None, compare=False)   # key of its parity reference cell

    @property
    def label(self) -> str:
        """What tells this cell's run apart: "batch=32", "data=source, epochs=20", "H=500"."""
        o = dict(self.overrides)
        keys = [k for k in LABEL_KEYS if k in o] + [k for k in self.shown if k not in LABEL_KEYS]
        return ", ".join([self.tag] * bool(self.tag) + [f"{LABEL_KEYS.get(k, k)}={o[k]}" for k in keys])

    @property
    def key(self) -> str:
        return cell_key(self.study, self.experiment, self.variant, self.device, self.label)

    def argv(self, metric: str = "time") -> list[str]:
        args = [sys.executable, "-m", "bpbench", "run", self.experiment, "--variant", self.variant,
                "--device", self.device, "--json"] + (["--metric", metric] if metric != "time" else [])
        for k, v in self.overrides:
            args += ["--set", f"{k}={v}"]
        return args


def make_cell(study: str, experiment: str, variant: str, device: str, overrides: dict[str, Any],
              tag: str = "") -> Cell:
    return Cell(study, experiment, variant, device, tuple(sorted(overrides.items())), tag=tag)
