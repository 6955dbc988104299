"""shopping: seed 001's computational graphs of a purchase, forward and backward.

Seed 001 (section 5.4) buys 2 apples at 100 with a 10 % tax (price 220), then adds 3 oranges at
150 (price 715), with its multiply and add layers: the forward pass computes the price, the
backward pass the price's derivative with respect to every price, count and the tax. Every input
is a parameter here, since the seed differentiates with respect to all of them; there is no data
and nothing to learn. A run is the one step the seed takes: forward, backward, and an update that
the default lr of 0 leaves at the seed's values (`--lr` moves each input against its gradient).

The arithmetic is the seed's: float64 (Python's floats), so the digits it prints reproduce,
220.00000000000003 and 110.00000000000001 included.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bpbench import layers as L
from bpbench import variants
from bpbench.errors import BadInput
from bpbench.experiments import REGISTRY
from bpbench.experiments.base import Experiment, GradCheckCase, Model, Task
from bpbench.training import make_batches

PURCHASES = {
    "apple": {"apple": 100.0, "apple_num": 2.0, "tax": 1.1},
    "apple-orange": {"apple": 100.0, "apple_num": 2.0, "orange": 150.0, "orange_num": 3.0, "tax": 1.1},
}
# What seed 001 prints: print(price), then the gradients.
PRINTED = {
    "apple": {"price": 220.00000000000003,
              "grads": {"apple": 2.2, "apple_num": 110.00000000000001, "tax": 200}},
    "apple-orange": {"price": 715.0000000000001,
                     "grads": {"apple_num": 110.00000000000001, "apple": 2.2, "orange": 3.3000000000000003,
                               "orange_num": 165.0, "tax": 650}},
}


def inputs(data: str, device="cpu") -> dict[str, Tensor]:
    if data not in PURCHASES:
        raise BadInput(f"unknown data set {data!r} for shopping (choose from: {', '.join(PURCHASES)})")
    return {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in PURCHASES[data].items()}


class ShoppingNet:
    """A purchase as seed 001 writes it with MulLayer and AddLayer (bpbench.layers.Mul, Add)."""
    result_name = "price"

    def __init__(self, p: dict[str, Tensor]):
        self.p = p
        self._grads: dict[str, Tensor] = {}

    def layers(self) -> list[tuple[str, object]]:
        return [(k, v) for k, v in vars(self).items() if k.endswith("_layer")]

    def params(self) -> dict[str, Tensor]:
        return self.p

    def grads(self) -> dict[str, Tensor]:
        return self._grads

    def predict(self, x: Tensor) -> Tensor:
        return self.loss(x, None)


class Apple(ShoppingNet):
    """2 apples at 100, tax 1.1 (seed 001's buy_apple.py)."""

    def __init__(self, p):
        super().__init__(p)
        self.mul_apple_layer = L.Mul()
        self.mul_tax_layer = L.Mul()

    def loss(self, x, y) -> Tensor:
        p = self.p
        apple_price = self.mul_apple_layer.forward(p["apple"], p["apple_num"])
        return self.mul_tax_layer.forward(apple_price, p["tax"])

    def backward(self) -> None:
        dprice = 1
        dapple_price, dtax = self.mul_tax_layer.backward(dprice)
        dapple, dapple_num = self.mul_apple_layer.backward(dapple_price)
        self._grads = {"apple": dapple, "apple_num": dapple_num, "tax": dtax}


class AppleOrange(ShoppingNet):
    """2 apples at 100 and 3 oranges at 150, tax 1.1 (seed 001's buy_apple_orange.py)."""

    def __init__(self, p):
        super().__init__(p)
        self.mul_apple_layer = L.Mul()
        self.mul_orange_layer = L.Mul()
        self.add_apple_orange_layer = L.Add()
        self.mul_tax_layer = L.Mul()

    def loss(self, x, y) -> Tensor:
        p = self.p
        apple_price = self.mul_apple_layer.forward(p["apple"], p["apple_num"])
        orange_price = self.mul_orange_layer.forward(p["orange"], p["orange_num"])
        all_price = self.add_apple_orange_layer.forward(apple_price, orange_price)
        return self.mul_tax_layer.forward(all_price, p["tax"])

    def backward(self) -> None:
        dprice = 1
        dall_price, dtax = self.mul_tax_layer.backward(dprice)
        dapple_price, dorange_price = self.add_apple_orange_layer.backward(dall_price)
        dorange, dorange_num = self.mul_orange_layer.backward(dorange_price)
        dapple, dapple_num = self.mul_apple_layer.backward(dapple_price)
        self._grads = {"apple": dapple, "apple_num": dapple_num, "orange": dorange,
                       "orange_num": dorange_num, "tax": dtax}


NETS = {"apple": Apple, "apple-orange": AppleOrange}


class Bill(nn.Module):
    """The same purchase for autograd: every price, count and the tax an nn.Parameter (float64)."""

    def __init__(self, p: dict[str, Tensor]):
        super().__init__()
        for k, v in p.items():
            setattr(self, k, nn.Parameter(v.clone()))

    def forward(self, x: Tensor) -> Tensor:
        total = self.apple * self.apple_num
        if hasattr(self, "orange"):
            total = total + self.orange * self.orange_num
        return total * self.tax


class Price(nn.Module):
    """The "loss" is the price itself: backward differentiates it, starting from dprice = 1."""

    def forward(self, price: Tensor, target: Tensor) -> Tensor:
        return price


def named(module: nn.Module) -> dict[str, Tensor]:
    return dict(module.named_parameters())


def step_trace(learner_net: bool, data: str, lr: float, device) -> dict:
    """The seed's one step (copies): the price, every gradient, and the inputs after the update."""
    p = inputs(data, device)
    if learner_net:
        net = NETS[data](p)
        price = net.loss(None, None)
        net.backward()
        grads = net.grads()
    else:
        module = Bill(p)
        price = module(None)
        price.backward()
        p, grads = named(module), {k: v.grad for k, v in named(module).items()}
    after = {k: float(v.detach()) - lr * float(grads[k]) for k, v in p.items()}
    return {"forward": {"price": float(price.detach())},
            "reference": {"price": PRINTED[data]["price"]},
            "grads": {k: float(grads[k]) for k in p},
            "params_after": after, "source": "seed 001"}


class Shopping(Experiment):
    info = REGISTRY["shopping"]
    metric_names = {"price": "price after the step"}

    def run_rows(self, result, metrics) -> list[tuple[str, str]]:
        """The step as seed 001 prints it: the price, then each input's gradient, every digit."""
        tr = result.get("trace")
        if not tr:
            return []
        printed = PRINTED[result["config"]["data"]]
        grads = " · ".join(f"{k} {v!r}" for k, v in tr["grads"].items())
        return [("price", f"{tr['forward']['price']!r} (seed 001 prints {printed['price']!r})"),
                ("gradients", grads)]

    def build(self, cfg, device) -> Task:
        p = inputs(cfg["data"], device)
        make_net = NETS[cfg["data"]]
        model = Model(module=Bill(p), loss_fn=Price(), optimizer=("SGD", {"lr": cfg["lr"]}), params=named,
                      manual=lambda: make_net({k: v.clone() for k, v in p.items()}))
        none = torch.zeros(1, 0, dtype=torch.float64, device=device)     # a purchase reads no data
        hand_written = variants.get(cfg["variant"]).needs == "manual"
        trace = step_trace(hand_written, cfg["data"], cfg["lr"], device)

        def metrics(learner):
            with torch.no_grad():
                return {"price": float(learner.predict(none))}

        desc = ", ".join(f"{k} {v:g}" for k, v in PURCHASES[cfg["data"]].items())
        return Task(model, make_batches("resident", none, none, "full", cfg["seed"]), 1,
                    {"name": cfg["data"], "description": f"seed 001: {desc}", "n_train": 1, "n_test": 0},
                    metrics=metrics, extra=lambda learner: {"trace": trace})

    def gradcheck_case(self, cfg) -> GradCheckCase:
        p = inputs(cfg["data"])
        module = Bill(p)

        def loss(params):
            return torch.func.functional_call(module, params, (None,))

        def manual(params):
            net = NETS[cfg["data"]]({k: v.clone() for k, v in params.items()})
            net.loss(None, None)
            net.backward()
            return net.grads()

        return GradCheckCase(p, loss, manual, note=f"seed 001's {cfg['data']} purchase")


EXPERIMENT = Shopping()
