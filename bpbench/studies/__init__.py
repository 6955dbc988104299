"""Studies: comparisons that ask a question of their own, one module each.

`compare`, `report` and `plots` know nothing of any study: they iterate over this registry. A study
plans its cells (an experiment run in several settings), derives its section of the comparison
document from the finished cells, renders that section as tables and lines, and draws its plot.
This registry is torch-free (it is read while arguments are checked); a study's module is
imported only when it is used.

Each module provides:
    plan(devices, variants, entry, opts) -> list[Cell]    entry: its preset table; opts: its flags
    derive(cells) -> dict | None                          the document's section (None: no cells)
    render(section) -> list[Block]                        tables and lines (report.Tab, str)
    plot(section, out_dir) -> list[Path]                  PNGs (matplotlib, imported lazily)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Study:
    name: str                 # as typed: `bpbench compare width`
    section: str              # its key in the comparison document (and its module's name)
    experiment: str           # the experiment whose runs it plans
    flags: tuple[str, ...]    # the compare options that configure it (bad input for anything else)
    owns: tuple[str, ...]     # config keys it sets per cell (a --set of one of them is bad input)
    summary: str

    def load(self) -> ModuleType:
        return importlib.import_module(f"bpbench.studies.{self.section}")


REGISTRY: dict[str, Study] = {s.name: s for s in (
    Study("width", "width", "width", flags=("widths", "steps"), owns=("width", "epochs"),
          summary="seed 004 C-D: step time per hidden width H on each device, and the crossover"),
    Study("gd-sgd", "gd_sgd", "mnist01", flags=("batch_sizes", "updates"),
          owns=("batch_size", "updates", "epochs", "eval_every", "eval_every_updates", "warmup_steps"),
          summary="seed 004 F: full-batch GD vs mini-batch SGD at equal updates, on one evaluation grid"),
    Study("scaling", "scaling", "mnist01", flags=("nprocs", "updates"), owns=("nproc", "batch_size"),
          summary="data parallelism: step time, samples/s and efficiency at N = 1, 2, ... ranks, strong and weak"),
)}
