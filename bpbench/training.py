"""Shared training pieces every experiment composes: batching, parameter naming, and the
`SupervisedSession` that the harness drives (it follows harness.loop.Trainable). How a model is
trained (the learners) lives in bpbench.variants.

- ResidentBatches: the data lives on the device; an epoch is the whole set (gradient descent)
  or mini-batches of it: seeded shuffled index slices, slices in data order, or seeded draws
  with replacement.
- LoaderBatches: TensorDataset + DataLoader, as seed 004 writes it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from bpbench.errors import BadInput


class ResidentBatches:
    def __init__(self, x: Tensor, y: Tensor, batch_size: int | None, seed: int,
                 shuffle: bool = True, replacement: bool = False):
        self.x, self.y = x, y
        self.n = len(x)
        self.batch_size = self.n if batch_size is None else min(batch_size, self.n)
        self.steps_per_epoch = -(-self.n // self.batch_size)
        self.shuffle, self.replacement = shuffle, replacement
        # A CPU generator whatever the device: CPU and CUDA runs of one seed see the same batches.
        self.gen = torch.Generator().manual_seed(seed)

    def sample_batches(self):
        return _sample_batches(self.x, self.y, self.batch_size)

    def epoch(self):
        if self.batch_size == self.n:      # gradient descent: no shuffle, no copy
            return iter([(self.x, self.y)])
        if self.replacement:   # seed 001: every batch drawn anew, np.random.choice(n, batch) style
            draws = torch.randint(self.n, (self.steps_per_epoch, self.batch_size),
                                  generator=self.gen).to(self.x.device, non_blocking=True)
            return ((self.x.index_select(0, idx), self.y.index_select(0, idx)) for idx in draws)
        if not self.shuffle:   # in data order, as a DataLoader without shuffle=True: views, no copy
            return zip(self.x.split(self.batch_size), self.y.split(self.batch_size))
        perm = torch.randperm(self.n, generator=self.gen).to(self.x.device, non_blocking=True)
        return ((self.x.index_select(0, idx), self.y.index_select(0, idx)) for idx in perm.split(self.batch_size))


class LoaderBatches:
    def __init__(self, x: Tensor, y: Tensor, batch_size: int | None, seed: int, device=None,
                 shuffle: bool = True, replacement: bool = False):
        n = len(x)
        bs = n if batch_size is None else min(batch_size, n)
        self.steps_per_epoch = -(-n // bs)
        self.device = torch.device(device) if device is not None else x.device
        # The DataLoader reads from host memory, as seed 004's does; batches then move to the device.
        ds = torch.utils.data.TensorDataset(x.cpu(), y.cpu())
        gen = torch.Generator().manual_seed(seed)
        if replacement and bs < n:
            sampler = torch.utils.data.RandomSampler(ds, replacement=True, generator=gen,
                                                     num_samples=self.steps_per_epoch * bs)
            self.loader = torch.utils.data.DataLoader(ds, batch_size=bs, sampler=sampler)
        else:
            self.loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=shuffle and bs < n, generator=gen)
        self.bs = bs

    def sample_batches(self):
        x, y = self.loader.dataset.tensors
        return [(xb.to(self.device), yb.to(self.device)) for xb, yb in _sample_batches(x, y, self.bs)]

    def epoch(self):
        if self.device.type == "cpu":
            return iter(self.loader)
        return ((xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True))
                for xb, yb in self.loader)


def _sample_batches(x: Tensor, y: Tensor, bs: int) -> list[tuple[Tensor, Tensor]]:
    """The first full batch, and a last, smaller one when the data does not divide evenly."""
    out = [(x[:bs], y[:bs])]
    if len(x) % bs:
        r = len(x) % bs
        out.append((x[:r], y[:r]))
    return out


def make_batches(loader: str, x: Tensor, y: Tensor, batch_size, seed: int, device=None,
                 shuffle: bool = True, replacement: bool = False):
    """Resident batches index x, y where they are; a DataLoader reads them from host memory and
    moves each batch to `device` (default: where x is). Mini-batches are reshuffled every epoch,
    taken in data order (shuffle=False), or drawn with replacement for every update."""
    bs = None if batch_size == "full" else int(batch_size)
    if replacement and not shuffle:
        raise BadInput("shuffle=false (data order) does not apply to mini-batches drawn with replacement")
    if loader == "dataloader":
        return LoaderBatches(x, y, bs, seed, device, shuffle, replacement)
    return ResidentBatches(x, y, bs, seed, shuffle, replacement)


def linear_param_paths(model: nn.Module) -> dict[str, str]:
    """layer{k}.weight / layer{k}.bias for the k-th nn.Linear -> its path in model.state_dict().

    The manual networks name their parameters layer1.weight, ...; this maps those names onto any
    torch module built of nn.Linear layers, so both variants report and exchange the same keys.
    """
    out = {}
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    for k, (path, _) in enumerate(linears, 1):
        for p in ("weight", "bias"):
            out[f"layer{k}.{p}"] = f"{path}.{p}"
    return out


def linear_param_names(model: nn.Module) -> dict[str, Tensor]:
    """layer{k}.weight -> the parameter tensor itself."""
    named = dict(model.named_parameters())
    return {nice: named[path] for nice, path in linear_param_paths(model).items()}


def manual_grads(make_net: Callable[[dict[str, Tensor]], object], x: Tensor, y: Tensor):
    """grads(params) of a hand-written network built by make_net (for gradcheck)."""
    def grads(params: dict[str, Tensor]) -> dict[str, Tensor]:
        net = make_net({k: v.clone() for k, v in params.items()})
        net.loss(x, y)
        net.backward()
        return net.grads()
    return grads


def module_loss(model: nn.Module, loss_fn, x: Tensor, y: Tensor):
    """loss(params) of a module whose parameters are given by their layer{k} names (for gradcheck)."""
    paths = linear_param_paths(model)

    def loss(params: dict[str, Tensor]) -> Tensor:
        out = torch.func.functional_call(model, {paths[k]: v for k, v in params.items()}, (x,))
        return loss_fn(out, y)
    return loss


class SupervisedSession:
    """One model being trained on (x, y) by a learner; what the harness drives."""

    def __init__(self, learner, batches, samples: int,
                 evaluate: Callable[[], dict[str, float]] | None = None):
        self.learner = learner
        self.batches = batches
        self.steps_per_epoch = batches.steps_per_epoch
        self.samples_per_epoch = samples
        self._evaluate = evaluate
        self._it = None

    def begin_epoch(self, epoch: int) -> None:
        self._it = self.batches.epoch()

    def step(self) -> Tensor:
        x, y = next(self._it)
        return self.learner.step(x, y)

    def evaluate(self) -> dict[str, float]:
        return self._evaluate() if self._evaluate else {}

    def sample_batches(self) -> list[tuple[Tensor, Tensor]]:
        """One batch of every size an epoch yields, drawn without touching the shuffling RNG."""
        return self.batches.sample_batches()

    def params(self) -> dict[str, Tensor]:
        return self.learner.params()
