"""ddp: the autograd step with the module wrapped in DistributedDataParallel.

Each rank runs forward and backward on its shard of the global batch (dataparallel.Shard); DDP
sums the gradients in buckets, each all-reduce launched as soon as its bucket's gradients are
ready, overlapping communication with the rest of the backward. DDP divides the sum by the number
of ranks, so a shard's loss is weighted by N * n_r / n before backward (1, i.e. nothing to do,
when the shards are equal): the update is the one a single process makes on the whole batch.

The buckets go through DDP's own all-reduce hook (default_hooks.allreduce_hook), wrapped only to
time each bucket from launch to completion; that time overlaps the backward, so the reported
communication share is what the all-reduces took, not all of it what the step waited for.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from bpbench.variants import REGISTRY
from bpbench.variants.base import TorchLearner, make_optimizer
from bpbench.variants.dataparallel import Shard, ShardedLearner


def timed_allreduce(shard, bucket):   # unannotated: DDP rejects a hook whose annotations are strings
    """DDP's default bucket all-reduce (average over ranks), timed by the shard's comm clock."""
    t0 = shard.clock.start()

    def done(fut):
        shard.clock.stop(t0)
        return fut.value()

    return default_hooks.allreduce_hook(None, bucket).then(done)


class DDPLearner(ShardedLearner, TorchLearner):
    def __init__(self, ddp: DistributedDataParallel, loss_fn, optimizer, names, shard: Shard):
        super().__init__(ddp, loss_fn, optimizer, names)
        self.shard = shard

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        xs, ys, share = self.shard.cut(x, y)
        loss = self.loss_fn(self.module(xs), ys)
        self.optimizer.zero_grad()
        scale = share * self.shard.world
        (loss if scale == 1.0 else loss * scale).backward()
        self.optimizer.step()
        return self.shard.global_loss(loss, share)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        # The replica itself: evaluation is local to each rank and needs no collective.
        return self.module.module(x)


class DDP:
    info = REGISTRY["ddp"]

    def learner(self, model, cfg, device) -> DDPLearner:
        shard = Shard(device, self.info.name)
        module = model.module
        optimizer = make_optimizer(model.optimizer, module.parameters(), cfg)
        # Every rank built the same initial weights from the same seed; DDP broadcasts rank 0's anyway.
        ddp = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        ddp.register_comm_hook(shard, timed_allreduce)
        return DDPLearner(ddp, model.loss_fn, optimizer, model.params(module), shard)


VARIANT = DDP()
