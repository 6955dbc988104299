"""One run, end to end: config -> experiment -> harness -> a schema-1 result dict.

This is the glue between the registry, the harness and the results; the CLI and `compare` call it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from bpbench import config as C
from bpbench import experiments
from bpbench.errors import BadInput, Diverged
from bpbench.results import SCHEMA_VERSION, small_params


def resolve(name: str, config_file: str | None, flags: dict[str, Any]):
    """(ExperimentInfo, validated config) for `bpbench run NAME ...`; raises BadInput."""
    info = experiments.get(name)
    cfg = C.resolve(name, info.keys, config_file, flags)
    experiments.check_variant(info, cfg["variant"])
    return info, cfg


def pick_device(name: str):
    import torch
    if name == "cuda":
        if not torch.cuda.is_available():
            raise BadInput("--device cuda was asked for, but CUDA is not available on this machine "
                           f"(torch {torch.__version__}, cuda build: {torch.version.cuda or 'none'})")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def execute(info, cfg: dict[str, Any], *, profile_lines: bool = False,
            on_log: Callable[[str], None] | None = None,
            on_epoch: Callable[[int, int, dict | None], None] | None = None) -> dict[str, Any]:
    """Train once under the harness and return the result. Raises Diverged(partial=result)."""
    import torch

    from bpbench import envinfo
    from bpbench.harness import memory, stats
    from bpbench.harness.loop import LoopConfig, run_loop
    from bpbench.harness.timer import synchronize

    t_start = time.perf_counter()
    rss_start = memory.rss_mib()
    device = pick_device(cfg["device"])
    exp = info.load()

    # The CUDA context is a one-time process cost: pay it before the clock of any phase starts.
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.zeros(1, device=device)
        synchronize(device)
        memory.cuda_reset_peaks(device)
    device_init_s = time.perf_counter() - t0

    with memory.RssSampler() as rss:
        t0 = time.perf_counter()
        torch.manual_seed(cfg["seed"])
        built = exp.build(cfg, device)
        synchronize(device)
        setup_s = time.perf_counter() - t0

        profile = None
        if profile_lines and built.session.line_profile_target:
            profile = memory.LineProfile()
            profile.attach(*built.session.line_profile_target)

        loop_cfg = LoopConfig(epochs=cfg["epochs"], warmup_steps=cfg.get("warmup_steps", 0),
                              log_every=cfg.get("log_every", 0), eval_every=cfg.get("eval_every", 0),
                              eval_every_updates=cfg.get("eval_every_updates", 0),
                              max_updates=cfg.get("updates"))
        res = run_loop(built.session, loop_cfg, device,
                       on_log=(lambda entry, n: on_log(exp.log_line(entry, n))) if on_log else None,
                       on_epoch=on_epoch)

        t0 = time.perf_counter()
        diverged = res.diverged_at is not None
        metrics = {} if diverged else built.metrics()
        extra = {} if diverged else built.extra()
        synchronize(device)
        eval_s = res.eval_s + time.perf_counter() - t0
    cuda_alloc, cuda_reserved = memory.cuda_peaks_mib(device)

    steady = res.steady_step_s
    steady_total = sum(steady)
    result = {
        "schema": SCHEMA_VERSION,
        "experiment": info.name,
        "variant": cfg["variant"],
        "device": device.type,
        "config": cfg,
        "data": built.data,
        "final": {
            "loss": res.history[-1]["loss"] if res.history else None,
            "params": small_params(built.session.params()),
            "metrics": metrics,
        },
        "history": res.history,
        "evaluations": res.evaluations,
        "timing": {
            "device_init_s": device_init_s,
            "setup_s": setup_s,
            "warmup_s": res.warmup_s,
            "train_s": res.train_s,
            "eval_s": eval_s,
            "total_s": time.perf_counter() - t_start,
            "steps": res.steps,
            "warmup_steps": res.warmup_steps,
            "step_s_median": stats.median(steady),
            "step_s_iqr": stats.iqr(steady),
            "step_s_all": steady,       # every steady step, in order: compare's noise estimate needs them
            "samples_per_s": (res.steady_samples / steady_total) if steady_total > 0 else None,
        },
        "memory": {
            "rss_start_mib": rss_start,
            "rss_peak_mib": rss.peak,
            "rss_samples": rss.samples,
            "cuda_peak_allocated_mib": cuda_alloc,
            "cuda_peak_reserved_mib": cuda_reserved,
            "line_profile": profile.table() if profile else None,
        },
        "env": envinfo.collect(device),
        "status": "diverged" if diverged else "ok",
        **extra,
    }
    if diverged:
        err = Diverged(res.diverged_at, res.diverged_loss, partial=result)
        result["error"] = str(err)
        raise err
    return result
