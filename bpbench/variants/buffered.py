"""buffered: a ReLU MLP's forward and backward written out into buffers allocated once.

Why it exists: at seed 004's width H = 200,000 every activation and gradient of the 1-H-1 net is
a 100 x H float32 tensor, 80 MB. Autograd allocates each one afresh every step, and on Linux an
allocation that large is fresh memory from the kernel (glibc serves it with mmap), so every step
also faults in and zeroes ~400 MB of pages: most of an eager step's time there, on top of the
traffic of the arithmetic itself. Here each tensor the step writes lives in a buffer allocated at
the first step of each batch size and reused after (`out=` and in-place ops), and the update is
torch.optim's fused Adam (one pass over each parameter and its moments).

The arithmetic is autograd's, op for op: addmm for each Linear, the ReLU's gradient masked by its
output (threshold_backward, as ReluBackward does), mse_loss's own backward. The parameters are the
module's own tensors, so predict and the result's digest read the same weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bpbench.errors import BadInput
from bpbench.variants import REGISTRY
from bpbench.variants.base import make_optimizer
from bpbench.variants.manual import ManualLearner

MEAN = 1   # at::Reduction::Mean, mse_loss_backward's reduction argument


class BufferedMLP:
    """Linear (ReLU Linear)* with a mean-squared-error loss; each Linear's backward beside its
    forward, every large tensor written into a buffer kept per batch size."""

    def __init__(self, linears: list[nn.Linear]):
        self.linears = linears
        self.buffers: dict[int, list[tuple[Tensor, Tensor]]] = {}   # rows -> per layer (output, its gradient)
        for lin in linears:   # the gradients' buffers are the parameters' .grad tensors
            for p in (lin.weight, lin.bias):
                p.grad = torch.zeros_like(p)

    def _buffers(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        rows = x.shape[0]
        if rows not in self.buffers:
            self.buffers[rows] = [(x.new_empty(rows, lin.out_features), x.new_empty(rows, lin.out_features))
                                  for lin in self.linears]
        return self.buffers[rows]

    @torch.no_grad()   # no autograd here: the backward below is written out
    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        self.x, self.y, bufs = x, y, self._buffers(x)
        h = x
        for i, (lin, (out, _)) in enumerate(zip(self.linears, bufs)):
            torch.addmm(lin.bias, h, lin.weight.t(), out=out)          # forward: h W^T + b
            if i < len(self.linears) - 1:
                out.clamp_min_(0)                                       # ReLU, in place: its output is its mask
            h = out
        self.out = h
        return nn.functional.mse_loss(h, y)

    @torch.no_grad()
    def backward(self) -> None:
        bufs = self._buffers(self.x)
        d = torch.ops.aten.mse_loss_backward(torch.ones((), dtype=self.out.dtype, device=self.out.device), self.out, self.y, MEAN)
        for i in reversed(range(len(self.linears))):
            lin = self.linears[i]
            inp = self.x if i == 0 else bufs[i - 1][0]
            torch.mm(d.t(), inp, out=lin.weight.grad)                   # backward: dW = d^T h
            torch.sum(d, 0, out=lin.bias.grad)                          # db = the rows of d summed
            if i > 0:                                                   # dh = d W, then the ReLU's mask
                dh = bufs[i - 1][1]
                torch.mm(d, lin.weight, out=dh)
                torch.ops.aten.threshold_backward.grad_input(dh, inp, 0, grad_input=dh)
                d = dh


class BufferedLearner(ManualLearner):
    """The manual variant's step (forward, backward, update: bpbench.variants.manual), with the
    module's own parameters and torch.optim's update."""
    static_grads = True      # the .grad tensors are the backward's buffers: never set to None

    def __init__(self, module: nn.Module, net: BufferedMLP, optimizer, names: dict[str, Tensor]):
        # Not ManualLearner.__init__: the update is torch.optim's, not a hand-written optimizer's.
        self.net, self.lr = net, None
        self.module, self.optimizer, self._names = module, optimizer, names

    def update(self) -> None:
        self.optimizer.step()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.module(x)

    def params(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self._names.items()}


def linears_of(model, variant: str) -> list[nn.Linear]:
    """The module's Linear layers, if it is Linear (ReLU Linear)* with an MSE loss (mean)."""
    layers = list(model.module.children()) if isinstance(model.module, nn.Sequential) else []
    shape_ok = layers and all(isinstance(m, nn.Linear if i % 2 == 0 else nn.ReLU) for i, m in enumerate(layers))
    loss_ok = isinstance(model.loss_fn, nn.MSELoss) and model.loss_fn.reduction == "mean"
    if not (shape_ok and len(layers) % 2 == 1 and loss_ok):
        raise BadInput(f"the {variant} variant trains a Sequential of Linear and ReLU layers with MSELoss")
    return layers[::2]


class Buffered:
    info = REGISTRY["buffered"]

    def learner(self, model, cfg, device) -> BufferedLearner:
        net = BufferedMLP(linears_of(model, self.info.name))
        # torch.optim's fused implementation: one kernel per parameter for the whole update.
        optimizer = make_optimizer(model.optimizer, model.module.parameters(), {**cfg, "fused": True})
        return BufferedLearner(model.module, net, optimizer, model.params(model.module))


VARIANT = Buffered()
