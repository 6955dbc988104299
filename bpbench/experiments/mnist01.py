"""mnist01: MNIST 0 vs 1 with seed 004's 784-32-1 MLP, or all ten digits with seed 001's
784-50-10 two-layer softmax net.

- autograd: nn.Sequential + BCELoss (CrossEntropyLoss for ten digits) + optim.SGD, as the seeds.
- manual: the same network from the hand-written layers, starting from the same weights.

Weights come from torch.manual_seed(seed) then nn.Sequential(...), as seed 004 builds its net.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from bpbench import layers as L
from bpbench.data import mnist
from bpbench.errors import BadInput
from bpbench.experiments import REGISTRY
from bpbench.experiments.base import Built, Experiment, GradCheckCase
from bpbench.training import (AutogradLearner, ManualLearner, SupervisedSession, linear_param_names,
                              make_batches, manual_grads, module_loss)


def load(cfg) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    """(x_train, y_train, x_test, y_test, data description), pixels scaled to [0, 1]."""
    digits = list(range(10)) if cfg["digits"] == "0-9" else [0, 1]
    data, data_dir = cfg["data"], cfg.get("data_dir")
    if data_dir and data not in ("offline", "mnist"):   # offline: the default, not a choice
        raise BadInput(f"--data {data} and --data-dir both name the data to train on: give one")
    if cfg.get("download") and not data_dir:
        raise BadInput("--download needs --data-dir DIR to download into")
    if data_dir or data == "mnist":
        if not data_dir:
            raise BadInput("--data mnist needs --data-dir DIR (torchvision's layout DIR/MNIST/raw/)")
        root = Path(data_dir)
        if cfg.get("download"):
            mnist.download(root)
        xtr, ytr = mnist.load_torchvision(root, "train")
        xte, yte = mnist.load_torchvision(root, "test")
        desc = {"name": "mnist", "source": f"torchvision MNIST in {root}",
                "split": "train split trains, test split is held out (as seed 004)"}
    else:
        path = mnist.offline_path() if data == "offline" else Path(data)
        if data != "offline" and not data.endswith(".npz"):
            raise BadInput(f"unknown data set {data!r} for mnist01 (choose from: offline, mnist, or a .npz file)")
        images, labels = mnist.load_npz(path)
        present = set(labels.unique().tolist())
        if not set(digits) <= present:
            raise BadInput(f"{'the shipped offline data' if data == 'offline' else path} holds only digits "
                           f"{sorted(present)}; --digits {cfg['digits']} needs --data-dir with full MNIST")
        keep = sum(labels == d for d in digits).bool()
        images, labels = images[keep], labels[keep]
        tr, te = mnist.stratified_split(labels, cfg["holdout"])
        xtr, ytr, xte, yte = images[tr], labels[tr], images[te], labels[te]
        desc = {"name": data, "source": "MNIST test split, digits 0 and 1 (shipped, CC BY-SA 3.0)"
                if data == "offline" else str(path),
                "split": f"stratified, {cfg['holdout']:g} held out (split seed 0)"}

    def select(x, y):
        keep = sum(y == d for d in digits).bool()
        return x[keep].reshape(-1, 784).float() / 255.0, y[keep]

    xtr, ytr = select(xtr, ytr)
    xte, yte = select(xte, yte)
    if len(xtr) == 0:
        raise BadInput("no training images of the requested digits")
    desc.update({"digits": cfg["digits"], "n_train": len(xtr), "n_test": len(xte),
                 "train_counts": {str(d): int((ytr == d).sum()) for d in digits},
                 "test_counts": {str(d): int((yte == d).sum()) for d in digits}})
    return xtr, ytr, xte, yte, desc


def binary(cfg) -> bool:
    return cfg["digits"] == "0,1"


def build_module(cfg) -> nn.Sequential:
    torch.manual_seed(cfg["seed"])
    if binary(cfg):   # seed 004
        return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    return nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))   # seed 001's TwoLayerNet


def manual_net(params: dict[str, Tensor], is_binary: bool) -> L.Network:
    return L.Network([("layer1", L.Affine(params["layer1.weight"], params["layer1.bias"])),
                      ("relu1", L.ReLU()),
                      ("layer2", L.Affine(params["layer2.weight"], params["layer2.bias"]))],
                     L.SigmoidBCE() if is_binary else L.SoftmaxWithLoss())


def targets(y: Tensor, is_binary: bool) -> Tensor:
    return y.float().view(-1, 1) if is_binary else y


class MNIST01(Experiment):
    info = REGISTRY["mnist01"]

    def build(self, cfg, device) -> Built:
        xtr, ytr, xte, yte, desc = load(cfg)
        is_binary = binary(cfg)
        model = build_module(cfg).to(device)
        if cfg["variant"] == "manual":
            params = {k: p.detach().clone() for k, p in linear_param_names(model).items()}
            learner = ManualLearner(manual_net(params, is_binary), cfg["lr"])
            to_prob = torch.sigmoid if is_binary else (lambda z: z.softmax(1))
        else:
            loss_fn = nn.BCELoss() if is_binary else nn.CrossEntropyLoss()
            learner = AutogradLearner(model, loss_fn, torch.optim.SGD(model.parameters(), lr=cfg["lr"]),
                                      linear_param_names(model))
            to_prob = (lambda p: p) if is_binary else (lambda z: z.softmax(1))
        # Resident: the data moves to the device once, here in setup.
        xtr_d, ytr_d = xtr.to(device), targets(ytr, is_binary).to(device)
        xte_d, yte_d = xte.to(device), yte.to(device)
        ytr_labels = ytr.to(device)           # class labels for accuracy, moved once
        if cfg["loader"] == "resident":
            batches = make_batches("resident", xtr_d, ytr_d, cfg["batch_size"], cfg["seed"])
        else:   # seed 004's way: a DataLoader over host tensors, each batch moved to the device
            batches = make_batches("dataloader", xtr, targets(ytr, is_binary), cfg["batch_size"], cfg["seed"],
                                   device)

        def scores(x: Tensor, y: Tensor) -> tuple[float, float, Tensor]:
            with torch.no_grad():
                prob = to_prob(learner.predict(x))
                if is_binary:
                    p = prob.view(-1)
                    loss = nn.functional.binary_cross_entropy(p, y.float())
                    pred = (p > 0.5).long()
                else:
                    loss = nn.functional.nll_loss(prob.clamp_min(1e-30).log(), y)
                    pred = prob.argmax(1)
                return float(loss), float((pred == y).float().mean()), pred

        def evaluate() -> dict[str, float]:
            tr_loss, tr_acc, _ = scores(xtr_d, ytr_labels)
            out = {"train_loss": tr_loss, "train_accuracy": tr_acc}
            if len(xte_d):
                te_loss, te_acc, _ = scores(xte_d, yte_d)
                out.update(test_loss=te_loss, test_accuracy=te_acc)
            return out

        def confusion() -> dict:
            k = 2 if is_binary else 10
            out = {}
            for split, (x, y) in (("train", (xtr_d, ytr_labels)), ("test", (xte_d, yte_d))):
                if len(x):
                    pred = scores(x, y)[2]
                    out[split] = torch.bincount(y * k + pred, minlength=k * k).view(k, k).cpu().tolist()
            return {"confusion": out}

        session = SupervisedSession(learner, batches, len(xtr), evaluate)
        return Built(session, desc, metrics=evaluate, extra=confusion)

    def log_line(self, entry, epochs) -> str:
        line = f"Epoch [{entry['epoch']}/{epochs}], Loss: {entry['loss']:.4f}, updates {entry['updates']}"
        if "train_accuracy" in entry:
            line += f", train acc {entry['train_accuracy']:.4f}"
        if "test_accuracy" in entry:
            line += f", held-out loss {entry['test_loss']:.4f}, acc {entry['test_accuracy']:.4f}"
        return line

    def gradcheck_case(self, cfg) -> GradCheckCase:
        xtr, ytr, _, _, desc = load(cfg)
        is_binary = binary(cfg)
        # Seed 001 checks on three samples; take the first of each class plus one more.
        idx = torch.cat([(ytr == c).nonzero().view(-1)[:2] for c in ytr.unique()])[:4]
        x, y = xtr[idx].double(), targets(ytr[idx], is_binary)
        y = y.double() if is_binary else y
        model = build_module(cfg).double()
        params = {k: p.detach().clone() for k, p in linear_param_names(model).items()}
        loss_fn = nn.BCELoss() if is_binary else nn.CrossEntropyLoss()
        return GradCheckCase(params, module_loss(model, loss_fn, x, y),
                             manual_grads(lambda p: manual_net(p, is_binary), x, y),
                             note=f"{len(x)} samples of {desc['name']}, digits {cfg['digits']}")


EXPERIMENT = MNIST01()
