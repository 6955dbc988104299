"""What the data-parallel variants (ddp, allreduce) share; not a variant itself.

Every rank holds the whole training set and draws the same global batches (same seed, same
shuffle); `Shard.cut` gives each rank a contiguous slice of every global batch (a view, no copy).
When the batch does not divide evenly the slices differ by one sample, so each rank weights its
gradient by its share n_r / n before the sum: the ranks then hold the gradient of the global
batch's mean loss, what one process training on the whole batch computes (with equal shards the
weight is 1/N: the plain average).

The loss is summed the same way, one scalar all-reduce per step, so every rank records the global
batch's loss (the number a single process prints) and all ranks see a NaN at the same step and stop
together: a divergence can never leave one rank waiting in a collective the others have left.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import Tensor

from bpbench.errors import BadInput
from bpbench.variants.base import prime


class CommClock:
    """Seconds spent in collectives, per step.

    On CPU, perf_counter (a gloo all-reduce blocks, or completes in gloo's own thread for DDP's
    asynchronous buckets); on CUDA, events on the stream (NCCL runs asynchronously), read after the
    loop so the hot loop never waits for the GPU.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.steps: list[list[tuple]] = []
        self._open: list[tuple] = []

    def start(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def stop(self, t0) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self._open.append((t0, ev))
        else:
            self._open.append((t0, time.perf_counter()))

    def end_step(self) -> None:
        self.steps.append(self._open)
        self._open = []

    def clear(self) -> None:
        self.steps, self._open = [], []

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [sum(a.elapsed_time(b) / 1000.0 for a, b in step) for step in self.steps]
        return [sum(b - a for a, b in step) for step in self.steps]


class Shard:
    """This rank's place in the world: its slice of each batch, the loss sum, the comm clock."""

    def __init__(self, device: torch.device, variant: str):
        if not dist.is_initialized():
            raise BadInput(f"the {variant} variant trains on torch.distributed: run it through "
                           "`bpbench run` (which launches the ranks) or under torchrun")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.clock = CommClock(device)

    def cut(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float]:
        """(this rank's rows of x, of y, its share of the batch)."""
        n = len(x)
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        return x[lo:hi], y[lo:hi], (hi - lo) / n

    def global_loss(self, loss: Tensor, share: float) -> Tensor:
        """The global batch's mean loss, on every rank."""
        total = loss.detach() * share
        t0 = self.clock.start()
        dist.all_reduce(total)
        self.clock.stop(t0)
        self.clock.end_step()
        return total

    def prepare(self, learner, samples, sync) -> float:
        """Check every batch has a sample for every rank, then prime as a single process does
        (one real step, rewound; identical on every rank) and forget its communication."""
        smallest = min(len(x) for x, _ in samples)
        if smallest < self.world:
            largest = len(samples[0][0])
            which = "the batch" if smallest == largest else \
                f"the last batch of each epoch (after the full ones of {largest})"
            raise BadInput(f"--nproc {self.world} is more ranks than {which} has samples ({smallest}); "
                           "every rank needs at least one: use fewer ranks or another batch size")
        seconds = prime(learner, samples[:1], steps=1, sync=sync)
        self.clock.clear()
        return seconds

    def details(self) -> dict:
        """The per-step communication seconds (bpbench.distributed moves them into the result's
        `distributed` section)."""
        return {"comm_s_all": self.clock.seconds()}


class ShardedLearner:
    """Mixin for a learner with a `shard`: it primes and reports through it."""
    shard: Shard

    def prepare(self, samples, sync) -> float:
        return self.shard.prepare(self, samples, sync)

    def details(self) -> dict:
        return self.shard.details()
