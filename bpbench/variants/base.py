"""What every variant module provides, and the pieces they share.

A variant module defines `VARIANT`, an object with `info` (its VariantInfo) and
`learner(model, cfg, device)`, which returns a learner:

    step(x, y) -> loss     one update on a batch; the loss as a 0-d tensor (not read back)
    predict(x) -> output   what the model's module returns, without tracking gradients
    params() -> dict       the parameters under the names results report (live tensors)
    optimizer              a torch.optim optimizer, or None (manual)
    prepare(batches)       optional: one-time work before the clock starts (compile, capture)
    details() -> dict      optional: what the variant wants recorded (e.g. graph breaks)
    eager_step(x, y)       optional: the eager step whose FLOPs equal step's (compiled, graphed)

A step marks its parts with `bpbench.variants.phases.phase("forward" | "backward" | "update")`: no-ops
in the timed loop, named ranges for the FLOP count and `--profile-ops`.

`prime()` runs real steps before any timed step and then rewinds (`rewound()`) every parameter
and every optimizer state tensor in place, so the trajectory stays the sources' while one-time costs
(first-call allocations, compilation, CUDA graph capture) land outside the steady state.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from bpbench.errors import BadInput
from bpbench.variants.phases import phase


def make_optimizer(spec: tuple[str, dict[str, Any]], parameters: Iterable[Tensor], cfg: dict[str, Any],
                   **extra: Any) -> torch.optim.Optimizer:
    """The experiment's optimizer, with the variant's implementation choices (fused, foreach,
    capturable); torch refuses combinations it does not support (fused with foreach)."""
    name, kwargs = spec
    kwargs = {**kwargs, **extra}
    for impl in ("fused", "foreach"):
        if cfg.get(impl):
            kwargs[impl] = True
    try:
        return getattr(torch.optim, name)(parameters, **kwargs)
    except (RuntimeError, TypeError, ValueError) as e:   # e.g. fused=True unsupported on this torch/device
        raise BadInput(f"torch.optim.{name}({', '.join(f'{k}={v}' for k, v in extra.items() or kwargs.items())}) "
                       f"is not available here: {str(e).splitlines()[0]}") from None


class TorchLearner:
    """module(x) -> loss_fn -> zero_grad -> backward -> optimizer.step(): the textbook step."""

    def __init__(self, module: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 names: dict[str, Tensor]):
        self.module, self.loss_fn, self.optimizer = module, loss_fn, optimizer
        self._names = names

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        with phase("forward"):
            loss = self.loss_fn(self.module(x), y)
        with phase("backward"):
            self.optimizer.zero_grad()
            loss.backward()
        with phase("update"):
            self.optimizer.step()
        return loss.detach()

    # The textbook step, eager, whatever a subclass's step does (compiled, graph replay): the FLOP
    # count runs it, as FlopCounterMode sees the aten ops of eager code only.
    eager_step = step

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.module(x)

    def params(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self._names.items()}


def torch_learner(cls: type, module: nn.Module, model, cfg: dict[str, Any], **optim_extra: Any) -> TorchLearner:
    """A learner of class `cls` for `module`, with the model's loss and optimizer (one place for
    every torch.optim variant, so they differ only in what they do around the step)."""
    optimizer = make_optimizer(model.optimizer, module.parameters(), cfg, **optim_extra)
    return cls(module, model.loss_fn, optimizer, model.params(module))


@contextlib.contextmanager
def rewound(learner, sync: Callable[[], None] = lambda: None):
    """Whatever runs inside leaves every parameter and optimizer state tensor as it found them.

    Rewinding copies the saved values back into the same tensors (compiled graphs and captured
    CUDA graphs hold those tensors). Optimizer state created inside is zeroed, which is exactly
    the fresh state of the optimizers used here (SGD keeps none; Adam starts step, exp_avg and
    exp_avg_sq at zero).
    """
    params = list(learner.params().values())
    opt = getattr(learner, "optimizer", None)
    saved_params = [p.detach().clone() for p in params]
    # torch.optim keeps state per Parameter object: a stable key across the steps inside.
    saved_state = {} if opt is None else {
        p: {k: v.detach().clone() for k, v in st.items() if isinstance(v, Tensor)} for p, st in opt.state.items()}
    try:
        yield
    finally:
        sync()
        with torch.no_grad():
            for p, saved in zip(params, saved_params):
                p.copy_(saved)
            if opt is not None:
                for p, st in opt.state.items():
                    for k, v in st.items():
                        if isinstance(v, Tensor):
                            v.copy_(saved_state[p][k]) if k in saved_state.get(p, {}) else v.zero_()
                opt.zero_grad(set_to_none=not getattr(learner, "static_grads", False))
        sync()


def prime(learner, batches: list[tuple[Tensor, Tensor]], steps: int = 2,
          sync: Callable[[], None] = lambda: None) -> float:
    """Run `steps` real updates on each sample batch, then rewind in place; returns the seconds."""
    with rewound(learner, sync):
        t0 = time.perf_counter()
        for x, y in batches:
            for _ in range(steps):
                learner.step(x, y)
        sync()
        seconds = time.perf_counter() - t0
    return seconds
