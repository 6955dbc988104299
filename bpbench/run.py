"""One run, end to end: config -> experiment's Task -> variant's learner -> harness -> result.

This is the glue between the registry, the harness and the results; the CLI and `compare` call it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from bpbench import config as C
from bpbench import experiments, variants
from bpbench.errors import BadInput
from bpbench.schema import Final, Memory, RunResult, Timing


def resolve(name: str, config_file: str | None, flags: dict[str, Any]):
    """(ExperimentInfo, validated config) for `bpbench run NAME ...`; raises BadInput."""
    info = experiments.get(name)
    cfg = C.resolve(name, info.keys, config_file, flags)
    experiments.check_variant(info, cfg["variant"])
    variant = variants.get(cfg["variant"])
    others = {k: v for k, v in variants.option_keys().items() if k not in variant.options}
    given = sorted(k for k in others if cfg.get(k) not in (None, False))
    if given:   # e.g. --fused with the manual variant: a flag that does not apply is bad input
        takers = [v.name for v in variants.REGISTRY.values() if given[0] in v.options]
        raise BadInput(f"--{given[0].replace('_', '-')} does not apply to the {variant.name} variant "
                       f"(variants that take it: {', '.join(takers)})")
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


def small_params(params: dict[str, Any], limit: int = 100) -> dict[str, Any] | None:
    """name -> float (one element) or nested lists, for models under `limit` parameters."""
    if sum(p.numel() for p in params.values()) >= limit:
        return None
    return {k: (float(p.reshape(())) if p.numel() == 1 else p.detach().cpu().tolist())
            for k, p in params.items()}


def param_digest(params: dict[str, Any]) -> dict[str, dict]:
    """Per parameter: L2 norm, sum and the first 8 values; enough for the parity guard to tell
    two trajectories apart at 1e-4 without storing every weight."""
    out = {}
    for k, p in params.items():
        flat = p.detach().double().reshape(-1)
        out[k] = {"norm": float(flat.norm()), "sum": float(flat.sum()), "head": flat[:8].cpu().tolist()}
    return out


@dataclass(frozen=True)
class Printer:
    """A log sink for `on_log` that can be handed to spawned ranks (a closure cannot be pickled)."""
    stream: str = "stdout"

    def __call__(self, line: str) -> None:
        print(line, file=getattr(sys, self.stream), flush=True)


def execute(info, cfg: dict[str, Any], *, profile_lines: bool = False,
            on_log: Callable[[str], None] | None = None,
            on_epoch: Callable[[int, int], None] | None = None) -> dict[str, Any] | None:
    """Train once and return the result (status "ok" or "diverged").

    A distributed variant (ddp, allreduce) trains with N ranks (bpbench.distributed): rank 0's
    merged result comes back here; under torchrun, ranks other than 0 return None.
    """
    if variants.get(cfg["variant"]).distributed:
        from bpbench import distributed
        return distributed.execute(info, cfg, profile_lines=profile_lines, on_log=on_log)
    return execute_in_process(info, cfg, profile_lines=profile_lines, on_log=on_log, on_epoch=on_epoch)


def execute_in_process(info, cfg: dict[str, Any], *, profile_lines: bool = False,
                       on_log: Callable[[str], None] | None = None,
                       on_epoch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train once in this process under the harness (every rank of a distributed run does this)."""
    import torch

    from bpbench import envinfo
    from bpbench.harness import memory, stats
    from bpbench.harness.loop import LoopConfig, run_loop
    from bpbench.harness.timer import synchronize
    from bpbench.training import SupervisedSession
    from bpbench.variants.base import prime

    t_start = time.perf_counter()
    rss_start = memory.rss_mib()
    device = pick_device(cfg["device"])
    exp = info.load()
    variant_info = variants.get(cfg["variant"])
    if variant_info.device and variant_info.device != device.type:
        raise BadInput(f"the {variant_info.name} variant runs on {variant_info.device} only "
                       f"(--device {variant_info.device})")

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
        task = exp.build(cfg, device)
        learner = variant_info.load().learner(task.model, cfg, device)
        session = SupervisedSession(learner, task.batches, task.samples,
                                    (lambda: task.evaluate(learner)) if task.evaluate else None)
        synchronize(device)
        setup_s = time.perf_counter() - t0

        # Priming: real steps on sample batches before the clock, then rewound in place.
        sync = lambda: synchronize(device)   # noqa: E731
        prepare = getattr(learner, "prepare", None)
        first_step_s = prepare(session.sample_batches(), sync) if prepare else \
            prime(learner, session.sample_batches()[:1], steps=1, sync=sync)

        profile = None
        if profile_lines:
            profile = memory.LineProfile()
            targets = getattr(learner, "line_profile_targets", lambda: [(learner, "step")])()
            for obj, name in targets:
                profile.attach(obj, name)

        loop_cfg = LoopConfig(epochs=cfg["epochs"], warmup_steps=cfg.get("warmup_steps", 0),
                              log_every=cfg.get("log_every", 0), eval_every=cfg.get("eval_every", 0),
                              max_updates=cfg.get("updates"))
        res = run_loop(session, loop_cfg, device,
                       on_log=(lambda entry, n: on_log(exp.log_line(entry, n))) if on_log else None,
                       on_epoch=on_epoch)

        t0 = time.perf_counter()
        diverged = res.diverged_at is not None
        metrics = {} if diverged else task.metrics(learner)
        extra = {} if diverged else task.extra(learner)
        synchronize(device)
        eval_s = res.eval_s + time.perf_counter() - t0
    cuda_alloc, cuda_reserved = memory.cuda_peaks_mib(device)

    steady = res.steady_step_s
    steady_total = sum(steady)
    params = learner.params()
    compiles = getattr(learner, "compiles", False)
    result = RunResult(
        experiment=info.name, variant=cfg["variant"], device=device.type, config=cfg, data=task.data,
        reference_variant=variant_info.reference,
        final=Final(loss=res.history[-1]["loss"] if res.history else None, params=small_params(params),
                    metrics=metrics, param_digest=param_digest(params)),
        history=res.history,
        timing=Timing(
            device_init_s=device_init_s, setup_s=setup_s,
            compile_s=first_step_s if compiles else None, first_step_s=None if compiles else first_step_s,
            warmup_s=res.warmup_s, train_s=res.train_s, eval_s=eval_s,
            total_s=time.perf_counter() - t_start, steps=res.steps, warmup_steps=res.warmup_steps,
            step_s_median=stats.median(steady), step_s_iqr=stats.iqr(steady),
            samples_per_s=(res.steady_samples / steady_total) if steady_total > 0 else None,
            step_s_all=list(steady)),
        memory=Memory(rss_start_mib=rss_start, rss_peak_mib=rss.peak, rss_samples=rss.samples,
                      cuda_peak_allocated_mib=cuda_alloc, cuda_peak_reserved_mib=cuda_reserved,
                      line_profile=profile.table() if profile else None),
        env=envinfo.collect(device),
        variant_details=learner.details() if hasattr(learner, "details") else {},
        extra=extra,
    )
    if diverged:
        result.status = "diverged"
        result.error = (f"loss became {res.diverged_loss} at epoch {res.diverged_at}: "
                        "the run diverged (try a smaller --lr)")
    return result.to_dict()
