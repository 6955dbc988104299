"""manual: the hand-written backward, then p <- p - lr * grad.

The experiment's `Model.manual()` builds a network of bpbench.layers (each backward beside its
forward) from the module's initial weights; no autograd runs. The update is plain SGD with
torch.optim.SGD's arithmetic (one fused add), unless the network brings its own `update` (linreg
keeps seed 000's `w -= lr * dw` so its printed digits reproduce exactly).
"""

from __future__ import annotations

from torch import Tensor

from bpbench.errors import BadInput
from bpbench.variants import REGISTRY
from bpbench.variants.phases import phase


def sgd_update(params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
    """p <- p - lr * grad, in place, with torch.optim.SGD's arithmetic."""
    for name, p in params.items():
        p.add_(grads[name], alpha=-lr)


class ManualLearner:
    optimizer = None

    def __init__(self, net, lr: float):
        self.net, self.lr = net, lr

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
            sgd_update(self.net.params(), self.net.grads(), self.lr)

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
        return ManualLearner(model.manual(), plain_sgd_lr(model, self.info.name))


def plain_sgd_lr(model, variant: str) -> float:
    """The learning rate of the model's optimizer, which a hand-written update can only be if it is plain SGD."""
    name, kwargs = model.optimizer
    if name != "SGD" or set(kwargs) != {"lr"}:
        raise BadInput(f"the {variant} variant updates by plain SGD; this model uses {name}")
    return kwargs["lr"]


VARIANT = Manual()
