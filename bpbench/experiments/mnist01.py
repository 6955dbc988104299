"""mnist01: MNIST 0 vs 1 with seed 004's 784-32-1 MLP, or all ten digits with seed 001's
784-50-10 two-layer softmax net.

The model: nn.Sequential + BCELoss (CrossEntropyLoss for ten digits) + optim.SGD, as the seeds;
its hand-written twin is the same network of bpbench.layers, starting from the same weights.

Weights come from torch.manual_seed(seed) then nn.Sequential(...), as seed 004 builds its net;
the ten-digit net takes seed 001's N(0, 0.01^2) weights and zero biases.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from bpbench import layers as L
from bpbench.data import mnist
from bpbench.errors import BadInput
from bpbench.experiments import REGISTRY
from bpbench.experiments.base import Experiment, GradCheckCase, Model, Task
from bpbench.training import (
    SupervisedSession,
    linear_param_names,
    make_batches,
    manual_grads,
    module_loss,
)

DIGITS = {"0,1": [0, 1], "0-9": list(range(10))}


def uses_full_mnist(cfg) -> bool:
    return cfg["data"] == "mnist" or bool(cfg.get("data_dir")) or bool(cfg.get("download"))


def _fetch_command(cfg, root: Path) -> str:
    """The exact command that fetches full MNIST for this run's settings."""
    parts = ["bpbench run mnist01", "--digits 0-9" if cfg["digits"] == "0-9" else "--data mnist"]
    if cfg.get("data_dir"):
        parts.append(f"--data-dir {root}")
    return " ".join(parts + ["--download"])


def load_splits(cfg) -> tuple[dict[str, tuple[Tensor, Tensor]], dict]:
    """{"train": (images, labels), "test": ...} as uint8 and int64, and where they came from."""
    data = cfg["data"]
    if uses_full_mnist(cfg):
        if data not in ("mnist", "offline"):
            raise BadInput(f"--data-dir and --download read full MNIST; they do not apply to --data {data}")
        if cfg.get("holdout") is not None:
            raise BadInput("holdout applies only to a .npz file of one set (images, labels); "
                           "full MNIST has its own test split")
        explicit = cfg.get("data_dir")
        root = Path(explicit) if explicit else mnist.default_data_dir()
        if cfg.get("download"):
            mnist.download(root)
        elif lacking := mnist.missing(root):
            need = ("--digits 0-9 (seed 001) trains on all 60,000 MNIST training images, which bpbench "
                    "does not ship" if cfg["digits"] == "0-9" else "--data mnist reads full MNIST")
            lacks = "has none of its four files" if len(lacking) == 4 else f"lacks {', '.join(lacking)}"
            raise BadInput(f"{need}, and {mnist.raw_dir(root)} {lacks}: "
                           f"run `{_fetch_command(cfg, root)}` "
                           "once (torchvision fetches the four files, about 12 MB; offline afterwards), "
                           "or pass --data-dir DIR: a folder holding MNIST's four files (.gz or "
                           "unpacked), or torchvision's layout DIR/MNIST/raw/")
        splits = {s: mnist.load_torchvision(root, s) for s in ("train", "test")}
        desc = {"name": "mnist", "source": f"torchvision MNIST in {root}",
                "split": "MNIST's training split trains, its test split is held out"}
        return splits, desc
    if data != "offline" and not data.endswith(".npz"):
        raise BadInput(f"unknown data set {data!r} for mnist01 (choose from: offline, mnist, or a .npz file)")
    path = mnist.offline_path() if data == "offline" else Path(data)
    splits = mnist.load_npz(path)
    desc = {"name": data, "source": "every 0 and 1 of both MNIST splits (shipped, CC BY-SA 3.0)"
            if data == "offline" else str(path)}
    if "all" not in splits:
        if cfg.get("holdout") is not None:
            raise BadInput(f"holdout applies only to a .npz file of one set (images, labels); "
                           f"{'the shipped data' if data == 'offline' else path} has its own test split")
        desc["split"] = "MNIST's training split trains, its test split is held out"
        return splits, desc
    holdout = 0.2 if cfg.get("holdout") is None else cfg["holdout"]
    if holdout >= 1:
        raise BadInput(f"holdout must be below 1, got {holdout:g}")
    images, labels = splits["all"]
    tr, te = mnist.stratified_split(labels, holdout)
    desc["split"] = f"stratified, {holdout:g} held out (split seed 0)"
    return {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])}, desc


def load(cfg) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    """(x_train, y_train, x_test, y_test, data description), pixels / 255 as float32.

    Two digits are grouped by class, zeros then ones, as seed 004 concatenates X0 and X1; ten
    digits keep MNIST's order, as seed 001's load_mnist (its gradient check takes x_train[:3]).
    """
    digits = DIGITS[cfg["digits"]]
    splits, desc = load_splits(cfg)
    present = set(splits["train"][1].unique().tolist())
    if not set(digits) <= present:
        where = "the shipped data" if cfg["data"] == "offline" else desc["source"]
        raise BadInput(f"{where} holds only digits {sorted(present)}; --digits {cfg['digits']} needs "
                       "full MNIST (--data-dir DIR, or --download)")

    def select(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if len(digits) == 2:
            idx = torch.cat([(labels == d).nonzero().view(-1) for d in digits])
            images, labels = images[idx], labels[idx]
        elif not torch.isin(labels, torch.tensor(digits)).all():
            keep = torch.isin(labels, torch.tensor(digits))
            images, labels = images[keep], labels[keep]
        return images.reshape(-1, 784).float() / 255.0, labels

    xtr, ytr = select(*splits["train"])
    xte, yte = select(*splits["test"])
    order = "zeros then ones (as seed 004)" if len(digits) == 2 else "MNIST's order (as seed 001)"
    desc.update({"digits": cfg["digits"], "order": order, "n_train": len(xtr), "n_test": len(xte),
                 "train_counts": {str(d): int((ytr == d).sum()) for d in digits},
                 "test_counts": {str(d): int((yte == d).sum()) for d in digits}})
    return xtr, ytr, xte, yte, desc


def binary(cfg) -> bool:
    return cfg["digits"] == "0,1"


def build_module(cfg) -> nn.Sequential:
    torch.manual_seed(cfg["seed"])
    if binary(cfg):   # seed 004: torch.manual_seed(1), then the net with torch's default init
        return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    # Seed 001's TwoLayerNet: W1, W2 = 0.01 * randn(in, out), drawn in that order; zero biases.
    w1, w2 = 0.01 * torch.randn(784, 50), 0.01 * torch.randn(50, 10)
    net = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))
    with torch.no_grad():
        for layer, w in ((net[0], w1), (net[2], w2)):
            layer.weight.copy_(w.t())      # nn.Linear keeps (out, in)
            layer.bias.zero_()
    return net


def manual_net(params: dict[str, Tensor], is_binary: bool) -> L.Network:
    return L.Network([("layer1", L.Affine(params["layer1.weight"], params["layer1.bias"])),
                      ("relu1", L.ReLU()),
                      ("layer2", L.Affine(params["layer2.weight"], params["layer2.bias"]))],
                     L.SigmoidBCE() if is_binary else L.SoftmaxWithLoss())


def targets(y: Tensor, is_binary: bool) -> Tensor:
    return y.float().view(-1, 1) if is_binary else y


class SourceFigures(SupervisedSession):
    """A session that also copies the parameters after chosen updates, for the figures a source
    computes at other moments than bpbench's epoch ends (seed 004's GD: its loop's last forward
    pass; seed 001: after the first update of every epoch). The copy (tens of thousands of floats,
    microseconds) happens inside those few timed steps; evaluating it waits for evaluate()."""

    def __init__(self, learner, batches, samples, evaluate, after: set[int], figures: tuple[str, ...],
                 in_history: bool):
        super().__init__(learner, batches, samples, evaluate)
        self.after, self.figures, self.in_history = after, figures, in_history
        self.updates = 0
        self._copy: tuple[int, dict[str, Tensor]] | None = None    # the latest (update, params)
        self._figures: dict[str, float] = {}
        if 0 in after:
            self._keep()

    def step(self) -> Tensor:
        x, y = next(self._it)
        loss = self.learner.step(x, y)
        self.updates += 1
        if self.updates in self.after:
            self._keep()
        return loss

    def _keep(self) -> None:
        self._copy = (self.updates, {k: p.clone() for k, p in self.learner.params().items()})

    def evaluate(self) -> dict[str, float]:
        out = super().evaluate()
        return {**out, **self.source_figures()} if self.in_history else out

    def source_figures(self) -> dict[str, float]:
        """source_updates and the accuracies of the parameters after that many updates."""
        if self._copy is None:
            return {}
        at, params = self._copy
        if self._figures.get("source_updates") != at:
            live = self.learner.params()
            now = {k: p.clone() for k, p in live.items()}
            try:
                for k, p in live.items():
                    p.copy_(params[k])
                scores = super().evaluate()
            finally:
                for k, p in live.items():
                    p.copy_(now[k])
            self._figures = {"source_updates": at, **{f"source_{k}": scores[k] for k in self.figures}}
        return dict(self._figures)


class Scorer:
    """Loss, accuracy and confusion matrices of a learner on both splits (resident on the device)."""

    def __init__(self, is_binary: bool, xtr: Tensor, ytr: Tensor, xte: Tensor, yte: Tensor):
        self.is_binary, self.xtr, self.ytr, self.xte, self.yte = is_binary, xtr, ytr, xte, yte

    def scores(self, learner, x: Tensor, y: Tensor) -> tuple[float, float, Tensor]:
        with torch.no_grad():
            out = learner.predict(x)
            if self.is_binary:
                p = out.view(-1)
                loss = nn.functional.binary_cross_entropy(p, y.float())
                pred = (p > 0.5).long()
            else:
                prob = out.softmax(1)
                loss = nn.functional.nll_loss(prob.clamp_min(1e-30).log(), y)
                pred = prob.argmax(1)
            return float(loss), float((pred == y).float().mean()), pred

    def evaluate(self, learner) -> dict[str, float]:
        tr_loss, tr_acc, _ = self.scores(learner, self.xtr, self.ytr)
        out = {"train_loss": tr_loss, "train_accuracy": tr_acc}
        if len(self.xte):
            te_loss, te_acc, _ = self.scores(learner, self.xte, self.yte)
            out.update(test_loss=te_loss, test_accuracy=te_acc)
        return out

    def confusion(self, learner) -> dict:
        k = 2 if self.is_binary else 10
        out = {}
        for split, (x, y) in (("train", (self.xtr, self.ytr)), ("test", (self.xte, self.yte))):
            if len(x):
                pred = self.scores(learner, x, y)[2]
                out[split] = torch.bincount(y * k + pred, minlength=k * k).view(k, k).cpu().tolist()
        return {"confusion": out}


class SourceWay:
    """The figures as the sources printed them, beside bpbench's own final metrics."""

    def __init__(self, is_binary: bool, total: int, gd: bool):
        self.is_binary, self.total, self.gd = is_binary, total, gd
        self.sessions: list[SourceFigures] = []

    def session(self, learner, batches, samples, evaluate) -> SourceFigures:
        if self.is_binary:
            # Seed 004 prints GD's accuracy from yhat of the loop's last forward pass, i.e. with
            # the parameters before the final update; its mini-batch figure is net(X) after the loop.
            s = SourceFigures(learner, batches, samples, evaluate, {self.total - 1} if self.gd else set(),
                              ("train_accuracy",), in_history=False)
        else:
            # Seed 001 prints at `i % iter_per_epoch == 0`: after the first update of every epoch.
            s = SourceFigures(learner, batches, samples, evaluate, set(range(1, self.total + 1, batches.steps_per_epoch)),
                              ("train_accuracy", "test_accuracy"), in_history=True)
        self.sessions.append(s)
        return s

    def metrics(self, final: dict[str, float]) -> dict[str, float]:
        if self.is_binary and not self.gd:
            return {**final, "source_train_accuracy": final["train_accuracy"], "source_updates": self.total}
        return {**final, **self.sessions[-1].source_figures()}


class MNIST01(Experiment):
    info = REGISTRY["mnist01"]
    # seed 004 printed the accuracy of `yhat` from its loop's last forward pass
    metric_names = {**Experiment.metric_names, "source_updates": "updates before the source's last forward pass",
                    "source_train_accuracy": "train accuracy the source's way (that forward pass)",
                    "source_test_accuracy": "held-out accuracy the source's way"}

    def run_tables(self, result) -> list:
        """The confusion matrices: rows the true class, columns the predicted one."""
        from bpbench.report.format import Tab
        out = []
        for split, matrix in (result.get("confusion") or {}).items():
            title = {"train": "training set", "test": "held-out set"}.get(split, split)
            tab = Tab(title, ["true"] + [f"pred {k}" for k in range(len(matrix))], text=0)
            tab.rows = [[str(k)] + [f"{n:,}" for n in row] for k, row in enumerate(matrix)]
            # ten classes in 80 columns: headed by the bare class, counts without separators
            tab.narrow = Tab(title, ["true"] + [str(k) for k in range(len(matrix))], text=0,
                             rows=[[str(k)] + [str(n) for n in row] for k, row in enumerate(matrix)])
            out.append(tab)
        return ["confusion matrices (rows: true class, columns: predicted class)"] + out if out else []

    def build(self, cfg, device) -> Task:
        xtr, ytr, xte, yte, desc = load(cfg)
        is_binary = binary(cfg)
        module = build_module(cfg).to(device)
        initial = {k: p.detach().clone() for k, p in linear_param_names(module).items()}
        model = Model(module=module, loss_fn=nn.BCELoss() if is_binary else nn.CrossEntropyLoss(),
                      optimizer=("SGD", {"lr": cfg["lr"]}), params=linear_param_names,
                      manual=lambda: manual_net({k: v.clone() for k, v in initial.items()}, is_binary))
        # Resident: the data moves to the device once, here in setup.
        scorer = Scorer(is_binary, xtr.to(device), ytr.to(device), xte.to(device), yte.to(device))
        order = dict(shuffle=cfg["shuffle"], replacement=cfg["replacement"])
        if cfg["loader"] == "resident":
            batches = make_batches("resident", scorer.xtr, targets(ytr, is_binary).to(device), cfg["batch_size"],
                                   cfg["seed"], **order)
        else:   # seed 004's way: a DataLoader over host tensors, each batch moved to the device
            batches = make_batches("dataloader", xtr, targets(ytr, is_binary), cfg["batch_size"], cfg["seed"],
                                   device, **order)
        figures = SourceWay(is_binary, cfg.get("updates") or cfg["epochs"] * batches.steps_per_epoch,
                            batches.steps_per_epoch == 1)
        return Task(model, batches, len(xtr), desc, evaluate=scorer.evaluate,
                    metrics=lambda learner: figures.metrics(scorer.evaluate(learner)),
                    extra=scorer.confusion, session=figures.session)

    def log_line(self, entry, epochs) -> str:
        if "source_test_accuracy" in entry:   # seed 001's own line, for the update it printed at
            return (f"train accuracy: {entry['source_train_accuracy']:.4f}, "
                    f"test accuracy: {entry['source_test_accuracy']:.4f}")
        line = f"Epoch [{entry['epoch']}/{epochs}], Loss: {entry['loss']:.4f}, updates {entry['updates']}"
        if "train_accuracy" in entry:
            line += f", train acc {entry['train_accuracy']:.4f}"
        if "test_accuracy" in entry:
            line += f", held-out loss {entry['test_loss']:.4f}, acc {entry['test_accuracy']:.4f}"
        return line

    def gradcheck_case(self, cfg) -> GradCheckCase:
        xtr, ytr, _, _, desc = load(cfg)
        is_binary = binary(cfg)
        if is_binary:   # both classes: the first two zeros and the first two ones
            idx = torch.cat([(ytr == c).nonzero().view(-1)[:2] for c in ytr.unique()])[:4]
        else:           # seed 001 checks on x_train[:3]
            idx = torch.arange(3)
        x, y = xtr[idx].double(), targets(ytr[idx], is_binary)
        y = y.double() if is_binary else y
        model = build_module(cfg).double()
        params = {k: p.detach().clone() for k, p in linear_param_names(model).items()}
        loss_fn = nn.BCELoss() if is_binary else nn.CrossEntropyLoss()
        return GradCheckCase(params, module_loss(model, loss_fn, x, y),
                             manual_grads(lambda p: manual_net(p, is_binary), x, y),
                             note=f"{len(x)} samples of {desc['name']}, digits {cfg['digits']}")


EXPERIMENT = MNIST01()
