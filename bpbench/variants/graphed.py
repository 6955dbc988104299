"""graphed (CUDA only): the whole autograd step captured once in a CUDA graph, then replayed.

Following PyTorch's whole-network capture recipe: static input buffers, a few warm-up steps on a
side stream, `optimizer.zero_grad(set_to_none=True)`, then forward, backward and a capturable
optimizer step recorded under `torch.cuda.graph`. A step copies the batch into the static
buffers, replays the graph (one launch instead of dozens) and copies the loss out. One graph per
batch shape (a last, smaller mini-batch gets its own). The warm-up steps are rewound in place
(prime), so the trajectory stays the reference variant's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bpbench.errors import BadInput
from bpbench.variants import REGISTRY
from bpbench.variants.base import TorchLearner, prime, rewound, torch_learner


class GraphedLearner(TorchLearner):
    compiles = True          # its capture is a one-time cost, reported as compile_s
    static_grads = True      # captured graphs own the .grad tensors: never set them to None

    def __init__(self, *args):
        super().__init__(*args)
        self.graphs: dict[tuple, tuple] = {}   # batch shape -> (graph, static x, static y, static loss)

    def _eager_step(self, x: Tensor, y: Tensor) -> Tensor:
        return TorchLearner.step(self, x, y)

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        entry = self.graphs.get(tuple(x.shape))
        if entry is None:          # a shape prepare() did not see: capture it now, its warm-up
            with rewound(self):    # steps rewound (as prime() does), so they are no updates
                self._capture(x, y)
            entry = self.graphs[tuple(x.shape)]
        graph, sx, sy, sloss = entry
        sx.copy_(x, non_blocking=True)
        sy.copy_(y, non_blocking=True)
        graph.replay()
        return sloss.clone()

    def _capture(self, x: Tensor, y: Tensor) -> None:
        sx, sy = x.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):      # warm-up: lazy state, cuBLAS handles, autograd buffers
            for _ in range(3):
                self._eager_step(sx, sy)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            sloss = self.loss_fn(self.module(sx), sy)
            sloss.backward()
            self.optimizer.step()
        self.graphs[tuple(x.shape)] = (graph, sx, sy, sloss)

    def prepare(self, samples, sync) -> float:
        def capture_all():
            for x, y in samples:
                if tuple(x.shape) not in self.graphs:
                    self._capture(x, y)
        # prime() rewinds whatever the warm-up steps changed; steps=1 replays each graph once.
        return prime(_Capturing(self, capture_all), samples, steps=1, sync=sync)

    def details(self) -> dict:
        return {"cuda_graphs": len(self.graphs)}


class _Capturing:
    """Makes prime() capture first, then step: the rewind covers warm-up and replay alike."""

    def __init__(self, learner: GraphedLearner, capture_all):
        self.learner, self.capture_all, self.optimizer = learner, capture_all, learner.optimizer
        self.static_grads = True
        self._captured = False

    def params(self):
        return self.learner.params()

    def step(self, x, y):
        if not self._captured:
            self.capture_all()
            self._captured = True
        return self.learner.step(x, y)


class Graphed:
    info = REGISTRY["graphed"]

    def learner(self, model, cfg, device) -> GraphedLearner:
        if getattr(device, "type", str(device)) != "cuda":
            raise BadInput("the graphed variant captures CUDA graphs: it needs --device cuda")
        name = model.optimizer[0]
        extra = {"capturable": True} if name != "SGD" else {}   # SGD without momentum keeps no state
        learner = torch_learner(TorchLearner, model.module, model, cfg, **extra)
        return GraphedLearner(learner.module, learner.loss_fn, learner.optimizer, learner._names)


VARIANT = Graphed()
