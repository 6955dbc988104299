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

from bpbench import config as C
from bpbench.errors import BadInput


def batch_size_list(key: str, v) -> list:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise BadInput(f"{key} must be a list of batch sizes (full or N), got {v!r}")
    return [C.batch_size(key, i.strip() if isinstance(i, str) else i) for i in items]


# The options studies take, each declared once: `compare` offers each as a flag (--widths, ...),
# with its validator and help, and refuses one that no study in the comparison takes.
UPDATES = C.Key(C.positive_int, "updates per cell.", "Studies", metavar="N")


@dataclass(frozen=True)
class Study:
    name: str                 # as typed: `bpbench compare width`
    section: str              # its key in the comparison document (and its module's name)
    experiment: str           # the experiment whose runs it plans
    options: dict[str, C.Key]  # the compare options that configure it (bad input for anything else)
    owns: tuple[str, ...]     # config keys it sets per cell (a --set of one of them is bad input)
    summary: str

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(self.options)

    def load(self) -> ModuleType:
        return importlib.import_module(f"bpbench.studies.{self.section}")


def options() -> dict[str, tuple[C.Key, list[str]]]:
    """Every study option once: its key and the studies that take it (for compare's flags)."""
    out: dict[str, tuple[C.Key, list[str]]] = {}
    for study in REGISTRY.values():
        for name, key in study.options.items():
            out.setdefault(name, (key, []))[1].append(study.name)
    return out


REGISTRY: dict[str, Study] = {s.name: s for s in (
    Study("width", "width", "width", owns=("width", "epochs"), options={
              "widths": C.Key(C.int_list, "comma-separated H values.", "Studies", metavar="H,H,..."),
              "steps": C.Key(C.positive_int, "Adam steps per cell.", "Studies", metavar="N")},
          summary="seed 004 C-D: step time per hidden width H on each device, and the crossover"),
    Study("gd-sgd", "gd_sgd", "mnist01", options={
              "batch_sizes": C.Key(batch_size_list, "e.g. full,2048,256,32.", "Studies", metavar="B,B,..."),
              "updates": UPDATES},
          owns=("batch_size", "updates", "epochs", "eval_every", "eval_every_updates", "warmup_steps"),
          summary="seed 004 F: full-batch GD vs mini-batch SGD at equal updates, on one evaluation grid"),
    Study("scaling", "scaling", "mnist01", owns=("nproc", "batch_size"), options={
              "nprocs": C.Key(C.int_list, "ranks per cell, e.g. 1,2 (default: 1, 2, 4, ... up to the cores "
                                          "or GPUs).", "Studies", metavar="N,N,..."),
              "updates": UPDATES},
          summary="data parallelism: step time, samples/s and efficiency at N = 1, 2, ... ranks, strong and weak"),
)}
