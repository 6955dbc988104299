"""compiled: the autograd step under torch.compile.

One compiled function holds forward, loss, backward and optimizer step. Dynamo still splits it
where it cannot trace: at `loss.backward()` (AOTAutograd compiles the backward graph itself) and
inside `Optimizer.step` (torch.optim marks a break before its compiled update), so a step runs
about three graphs; `details()` records the count and the reasons. `zero_grad` runs eagerly
before the compiled call (Dynamo skips tracing it). Compilation happens in `prepare` (primed on
each batch shape the run will see, then rewound), so `timing.compile_s` holds it and the steady
state never recompiles.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from bpbench.variants import REGISTRY
from bpbench.variants.base import TorchLearner, prime, torch_learner


class _ExpectedNotes(logging.Filter):
    """Drops the notes every compiled step triggers and that say nothing to a user: Dynamo ignores
    the record_function of torch.optim's own profiler hook inside the compiled step, and inductor
    on a CPU-only machine finds no CUDA runtime. Every other warning still reaches stderr."""
    NOTES = ("Profiler record function", "Profiler function", "No CUDA runtime is found")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTES)


for _name in ("torch._dynamo.variables.ctx_manager", "torch._dynamo.variables.torch", "torch.utils.cpp_extension"):
    logging.getLogger(_name).addFilter(_ExpectedNotes())


class CompiledLearner(TorchLearner):
    compiles = True

    def __init__(self, *args, mode: str = "default"):
        super().__init__(*args)
        self.mode = mode
        # Dynamo caches per code object, shared by every CompiledLearner: start from nothing, as
        # a run in its own process does, so another learner's shapes never shape these guards.
        torch._dynamo.reset()
        self._compiled = torch.compile(self._update, mode=None if mode == "default" else mode)

    def _update(self, x: Tensor, y: Tensor) -> Tensor:
        loss = self.loss_fn(self.module(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self._compiled(x, y)

    def prepare(self, samples, sync) -> float:
        import torch._dynamo as dynamo
        dynamo.utils.counters.clear()
        seconds = prime(self, samples, steps=2, sync=sync)
        counters = dynamo.utils.counters
        self._graphs_after_prepare = int(counters["stats"].get("unique_graphs", 0))
        self._details = {
            "mode": self.mode,
            "graphs": self._graphs_after_prepare,
            "graph_breaks": sorted({r.strip().splitlines()[0][:120] for r in counters["graph_break"]}),
        }
        return seconds

    def details(self) -> dict:
        """What compiled, and whether anything compiled again after prepare (it should not: a
        recompile inside the timed loop would be charged to a steady step)."""
        import torch._dynamo as dynamo
        if not hasattr(self, "_details"):
            return {"compile": None}
        graphs = int(dynamo.utils.counters["stats"].get("unique_graphs", 0))
        return {"compile": {**self._details, "graphs_compiled_after_prepare": graphs - self._graphs_after_prepare}}


class Compiled:
    info = REGISTRY["compiled"]

    def learner(self, model, cfg, device) -> CompiledLearner:
        learner = torch_learner(TorchLearner, model.module, model, cfg)
        return CompiledLearner(learner.module, learner.loss_fn, learner.optimizer, learner._names,
                               mode=cfg.get("compile_mode", "default"))


VARIANT = Compiled()
