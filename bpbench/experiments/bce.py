"""bce: seed 002's 2-2-1 sigmoid network, BCE loss, SGD lr 1, from fixed initial weights.

The model: the seed's nn.Module (two nn.Sequential(Linear, Sigmoid) blocks), BCELoss, optim.SGD;
its hand-written twin is Affine -> Sigmoid -> Affine -> fused Sigmoid+BCE (bpbench.layers).

Every run also records the trace of seed 002's single step from the fixed weights (x = [1, 1],
y = 0): the seven forward values, every gradient and the parameters after the update.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bpbench import layers as L
from bpbench import variants
from bpbench.errors import BadInput
from bpbench.experiments import REGISTRY
from bpbench.experiments.base import Experiment, GradCheckCase, Model, Task
from bpbench.training import linear_param_names, make_batches, manual_grads, module_loss
from bpbench.variants.manual import sgd_update

# Seed 002's initial weights (nn.Linear layout: weight is (out, in)).
INITIAL = {
    "layer1.weight": [[0.4352, 0.3545], [0.1951, 0.4835]],
    "layer1.bias": [-0.1419, 0.0439],
    "layer2.weight": [[-0.1725, 0.1129]],
    "layer2.bias": [-0.3043],
}
X_SOURCE, Y_SOURCE = [[1.0, 1.0]], [[0.0]]
# Seed 002's hand-computed forward values (4 decimals).
REFERENCE = {"z1": 0.6478, "z2": 0.7225, "sigma1": 0.6565, "sigma2": 0.6732,
             "z3": -0.3415, "sigma3": 0.4154, "loss": 0.5368}


def initial_params(device, dtype=torch.float32) -> dict[str, Tensor]:
    return {k: torch.tensor(v, device=device, dtype=dtype) for k, v in INITIAL.items()}


def load_data(name: str, seed: int, device, dtype=torch.float32) -> tuple[Tensor, Tensor, str]:
    if name == "source":
        return (torch.tensor(X_SOURCE, device=device, dtype=dtype),
                torch.tensor(Y_SOURCE, device=device, dtype=dtype), "seed 002: x = [1, 1], y = 0")
    if name == "xor":
        # 64 points scattered around the unit square's corners; label = XOR of the corner bits.
        g = torch.Generator().manual_seed(seed)
        corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]).repeat(16, 1)
        x = corners + 0.1 * torch.randn(corners.shape, generator=g)
        y = (corners[:, :1] != corners[:, 1:]).float()
        return x.to(device, dtype), y.to(device, dtype), f"64 XOR-like points (seed {seed})"
    raise BadInput(f"unknown data set {name!r} for bce (choose from: source, xor)")


def manual_net(params: dict[str, Tensor]) -> L.Network:
    return L.Network([("layer1", L.Affine(params["layer1.weight"], params["layer1.bias"])),
                      ("act1", L.Sigmoid()),
                      ("layer2", L.Affine(params["layer2.weight"], params["layer2.bias"]))],
                     L.SigmoidBCE())


class SourceModel(nn.Module):
    """Seed 002's CustomModel."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid())
        self.layer2 = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(self.layer1(x))


def autograd_model(params: dict[str, Tensor]) -> SourceModel:
    model = SourceModel().to(next(iter(params.values())).device, next(iter(params.values())).dtype)
    with torch.no_grad():
        for name, p in linear_param_names(model).items():
            p.copy_(params[name])
    return model


def trace_step(hand_written: bool, params: dict[str, Tensor], x: Tensor, y: Tensor, lr: float) -> dict:
    """One SGD step with every intermediate value recorded (on copies of `params`)."""
    params = {k: v.clone() for k, v in params.items()}
    if hand_written:
        net = manual_net(params)
        (_, l1), (_, a1), (_, l2) = net.named
        z = l1.forward(x)
        s = a1.forward(z)
        z3 = l2.forward(s)
        loss = net.loss_layer.forward(z3, y)
        s3 = net.loss_layer.y
        net.backward()
        grads = {k: g.clone() for k, g in net.grads().items()}
        sgd_update(params, grads, lr)
        after = params
    else:
        model = autograd_model(params)
        names = linear_param_names(model)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        z = model.layer1[0](x)
        s = model.layer1[1](z)
        z3 = model.layer2[0](s)
        s3 = model.layer2[1](z3)
        loss = nn.BCELoss()(s3, y)
        opt.zero_grad()
        loss.backward()
        grads = {k: p.grad.detach().clone() for k, p in names.items()}
        opt.step()
        after = {k: p.detach() for k, p in names.items()}
    forward = {"z1": z[0, 0], "z2": z[0, 1], "sigma1": s[0, 0], "sigma2": s[0, 1],
               "z3": z3[0, 0], "sigma3": s3[0, 0], "loss": loss}
    return {"source": "seed 002", "forward": {k: float(v.detach()) for k, v in forward.items()},
            "reference": REFERENCE,
            "grads": {k: g.cpu().tolist() for k, g in grads.items()},
            "params_after": {k: p.cpu().tolist() for k, p in after.items()}}


class BCE(Experiment):
    info = REGISTRY["bce"]
    metric_names = {**Experiment.metric_names, "output": "output after training (first sample)"}

    def run_rows(self, result, metrics) -> list[tuple[str, str]]:
        """On seed 002's sample: the output before and after training, each beside its own loss
        (the last epoch's loss is computed before that epoch's update)."""
        from bpbench.report.format import fmt_num
        tr = result.get("trace")
        if not tr or result["config"].get("data") != "source" or "output" not in metrics:
            return []
        when = "the step" if result["config"].get("epochs") == 1 else "training"
        after_loss = metrics.pop("train_loss", None)
        return [(f"before {when}", f"loss {fmt_num(tr['forward']['loss'])} · output {fmt_num(tr['forward']['sigma3'])}"),
                (f"after {when}", f"loss {fmt_num(after_loss)} · output {fmt_num(metrics.pop('output'))}")]

    def build(self, cfg, device) -> Task:
        x, y, desc = load_data(cfg["data"], cfg["seed"], device)
        params = initial_params(device)
        module = autograd_model(params)
        model = Model(module=module, loss_fn=nn.BCELoss(), optimizer=("SGD", {"lr": cfg["lr"]}),
                      params=linear_param_names, manual=lambda: manual_net(initial_params(device)))
        hand_written = variants.get(cfg["variant"]).needs == "manual"
        trace = trace_step(hand_written, params, *load_data("source", 0, device)[:2], cfg["lr"])

        def metrics(learner):
            with torch.no_grad():
                prob = learner.predict(x)
                return {"output": float(prob[0, 0]), "accuracy": float(((prob > 0.5) == (y > 0.5)).float().mean()),
                        "train_loss": float(nn.functional.binary_cross_entropy(prob, y))}

        return Task(model, make_batches("resident", x, y, cfg["batch_size"], cfg["seed"]), len(x),
                    {"name": cfg["data"], "description": desc, "n_train": len(x), "n_test": 0},
                    evaluate=metrics, metrics=metrics, extra=lambda learner: {"trace": trace})

    def gradcheck_case(self, cfg) -> GradCheckCase:
        x, y, desc = load_data(cfg["data"], cfg["seed"], "cpu", torch.float64)
        params = initial_params("cpu", torch.float64)
        return GradCheckCase(params, module_loss(autograd_model(params), nn.BCELoss(), x, y),
                             manual_grads(manual_net, x, y), note=f"seed 002's weights, {desc}")


EXPERIMENT = BCE()
