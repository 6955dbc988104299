"""allreduce: data parallelism by hand. The manual variant's hand-written backward on this rank's
shard of the global batch, then one `dist.all_reduce` per gradient, then the same update.

Each gradient is first weighted by the rank's share of the batch (n_r / n; 1/N with equal shards,
so the sum is the average), then summed over ranks in place: every rank ends up holding the
global batch's gradient and makes the update one process would make on the whole batch. No
buckets and no overlap: the all-reduces run one after another once the backward is done, which
is what DDP's bucketing and overlapping improve on.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

from bpbench.variants import REGISTRY
from bpbench.variants.dataparallel import Shard, ShardedLearner
from bpbench.variants.manual import ManualLearner, hand_optimizer


class AllReduceLearner(ShardedLearner, ManualLearner):
    def __init__(self, net, optimizer, shard: Shard):
        super().__init__(net, optimizer)
        self.shard = shard

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        xs, ys, share = self.shard.cut(x, y)
        loss = self.net.loss(xs, ys)
        self.net.backward()
        clock = self.shard.clock
        t0 = clock.start()
        for grad in self.net.grads().values():
            grad.mul_(share)
            dist.all_reduce(grad)          # sum over ranks, in place
        clock.stop(t0)
        self.update()
        return self.shard.global_loss(loss, share)


class AllReduce:
    info = REGISTRY["allreduce"]

    def learner(self, model, cfg, device) -> AllReduceLearner:
        return AllReduceLearner(model.manual(), hand_optimizer(model, self.info.name), Shard(device, self.info.name))


VARIANT = AllReduce()
