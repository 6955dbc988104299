"""The one interface every experiment implements.

An experiment describes its model, data and loss once: `build(cfg, device)` returns a `Task`
(the `Model`, the training batches, how to evaluate). It never says how the model is trained;
a variant (bpbench.variants) turns the Model into a learner. Experiments with a hand-written
backward also offer a `GradCheckCase` for `bpbench gradcheck`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from bpbench.errors import BadInput
from bpbench.experiments import ExperimentInfo


@dataclass
class Model:
    """One model with its initial weights, loss and optimizer, in the forms variants need.

    - module: the torch module (initial weights set), trained by autograd variants
    - loss_fn: the torch loss applied to module(x)
    - optimizer: (torch.optim class name, keyword arguments), e.g. ("SGD", {"lr": 0.01})
    - params: the module's parameters under the names results report (w, b; layer1.weight, ...)
    - manual: builds the hand-written network from the same initial weights (offers "manual")
    - nn_module: builds a second module of nn layers alone (offers "nn_module")
    """
    module: nn.Module
    loss_fn: nn.Module
    optimizer: tuple[str, dict[str, Any]]
    params: Callable[[nn.Module], dict[str, Tensor]]
    manual: Callable[[], Any] | None = None
    nn_module: Callable[[], nn.Module] | None = None


@dataclass
class Task:
    """What an experiment hands the runner: a model, its training batches and its metrics.

    Metrics take the learner, whatever variant built it: `learner.predict(x)` returns what the
    model's module returns (probabilities for the sigmoid nets, logits for the softmax net).
    """
    model: Model
    batches: Any                                       # training.ResidentBatches / LoaderBatches
    samples: int                                       # training samples per epoch
    data: dict[str, Any]                               # name, sample counts, source, split
    evaluate: Callable[[Any], dict[str, float]] | None = None   # metrics during training
    metrics: Callable[[Any], dict[str, Any]] = field(default=lambda learner: {})   # final metrics
    extra: Callable[[Any], dict[str, Any]] = field(default=lambda learner: {})     # e.g. confusion
    # (learner, batches, samples, evaluate) -> the session the harness drives, when the experiment
    # needs more than training.SupervisedSession (mnist01 keeps the parameters its sources print from)
    session: Callable[..., Any] | None = None


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
    # What a final metric is, where its bare name would mislead (the run table's row labels).
    metric_names: dict[str, str] = {"train_loss": "loss after training"}

    def run_rows(self, result: dict[str, Any], metrics: dict[str, Any]) -> list[tuple[str, str]]:
        """Rows the run table shows instead of "final loss" (bce: before and after the step); pops
        from `metrics` what they show."""
        return []

    def run_tables(self, result: dict[str, Any]) -> list:
        """Tables (report.format.Tab) the run table is followed by (mnist01: confusion matrices)."""
        return []

    def build(self, cfg: dict[str, Any], device: torch.device) -> Task:
        raise NotImplementedError

    def gradcheck_case(self, cfg: dict[str, Any]) -> GradCheckCase:
        raise BadInput(f"{self.info.name} has no hand-written backward to check")

    def log_line(self, entry: dict[str, Any], epochs: int) -> str:
        """One progress line, in the sources' style: `Epoch [100/1000], Loss: 0.0076`."""
        extra = "".join(f", {k}: {v:.4f}" for k, v in entry.items()
                        if k not in ("epoch", "loss", "updates", "time_s") and isinstance(v, float))
        return f"Epoch [{entry['epoch']}/{epochs}], Loss: {entry['loss']:.4f}{extra}"
