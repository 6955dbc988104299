"""width: seed 004's CPU-vs-GPU study. A 1-H-1 ReLU MLP fit to 100 points with Adam.

x = linspace(0, 1, 100), y = 0.01 * randn(100) under torch.manual_seed(5), net built right after,
MSE loss, Adam with torch's defaults; one full-batch step per epoch. The seed timed H = 500
(CPU faster) and H = 200,000 (GPU about 60x faster); `bpbench compare width` sweeps H.

Its hand-written twin (the manual variant): Affine -> ReLU -> Affine -> mean squared error from
bpbench.layers, and Adam's update written out (bpbench.variants.manual.Adam).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bpbench import layers as L
from bpbench.experiments import REGISTRY
from bpbench.experiments.base import Experiment, GradCheckCase, Model, Task
from bpbench.training import linear_param_names, make_batches, manual_grads, module_loss


def source_data(seed: int) -> tuple[Tensor, Tensor]:
    torch.manual_seed(seed)
    x = torch.linspace(0, 1, 100).reshape(-1, 1)
    y = torch.randn(100).reshape(-1, 1) * 0.01
    return x, y


def manual_net(params: dict[str, Tensor]) -> L.Network:
    return L.Network([("layer1", L.Affine(params["layer1.weight"], params["layer1.bias"])),
                      ("relu1", L.ReLU()),
                      ("layer2", L.Affine(params["layer2.weight"], params["layer2.bias"]))],
                     L.MeanSquaredError())


class Width(Experiment):
    info = REGISTRY["width"]

    def build(self, cfg, device) -> Task:
        x, y = source_data(cfg["seed"])
        h = cfg["width"]
        net = nn.Sequential(nn.Linear(1, h), nn.ReLU(), nn.Linear(h, 1)).to(device)   # right after, as the seed
        initial = {k: p.detach().clone() for k, p in linear_param_names(net).items()}
        model = Model(module=net, loss_fn=nn.MSELoss(), optimizer=("Adam", {"lr": cfg["lr"]}),
                      params=linear_param_names,
                      manual=lambda: manual_net({k: v.clone() for k, v in initial.items()}))
        x, y = x.to(device), y.to(device)
        return Task(model, make_batches("resident", x, y, cfg["batch_size"], cfg["seed"]), len(x),
                    {"name": "source", "description": "x = linspace(0, 1, 100), y = 0.01 randn",
                     "n_train": len(x), "n_test": 0, "width": h, "parameters": 3 * h + 1})

    def gradcheck_case(self, cfg) -> GradCheckCase:
        x, y = source_data(cfg["seed"])
        net = nn.Sequential(nn.Linear(1, cfg["width"]), nn.ReLU(), nn.Linear(cfg["width"], 1)).double()
        x, y = x.double(), y.double()
        params = {k: p.detach().clone() for k, p in linear_param_names(net).items()}
        return GradCheckCase(params, module_loss(net, nn.MSELoss(), x, y), manual_grads(manual_net, x, y),
                             note=f"the 100 source points, H = {cfg['width']}")


EXPERIMENT = Width()
