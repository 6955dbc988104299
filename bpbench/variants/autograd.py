"""autograd: the experiment's torch module, its loss, loss.backward() and torch.optim."""

from __future__ import annotations

from bpbench.variants import REGISTRY
from bpbench.variants.base import TorchLearner, torch_learner


class Autograd:
    info = REGISTRY["autograd"]

    def learner(self, model, cfg, device) -> TorchLearner:
        return torch_learner(TorchLearner, model.module, model, cfg)


VARIANT = Autograd()
