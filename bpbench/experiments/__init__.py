"""The registry of experiments: what each one is, without importing torch.

`bpbench list` and argument checking read this table; the training code of an experiment lives in
its own module (`bpbench.experiments.<name>`) and is imported only when it runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bpbench import config as C
from bpbench.errors import BadInput

if TYPE_CHECKING:
    from bpbench.experiments.base import Experiment


@dataclass(frozen=True)
class ExperimentInfo:
    name: str
    summary: str
    source: str
    variants: tuple[str, ...]          # the first is the default
    options: dict[str, C.Validator] = field(default_factory=dict)  # keys beyond config.COMMON_KEYS
    has_trace: bool = False

    @property
    def keys(self) -> dict[str, C.Validator]:
        return {**C.COMMON_KEYS, **self.options}

    def defaults(self) -> dict[str, Any]:
        return C.builtin(self.name)["defaults"]

    def load(self) -> "Experiment":
        """Import the experiment's module (and torch with it)."""
        return importlib.import_module(f"bpbench.experiments.{self.name}").EXPERIMENT


REGISTRY: dict[str, ExperimentInfo] = {
    info.name: info for info in [
        ExperimentInfo(
            name="linreg",
            summary="Linear regression y = wx + b: hand-written dw, db vs autograd + SGD vs nn.Linear",
            source="seeds 000 (x=1..4, y=2x+1) and 003 (30 points)",
            variants=("manual", "autograd", "nn"),
            options={"init": C.one_of("default", "zeros")},
        ),
        ExperimentInfo(
            name="bce",
            summary="The 2-2-1 sigmoid net with fixed weights, BCE loss, SGD lr 1, traced step by step",
            source="seed 002 (hand-computed forward values), layers of seed 001",
            variants=("manual", "autograd"),
            has_trace=True,
        ),
        ExperimentInfo(
            name="mnist01",
            summary="MNIST 0-vs-1 with a 784-32-1 MLP (or 0-9 with 784-50-10): GD vs mini-batch SGD",
            source="seed 004 section F (0 vs 1), seed 001 (two-layer softmax net)",
            variants=("autograd", "manual"),
            options={
                "loader": C.one_of("resident", "dataloader"),
                "shuffle": C.boolean,
                "replacement": C.boolean,
                "digits": C.one_of("0,1", "0-9"),
                "updates": C.positive_int,
                "data_dir": C.text,
                "download": C.boolean,
                "holdout": C.positive_float,
            },
        ),
        ExperimentInfo(
            name="width",
            summary="1-H-1 ReLU MLP trained with Adam: the CPU-vs-GPU width study",
            source="seed 004 sections C-D (H=500: CPU wins; H=200,000: GPU ~60x)",
            variants=("autograd",),
            options={"width": C.positive_int},
        ),
    ]
}


def get(name: str) -> ExperimentInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BadInput(f"unknown experiment {name!r} (choose from: {', '.join(REGISTRY)})") from None


def check_variant(info: ExperimentInfo, variant: str) -> str:
    if variant not in info.variants:
        raise BadInput(f"unknown variant {variant!r} for {info.name} "
                       f"(choose from: {', '.join(info.variants)})")
    return variant
