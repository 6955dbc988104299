"""What one training step does, op by op: FLOPs, bytes moved and ATen calls, per phase.

A TorchDispatchMode, in the manner of torch.utils.flop_counter.FlopCounterMode, sees every ATen
op a step dispatches below autograd (the forward's, the autograd engine's during backward, the
optimizer's) and counts, for each op:

- matrix-product FLOPs: FlopCounterMode's own formulas (its registry: mm, addmm, bmm,
  convolutions, attention; 2 per multiply-add);
- element-wise FLOPs: one per element the op writes, or per element of its largest input when
  that is larger (a reduction such as sum or a loss reads n elements to write one); ops that only
  move or create data (copies, fills, zeros, index_select, ...) count none;
- bytes: every tensor the op reads plus every tensor it writes, each in full (an unfused count:
  the traffic an eager step moves if nothing stays in cache from one op to the next); views and
  other metadata-only ops (t, view, detach, empty) move none;
- ATen calls: every op in the aten namespace, views included (each costs a dispatch).

Unlike FlopCounterMode the mode never decomposes an op: the calls it counts are the calls eager
execution makes, which is what the per-op overhead ceiling multiplies.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from bpbench.variants.phases import PHASES, Recorder

KINDS = ("matmul_flops", "elementwise_flops", "bytes", "aten_ops")
SIZE_KEY = "bytes@2^"        # a running total of the bytes of ops of one size class

# Ops that read or write no tensor data: allocation, aliasing and metadata (beside every op whose
# schema says it returns a view, e.g. t, view, expand, detach).
NO_TRAFFIC = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_unsafe_view",
              "resize_", "set_", "alias", "lift_fresh", "_reshape_alias"}
# Ops that read only their inputs' shapes (zeros_like(x) never reads x).
READS_NO_INPUT = {"zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "new_zeros",
                  "new_ones", "new_full"}
# Ops that move or create data without arithmetic: bytes, but no FLOPs.
NO_ARITHMETIC = NO_TRAFFIC | READS_NO_INPUT | {
    "zeros", "ones", "full", "scalar_tensor", "copy_", "_to_copy", "clone", "fill_", "zero_",
    "index_select", "gather", "cat", "stack", "_local_scalar_dense", "randperm", "randint", "rand",
    "randn", "arange", "linspace", "contiguous", "_copy_from", "_copy_from_and_resize", "masked_select"}
# Queries FlopCounterMode lets through uncounted too: they reach a mode only for tensor subclasses.
_QUERIES = {"is_contiguous", "sym_is_contiguous", "is_strides_like_format", "is_non_overlapping_and_dense",
            "size", "sym_size", "stride", "sym_stride", "storage_offset", "sym_storage_offset", "numel",
            "sym_numel", "dim"}


def distinct_bytes(t) -> int:
    """The bytes a tensor's elements occupy, each once: an expanded (stride-0) dimension, such as
    a broadcast bias, repeats no data."""
    return t.element_size() * math.prod(n for n, s in zip(t.shape, t.stride()) if s != 0)


def _tensors(tree) -> list:
    import torch
    from torch.utils._pytree import tree_leaves
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _bound(func, args, kwargs) -> list[tuple[Any, Any]]:
    """(schema argument, value) of every argument the op was called with."""
    schema = func._schema.arguments
    by_name = {a.name: a for a in schema}
    return list(zip(schema, args)) + [(by_name[k], v) for k, v in kwargs.items() if k in by_name]


def _read_and_written(func, args, kwargs, out) -> tuple[list, list]:
    """The tensors the op reads (every argument but an out= buffer) and those it writes: its
    outputs, or for in-place ops that return nothing (torch.optim's _foreach_add_, _fused_adam_)
    the arguments its schema marks as mutated."""
    bound = _bound(func, args, kwargs)
    name = func._overloadpacket.__name__
    read = [] if name in READS_NO_INPUT else _tensors([v for a, v in bound if not a.is_out])
    written = _tensors(out) or _tensors([v for a, v in bound if a.alias_info is not None and a.alias_info.is_write])
    return read, written


def op_counts(func, args, kwargs, out, registry) -> dict[str, int]:
    """One ATen call's matmul FLOPs, element-wise FLOPs, bytes read + written, and 1 (the call)."""
    name = func._overloadpacket.__name__
    packet = func._overloadpacket
    if func.is_view or name in NO_TRAFFIC:
        return {"matmul_flops": 0, "elementwise_flops": 0, "bytes": 0, "aten_ops": 1}
    read, written = _read_and_written(func, args, kwargs, out)
    moved = sum(map(distinct_bytes, read)) + sum(map(distinct_bytes, written))
    matmul = int(registry[packet](*args, **kwargs, out_val=out)) if packet in registry else 0
    elementwise = 0
    if not matmul and name not in NO_ARITHMETIC:
        elementwise = max(sum(t.numel() for t in written), max((t.numel() for t in read), default=0))
    return {"matmul_flops": matmul, "elementwise_flops": elementwise, "bytes": moved, "aten_ops": 1}


def _mode_class():
    """The dispatch mode, built on first use (torch is imported only when a step is counted)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class StepCounter(TorchDispatchMode):
        """Counts every ATen call: totals (read by the phase recorder) and per-op rows."""

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # TorchDispatchMode wraps a subclass's __torch_dispatch__ to keep torch.compile out of
            # it, which imports torch._dynamo (over a second). This mode never runs under compile:
            # compiled variants are counted on their eager step.
            return False

        def __init__(self):
            super().__init__()
            from torch.utils.flop_counter import flop_registry
            self.registry = flop_registry
            self.totals = dict.fromkeys(KINDS, 0)
            self.by_op: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = func._overloadpacket.__name__
            if func.namespace != "aten" or name in _QUERIES:   # e.g. the profiler's record_function ops
                return out
            counts = op_counts(func, args, kwargs, out, self.registry)
            row = self.by_op[f"aten.{name}"]
            for k, v in counts.items():
                self.totals[k] += v
                row[k] += v
            if counts["bytes"]:   # binned by the op's own traffic: what a cache can hold of it
                size = f"{SIZE_KEY}{counts['bytes'].bit_length() - 1}"
                self.totals[size] = self.totals.get(size, 0) + counts["bytes"]
            return out

    return StepCounter


def _summary(c: dict[str, int]) -> dict[str, Any]:
    """The per-step keys of a result's analysis, from one set of counts. `bytes_by_op_size`:
    {k: bytes moved by ops that each move 2^k to 2^(k+1) - 1 bytes}."""
    by_size = {int(k.removeprefix(SIZE_KEY)): v for k, v in c.items() if k.startswith(SIZE_KEY) and v}
    return {"flops_per_step": c["matmul_flops"] + c["elementwise_flops"], "matmul_flops": c["matmul_flops"],
            "elementwise_flops": c["elementwise_flops"], "bytes_per_step": c["bytes"],
            "aten_ops_per_step": c["aten_ops"], "bytes_by_op_size": {str(k): by_size[k] for k in sorted(by_size)}}


def count_step(learner, x, y, sync=lambda: None, top: int = 8) -> dict[str, Any]:
    """Counts of one step of `learner` on (x, y), in all and per phase; the learner is left as it
    was (the step is rewound). `top_ops`: the `top` ops that move the most bytes."""
    from bpbench.variants.base import rewound

    step = getattr(learner, "eager_step", learner.step)
    counter = _mode_class()()
    with rewound(learner, sync):
        with counter, Recorder(counts=lambda: dict(counter.totals)) as rec:
            step(x, y)
            sync()
    out = _summary(counter.totals)
    out["phases"] = {p: _summary(rec.counts[p]) for p in PHASES if p in rec.counts}
    # What ran outside every marked phase (e.g. the step's closing loss.detach()): kept, never dropped.
    outside = {k: v - sum(rec.counts[p].get(k, 0) for p in rec.counts) for k, v in counter.totals.items()}
    out["outside_phases"] = _summary(outside)
    rows = sorted(counter.by_op.items(), key=lambda kv: (-kv[1]["bytes"], kv[0]))
    out["top_ops"] = [{"op": op, "calls": c["aten_ops"], "bytes": c["bytes"],
                       "flops": c["matmul_flops"] + c["elementwise_flops"]} for op, c in rows[:top]]
    return out


def counts_what_runs(learner) -> bool:
    """Whether the counted step is the step the learner runs: not so for a variant whose step runs
    compiled or replayed kernels (its `eager_step` stands in for it, which the counter can see)."""
    eager = getattr(type(learner), "eager_step", None)
    return eager is None or eager is type(learner).step


def analyse(experiment: str, cfg: dict[str, Any], learner, x, y, ceilings: dict[str, Any],
            step_s: float | None, sync=lambda: None) -> dict[str, Any]:
    """A result's `analysis` (bpbench.results.bounds.analyse) of one counted step of `learner`,
    the counts read from the per-shape cache when this model's step was counted before
    (measure.countcache: counting costs a step under the mode and torch's FLOP formulas' import)."""
    from bpbench.measure import countcache
    from bpbench.results.bounds import analyse as arithmetic
    key = countcache.step_key("step counts", experiment, cfg, x.device.type, countcache.step_tensors(learner, x, y))
    counts, source = countcache.cached(key, lambda: count_step(learner, x, y, sync))
    return {**arithmetic(counts, ceilings, step_s, eager_only=not counts_what_runs(learner)), "counts_source": source}
