"""width: seed 004's CPU-vs-GPU study. A 1-H-1 ReLU MLP fit to 100 points with Adam.

x = linspace(0, 1, 100), y = 0.01 * randn(100) under torch.manual_seed(5), net built right after,
MSE loss, Adam with torch's defaults; one full-batch step per epoch. The seed timed H = 500
(CPU faster) and H = 200,000 (GPU about 60x faster); `bpbench compare width` sweeps H.
"""

from __future__ import annotations

import torch
from torch import nn

from bpbench.experiments import REGISTRY
from bpbench.experiments.base import Experiment, Model, Task
from bpbench.training import linear_param_names, make_batches


class Width(Experiment):
    info = REGISTRY["width"]

    def build(self, cfg, device) -> Task:
        torch.manual_seed(cfg["seed"])
        x = torch.linspace(0, 1, 100).reshape(-1, 1)
        y = torch.randn(100).reshape(-1, 1) * 0.01
        h = cfg["width"]
        net = nn.Sequential(nn.Linear(1, h), nn.ReLU(), nn.Linear(h, 1)).to(device)
        model = Model(module=net, loss_fn=nn.MSELoss(), optimizer=("Adam", {"lr": cfg["lr"]}),
                      params=linear_param_names)
        x, y = x.to(device), y.to(device)
        return Task(model, make_batches("resident", x, y, cfg["batch_size"], cfg["seed"]), len(x),
                    {"name": "source", "description": "x = linspace(0, 1, 100), y = 0.01 randn",
                     "n_train": len(x), "n_test": 0, "width": h, "parameters": 3 * h + 1})


EXPERIMENT = Width()
