"""linreg: y = w x + b trained on MSE (seeds 000 and 003).

- manual: seed 000's loop, line for line: hand-written dw, db, no autograd.
- autograd: w, b with requires_grad, MSELoss, optim.SGD (seed 000's second script).
- nn: nn.Linear(1, 1) + MSELoss + optim.SGD (seed 003's third script).

Seed 003's NumPy loop drops the MSE gradient's factor 2 and lets lr 0.001 absorb it: its table
is the manual variant at lr 0.0005.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from bpbench.config import open_text_file
from bpbench.errors import BadInput
from bpbench.experiments import REGISTRY
from bpbench.experiments.base import Experiment, GradCheckCase, Model, Task
from bpbench.training import make_batches

LINE4 = ([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0])                  # seed 000: y = 2x + 1
SCATTER30 = (                                                           # seed 003
    [float(i) for i in range(1, 31)],
    [0.94, 1.98, 2.88, 3.92, 3.96, 4.55, 5.64, 6.3, 7.44, 9.1,
     8.46, 9.5, 10.67, 11.16, 14, 11.83, 14.4, 14.25, 16.2, 16.32,
     17.46, 19.8, 18, 21.34, 22, 22.5, 24.57, 26.04, 21.6, 28.8],
)


def load_data(name: str) -> tuple[list[float], list[float], str]:
    """(x, y, description) for line4, scatter30 or a CSV file with columns x,y."""
    if name == "line4":
        return *LINE4, "seed 000: x = 1..4, y = 2x + 1"
    if name == "scatter30":
        return *SCATTER30, "seed 003: 30 points"
    if not name.lower().endswith(".csv"):
        raise BadInput(f"unknown data set {name!r} (choose from: line4, scatter30, or a .csv file)")
    return (*read_csv(Path(name)), f"CSV file {name}")


def read_csv(path: Path) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    with open_text_file(path, "data file", newline="") as f:   # streamed: rows are never all held
        try:
            reader = csv.DictReader(f, skipinitialspace=True)
            if not {"x", "y"} <= set(reader.fieldnames or ()):
                raise BadInput(f"data file {path} is empty or has no x,y header")
            for row in reader:
                try:
                    x, y = float(row["x"]), float(row["y"])
                except (TypeError, ValueError):
                    raise BadInput(f"data file {path}, line {reader.line_num}: x and y must be numbers") from None
                if not (math.isfinite(x) and math.isfinite(y)):
                    raise BadInput(f"data file {path}, line {reader.line_num}: x and y must be finite")
                xs.append(x)
                ys.append(y)
        except (UnicodeDecodeError, csv.Error) as e:
            raise BadInput(f"data file {path} is not a readable CSV: {e}") from None
    if not xs:
        raise BadInput(f"data file {path} has an x,y header but no rows")
    return xs, ys


class ManualLinReg:
    """Seed 000's hand-written loop body (the exact arithmetic, so its digits reproduce)."""

    def __init__(self, device):
        self.w = torch.zeros(1, 1, device=device)
        self.b = torch.zeros(1, 1, device=device)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        self.x, self.y = x, y
        self.predictions = x.mm(self.w) + self.b
        return ((self.predictions - self.y) ** 2).mean()

    def backward(self) -> None:
        x, y, predictions = self.x, self.y, self.predictions
        self.dw = 2 * x.t().mm(predictions - y) / x.size(0)      # dL/dw
        self.db = 2 * (predictions - y).sum() / x.size(0)        # dL/db

    def keeps(self, inputs, needs_grad):
        """What this backward reads (bpbench.graph.keeps): x for dw, the predictions and y for the error."""
        return ["input0", ("predictions", inputs[1]), "input1"]

    def update(self, lr: float) -> None:
        self.w -= lr * self.dw                         # seed 000's update, digit for digit
        self.b -= lr * self.db

    def predict(self, x: Tensor) -> Tensor:
        return x.mm(self.w) + self.b

    def params(self) -> dict[str, Tensor]:
        return {"w": self.w, "b": self.b}

    def grads(self) -> dict[str, Tensor]:
        return {"w": self.dw, "b": self.db.view(1, 1)}


class XW(nn.Module):
    """predictions = x.mm(w) + b with w, b starting at zero (seed 000's autograd script)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, 1))
        self.b = nn.Parameter(torch.zeros(1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x.mm(self.w) + self.b


def wb(module: nn.Module) -> dict[str, Tensor]:
    """The two parameters as w and b, whichever module holds them."""
    return {"w": module.w, "b": module.b} if isinstance(module, XW) else {"w": module.weight, "b": module.bias}


class LinReg(Experiment):
    info = REGISTRY["linreg"]

    def build(self, cfg, device) -> Task:
        xs, ys, desc = load_data(cfg["data"])
        x = torch.tensor(xs, dtype=torch.float32, device=device).view(-1, 1)
        y = torch.tensor(ys, dtype=torch.float32, device=device).view(-1, 1)

        def linear() -> nn.Module:
            torch.manual_seed(cfg["seed"])            # torch's default init under --seed
            layer = nn.Linear(1, 1)
            if cfg.get("init") == "zeros":
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            return layer

        model = Model(module=XW().to(device), loss_fn=nn.MSELoss(), optimizer=("SGD", {"lr": cfg["lr"]}),
                      params=wb, manual=lambda: ManualLinReg(device), nn_module=linear)

        def metrics(learner):
            with torch.no_grad():
                return {"mse": float(((learner.predict(x) - y) ** 2).mean())}

        return Task(model, make_batches("resident", x, y, cfg["batch_size"], cfg["seed"]), len(x),
                    {"name": cfg["data"], "description": desc, "n_train": len(x), "n_test": 0},
                    evaluate=metrics, metrics=metrics)

    def gradcheck_case(self, cfg) -> GradCheckCase:
        xs, ys, _ = load_data(cfg["data"])
        x = torch.tensor(xs, dtype=torch.float64).view(-1, 1)
        y = torch.tensor(ys, dtype=torch.float64).view(-1, 1)
        gen = torch.Generator().manual_seed(cfg["seed"])
        params = {"w": torch.randn(1, 1, generator=gen, dtype=torch.float64),
                  "b": torch.randn(1, 1, generator=gen, dtype=torch.float64)}

        def loss(p):
            return ((x.mm(p["w"]) + p["b"] - y) ** 2).mean()

        def manual(p):
            net = ManualLinReg("cpu")
            net.w, net.b = p["w"].clone(), p["b"].clone()
            net.loss(x, y)
            net.backward()
            return net.grads()

        return GradCheckCase(params, loss, manual, note=f"data {cfg['data']}, random (w, b)")


EXPERIMENT = LinReg()
