"""The one interface every experiment implements.

An experiment turns a resolved config into a `Built` run on a device: a session the harness
drives (harness.loop.Trainable), a description of its data, and how to read its final metrics.
Experiments with a hand-written backward also offer a `GradCheckCase` for `bpbench gradcheck`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from bpbench.errors import BadInput
from bpbench.experiments import ExperimentInfo


@dataclass
class Built:
    session: Any                                  # harness.loop.Trainable with .params()
    data: dict[str, Any]                          # name, sample counts, source, split
    metrics: Callable[[], dict[str, Any]] = dict  # final metrics after training
    extra: Callable[[], dict[str, Any]] = dict    # experiment-specific result keys (e.g. confusion)


@dataclass
class GradCheckCase:
    """The same loss three ways, for one fixed batch and float64 parameters.

    `loss(params)` is built from torch ops (autograd differentiates it; central differences
    evaluate it); `manual(params)` runs the hand-written backward and returns its gradients.
    """
    params: dict[str, Tensor]
    loss: Callable[[dict[str, Tensor]], Tensor]
    manual: Callable[[dict[str, Tensor]], dict[str, Tensor]]
    note: str = ""


class Experiment:
    info: ExperimentInfo

    def build(self, cfg: dict[str, Any], device: torch.device) -> Built:
        raise NotImplementedError

    def gradcheck_case(self, cfg: dict[str, Any]) -> GradCheckCase:
        raise BadInput(f"{self.info.name} has no hand-written backward to check")

    def log_line(self, entry: dict[str, Any], epochs: int) -> str:
        """One progress line, in the sources' style: `Epoch [100/1000], Loss: 0.0076`."""
        extra = "".join(f", {k}: {v:.4f}" for k, v in entry.items()
                        if k not in ("epoch", "loss", "updates", "time_s") and isinstance(v, float))
        return f"Epoch [{entry['epoch']}/{epochs}], Loss: {entry['loss']:.4f}{extra}"
