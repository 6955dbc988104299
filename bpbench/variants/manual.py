"""manual: the hand-written backward, then the update written out too.

The experiment's `Model.manual()` builds a network of bpbench.layers (each backward beside its
forward) from the module's initial weights; no autograd runs. The update is the model's optimizer
by hand: plain SGD with torch.optim.SGD's arithmetic (one fused add), or Adam with
torch.optim.Adam's (width); a network that brings its own `update` keeps it (linreg keeps seed
000's `w -= lr * dw` so its printed digits reproduce exactly).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bpbench.errors import BadInput
from bpbench.variants import REGISTRY
from bpbench.variants.phases import phase


def sgd_update(params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
    """p <- p - lr * grad, in place, with torch.optim.SGD's arithmetic."""
    for name, p in params.items():
        p.add_(grads[name], alpha=-lr)


class HandOptimizer:
    """What the harness asks of an optimizer, by hand: `state` (tensors per parameter, which
    priming rewinds; a state made during priming is zeroed, its fresh value) and `zero_grad`
    (nothing to do: a hand-written backward overwrites its gradients)."""

    def __init__(self, lr: float):
        self.lr = lr
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass


class SGD(HandOptimizer):
    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        sgd_update(params, grads, self.lr)


class Adam(HandOptimizer):
    """Adam (Kingma & Ba) with torch.optim.Adam's defaults and its single-tensor arithmetic:

        m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(lr)
        self.betas, self.eps = betas, eps

    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        b1, b2 = self.betas
        for name, p in params.items():
            g = grads[name]
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = {"step": torch.zeros((), dtype=torch.float32),
                                      "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            st["step"] += 1
            t = st["step"].item()
            st["exp_avg"].lerp_(g, 1 - b1)                                # m
            st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)        # v
            step_size = self.lr / (1 - b1 ** t)                           # bias corrections
            denom = (st["exp_avg_sq"].sqrt() / (1 - b2 ** t) ** 0.5).add_(self.eps)
            p.addcdiv_(st["exp_avg"], denom, value=-step_size)


def hand_optimizer(model, variant: str) -> HandOptimizer:
    """The model's torch.optim optimizer, written out: SGD(lr) or Adam(lr) with its defaults."""
    name, kwargs = model.optimizer
    if name == "SGD" and set(kwargs) == {"lr"}:
        return SGD(kwargs["lr"])
    if name == "Adam" and set(kwargs) == {"lr"}:
        return Adam(kwargs["lr"])
    raise BadInput(f"the {variant} variant writes out SGD(lr) and Adam(lr); this model uses "
                   f"{name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})")


class ManualLearner:
    def __init__(self, net, optimizer: HandOptimizer):
        self.net, self.optimizer = net, optimizer
        self.lr = optimizer.lr

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        with phase("forward"):
            loss = self.net.loss(x, y)
        with phase("backward"):
            self.net.backward()
        with phase("update"):
            self.update()
        return loss

    def update(self) -> None:
        """Apply the gradients the backward left in the network (allreduce averages them first)."""
        if hasattr(self.net, "update"):
            self.net.update(self.lr)
        else:
            self.optimizer.update(self.net.params(), self.net.grads())

    def predict(self, x: Tensor) -> Tensor:
        return self.net.predict(x)

    def line_profile_targets(self) -> list[tuple[object, str]]:
        """--profile-lines: the step and the network's own loss, backward and update lines."""
        return [(self, "step")] + [(self.net, m) for m in ("loss", "backward", "update") if hasattr(self.net, m)]

    def params(self) -> dict[str, Tensor]:
        return self.net.params()


class Manual:
    info = REGISTRY["manual"]

    def learner(self, model, cfg, device) -> ManualLearner:
        return ManualLearner(model.manual(), hand_optimizer(model, self.info.name))


VARIANT = Manual()
