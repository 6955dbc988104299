"""nn: the same model built from nn layers alone (linreg's nn.Linear), trained like autograd."""

from __future__ import annotations

from bpbench.variants import REGISTRY
from bpbench.variants.base import TorchLearner, torch_learner


class NN:
    info = REGISTRY["nn"]

    def learner(self, model, cfg, device) -> TorchLearner:
        return torch_learner(TorchLearner, model.nn_module().to(device), model, cfg)


VARIANT = NN()
