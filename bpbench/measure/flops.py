"""FLOPs of one training step, split into forward, backward and update, and what they achieve.

Counted with torch.utils.flop_counter.FlopCounterMode, which counts matrix products (mm, addmm,
bmm, convolutions, attention) at 2 FLOPs per multiply-add and nothing else: element-wise ops
(activations, losses, bias adds, the optimizer's update) are not counted, so `update` is 0 for
SGD and Adam. One representative step (the first full batch) runs under the counter after the
timed loop, with phase marks on, and is rewound in place, so the trajectory stays the run's.
`counted_step` reads the counts from the per-shape cache (measure.countcache) where a run of the
same model counted them before: the counter's first use costs more than a small run.
"""

from __future__ import annotations

from typing import Any

from bpbench.variants.phases import PHASES, Recorder

NOTE = ("matrix products only (FlopCounterMode: 2 per multiply-add); element-wise ops such as "
        "activations, losses, bias adds and the optimizer's update are not counted")


def count_step(learner, x, y, sync=lambda: None, cuda_memory: bool = False) -> dict[str, Any]:
    """FLOPs of one step of `learner` on (x, y), per phase; the learner is left as it was.

    With `cuda_memory`, also each phase's CUDA peak above its start (the peak statistics are reset
    at every phase boundary) and the cuBLAS workspace, measured apart.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bpbench.variants.base import rewound

    step = getattr(learner, "eager_step", learner.step)
    memory = None
    if cuda_memory:
        device = x.device
        memory = (lambda: torch.cuda.reset_peak_memory_stats(device),
                  lambda: torch.cuda.memory_allocated(device), lambda: torch.cuda.max_memory_allocated(device))
    counter = FlopCounterMode(display=False)
    with rewound(learner, sync):
        with counter, Recorder(flops=counter.get_total_flops, memory=memory) as rec:
            step(x, y)
            sync()
    by_op = counter.get_flop_counts().get("Global", {})
    out: dict[str, Any] = {p: int(rec.flops.get(p, 0)) for p in PHASES}
    out.update(per_step=int(counter.get_total_flops()), samples=int(len(x)),
               counted_ops={str(op): int(n) for op, n in sorted(by_op.items(), key=lambda kv: str(kv[0]))},
               note=NOTE)
    # What ran outside any marked phase (a learner that marks none): counted, never dropped.
    out["unattributed"] = out["per_step"] - sum(out[p] for p in PHASES)
    if cuda_memory:
        out["cuda_phase_peak_mib"] = {p: rec.peak_bytes[p] / 2**20 for p in PHASES if p in rec.peak_bytes}
        out["cublas_workspace_mib"] = cublas_workspace_mib(x.device)
    return out


def counted_step(experiment: str, cfg: dict[str, Any], learner, x, y, sync=lambda: None,
                 cuda_memory: bool = False) -> dict[str, Any]:
    """count_step's figures plus their `source`: the cache's, or counted now (and cached)."""
    if cuda_memory:   # each phase's CUDA peak is measured with the count: every run measures it
        return {**count_step(learner, x, y, sync, cuda_memory=True), "source": "counted now"}
    from bpbench.measure import countcache
    key = countcache.step_key("flops", experiment, cfg, x.device.type, countcache.step_tensors(learner, x, y))
    counts, source = countcache.cached(key, lambda: count_step(learner, x, y, sync))
    return {**counts, "source": source}


def cublas_workspace_mib(device) -> float | None:
    """The cuBLAS workspaces' share of allocated CUDA memory: what freeing them returns.

    PyTorch allocates them through its caching allocator on the first matrix product of each
    stream; they are reallocated on the next one (outside the timed loop: this runs after it).
    """
    import torch
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is None:
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    clear()
    return (before - torch.cuda.memory_allocated(device)) / 2**20


def throughput(flops_per_step: int | None, step_s: float | None, peak: dict[str, Any] | None) -> dict[str, Any]:
    """Achieved GFLOP/s (FLOPs / median step time) and its share of the measured peak
    (nanoGPT's model FLOPs utilisation, with a measured denominator)."""
    achieved = flops_per_step / step_s / 1e9 if flops_per_step and step_s else None
    peak_g = peak.get("gflops") if peak else None
    return {"achieved_gflops": achieved, "peak_gflops": peak_g,
            "peak_source": peak.get("source") if peak else None,
            "percent_of_peak": 100.0 * achieved / peak_g if achieved is not None and peak_g else None}
