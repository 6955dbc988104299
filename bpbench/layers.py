"""Hand-written layers: each backward sits right beside its forward (seed 001, chapter 5).

No autograd inside: every gradient below is written out by hand on plain torch tensors, so the
layers run on any device and in any dtype. A layer remembers what its backward needs during
forward. Parameter layers keep `params` and, after backward, `grads` under the same names.
Weights use nn.Linear's (out, in) layout so they can be copied to and from torch modules.

Each layer's `keeps(inputs, needs_grad)` says, from shapes alone, what its backward must have
from the forward pass, by the rules autograd applies (bpbench.graph.keeps compares that formula
with what autograd and these layers really hold): "input0", "output", "param:weight", or
(name, (shape, dtype)) for a tensor the layer makes itself. `inputs` are the (shape, dtype) of
the forward's positional inputs, `needs_grad` whether each needs a gradient (data does not).
"""

from __future__ import annotations

import torch
from torch import Tensor


class Mul:
    """z = x * y."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dout):
        return dout * self.y, dout * self.x   # swap the inputs

    def keeps(self, inputs, needs_grad):
        # dx needs y and dy needs x: "the multiply node must keep its forward inputs" (seed 001)
        return [f"input{1 - i}" for i in (0, 1) if needs_grad[i]]


class Add:
    """z = x + y."""

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout, dout                     # passes the gradient through

    def keeps(self, inputs, needs_grad):
        return []                             # nothing: the gradient passes through unchanged


class ReLU:
    def forward(self, x: Tensor) -> Tensor:
        self.mask = x <= 0
        return x.masked_fill(self.mask, 0)

    def backward(self, dout: Tensor) -> Tensor:
        return dout.masked_fill(self.mask, 0)  # no signal where the input was <= 0

    def keeps(self, inputs, needs_grad):
        return ["output"]     # autograd keeps the output (its sign is the mask); this layer a bool mask


class Sigmoid:
    def forward(self, x: Tensor) -> Tensor:
        self.out = torch.sigmoid(x)
        return self.out

    def backward(self, dout: Tensor) -> Tensor:
        return dout * (1.0 - self.out) * self.out   # dy/dx = y (1 - y)

    def keeps(self, inputs, needs_grad):
        return ["output"]


class Affine:
    """y = x W^T + b for a batch x of shape (N, in)."""

    def __init__(self, weight: Tensor, bias: Tensor):
        self.params = {"weight": weight, "bias": bias}
        self.grads: dict[str, Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        self.x = x
        return torch.addmm(self.params["bias"], x, self.params["weight"].t())

    def backward(self, dout: Tensor, need_dx: bool = True) -> Tensor | None:
        self.grads["weight"] = dout.t().mm(self.x)
        self.grads["bias"] = dout.sum(0)         # the bias was added to every row
        # The first layer's input is data: skip its gradient, as autograd does.
        return dout.mm(self.params["weight"]) if need_dx else None

    def keeps(self, inputs, needs_grad):
        # dW = dout^T x needs the input; dx = dout W the weight, only when x needs a gradient
        return ["input0"] + (["param:weight"] if needs_grad[0] else [])


class SoftmaxWithLoss:
    """Softmax then mean cross-entropy against integer labels t of shape (N,)."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.t = t
        logp = x - x.logsumexp(dim=1, keepdim=True)      # stable log-softmax
        self.y = logp.exp()
        return -logp.gather(1, t.view(-1, 1)).mean()

    def output(self, x: Tensor) -> Tensor:
        return x          # the logits, as the matching torch module (no softmax layer) returns

    def backward(self, dout=1.0) -> Tensor:
        dx = self.y.clone()
        dx[torch.arange(len(self.t), device=dx.device), self.t] -= 1.0   # y - onehot(t)
        return dx * (dout / len(self.t))

    def keeps(self, inputs, needs_grad):
        return [("y", inputs[0]), "input1"]          # the softmax and the labels


class SigmoidBCE:
    """Sigmoid then mean binary cross-entropy on logits x.

    Mathematically dL/dx = (sigmoid(x) - t) / N. The backward takes the chain rule's two steps,
    dL/dy then dy/dx, with the same float32 arithmetic as torch's BCELoss and Sigmoid, so the
    manual and autograd variants stay equal to ~1e-7 over thousands of updates, not just close.
    """

    def output(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)   # probabilities, as the matching module (ending in nn.Sigmoid)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.t = t
        self.y = torch.sigmoid(x)
        # torch.nn.BCELoss clamps each log at -100; do the same so huge logits match it.
        log_y = self.y.log().clamp(min=-100)
        log_1my = (1 - self.y).log().clamp(min=-100)
        return -(t * log_y + (1 - t) * log_1my).mean()

    def backward(self, dout=1.0) -> Tensor:
        y, t = self.y, self.t
        dy = (y - t) / ((1 - y) * y).clamp_min(1e-12) * dout / t.numel()   # dL/dy (BCE)
        return dy * (1 - y) * y                                             # dy/dx (sigmoid)

    def keeps(self, inputs, needs_grad):
        return [("y", inputs[0]), "input1"]          # sigmoid(x) and the targets


class MeanSquaredError:
    """Mean of (x - t)^2 over every element, as torch.nn.MSELoss; dL/dx = 2 (x - t) / n."""

    def output(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.x, self.t = x, t
        return ((x - t) ** 2).mean()

    def backward(self, dout=1.0) -> Tensor:
        return (2.0 / self.x.numel()) * (self.x - self.t) * dout   # torch's mse_loss_backward order

    def keeps(self, inputs, needs_grad):
        return ["input0", "input1"]


class Network:
    """Layers applied in order, then a loss layer; backward walks the layers in reverse.

    `named` pairs a name with each layer; parameters come out as "<name>.<param>" (e.g.
    "layer1.weight"), the names torch modules use.
    """

    def __init__(self, named: list[tuple[str, object]], loss_layer):
        self.named = named
        self.loss_layer = loss_layer

    def forward(self, x: Tensor) -> Tensor:
        for _, layer in self.named:
            x = layer.forward(x)
        return x

    def loss(self, x: Tensor, t: Tensor) -> Tensor:
        return self.loss_layer.forward(self.forward(x), t)

    def predict(self, x: Tensor) -> Tensor:
        """What the matching torch module returns for x (the loss layer's output transform)."""
        return self.loss_layer.output(self.forward(x))

    def backward(self) -> None:
        dout = self.loss_layer.backward(1.0)
        for _, layer in reversed(self.named[1:]):
            dout = layer.backward(dout)
        first = self.named[0][1]
        first.backward(dout, need_dx=False) if isinstance(first, Affine) else first.backward(dout)

    def layers(self) -> list[tuple[str, object]]:
        """Every layer in forward order, the loss layer last (what bpbench.graph draws)."""
        return [*self.named, ("loss", self.loss_layer)]

    def params(self) -> dict[str, Tensor]:
        return {f"{n}.{k}": v for n, layer in self.named for k, v in getattr(layer, "params", {}).items()}

    def grads(self) -> dict[str, Tensor]:
        return {f"{n}.{k}": v for n, layer in self.named for k, v in getattr(layer, "grads", {}).items()}
