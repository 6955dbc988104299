"""One run, end to end: config -> experiment's Task -> variant's learner -> harness -> result.

This is the glue between the registry, the harness and the results; the CLI and `compare` call it.
"""

from __future__ import annotations

import math
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


# What torch raises, instead of returning NaN, when a non-finite value reaches it: nn.BCELoss on
# a probability that overflowed to NaN (huge but finite weights are enough: inf - inf).
_NON_FINITE_ERRORS = ("all elements of input should be between 0 and 1",)


def _refuses_non_finite(error: Exception) -> bool:
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _NON_FINITE_ERRORS)


def check_memory(info, cfg: dict[str, Any], device) -> None:
    """Refuse, before anything is allocated, a run whose estimated memory exceeds what its device
    has: the experiment's Footprint (data, model, optimizer state, activations) plus the
    harness's records of every epoch and update. An estimate, so it errs only on the impossible:
    it compares with the total memory, not with what happens to be free."""
    import psutil

    from bpbench.harness.loop import record_bytes

    fp = info.footprint(cfg)
    steps = cfg.get("updates") or cfg["epochs"] * fp.steps_per_epoch
    records = record_bytes(math.ceil(steps / fp.steps_per_epoch), steps)
    ram = psutil.virtual_memory().total
    parts = [("data, model and activations", fp.device_bytes), (f"history of {steps:,} updates", records)]
    if device.type == "cuda":
        import torch
        _refuse_beyond(info.name, parts[:1], torch.cuda.get_device_properties(device).total_memory, "the GPU")
        parts = parts[1:]
    _refuse_beyond(info.name, parts, ram, "this machine")


def _refuse_beyond(name: str, parts: list[tuple[str, int]], total: int, where: str) -> None:
    need = sum(n for _, n in parts)
    if need > total:
        gib = 1024 ** 3
        raise BadInput(f"{name} would need about {need / gib:,.1f} GiB of memory ("
                       + ", ".join(f"{what} {n / gib:,.1f} GiB" for what, n in parts)
                       + f"); {where} has {total / gib:,.1f} GiB: use a smaller size or fewer epochs")


def _representable_lr(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config the experiment builds from. Every model trains in float32, where an lr beyond
    its largest value rounds to inf; torch's optimizers refuse to convert such an lr ("value
    cannot be converted to type float without overflow") instead. Handing them inf, the value
    the arithmetic would use, makes the first update non-finite and the run diverge (exit 3) like
    any other too-large lr, in every variant. The result's config keeps the lr as given."""
    import torch
    if cfg["lr"] <= torch.finfo(torch.float32).max:
        return cfg
    return {**cfg, "lr": math.inf}


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


def build_session(info, cfg: dict[str, Any], device):
    """(task, learner, session): the experiment's Task, the variant's learner for its Model, and
    the session the harness drives. Seeds torch first, as every source does before its net."""
    import torch

    from bpbench.training import SupervisedSession

    variant_info = variants.get(cfg["variant"])
    if variant_info.device and variant_info.device != device.type:
        raise BadInput(f"the {variant_info.name} variant runs on {variant_info.device} only "
                       f"(--device {variant_info.device})")
    torch.manual_seed(cfg["seed"])
    built_cfg = _representable_lr(cfg)
    task = info.load().build(built_cfg, device)
    learner = variant_info.load().learner(task.model, built_cfg, device)
    session = (task.session or SupervisedSession)(learner, task.batches, task.samples,
                                                  (lambda: task.evaluate(learner)) if task.evaluate else None)
    return task, learner, session


def execute(info, cfg: dict[str, Any], *, profile_lines: bool = False, profile_ops: bool = False,
            trace_file=None, on_log: Callable[[str], None] | None = None,
            on_epoch: Callable[[int, int, dict | None], None] | None = None) -> dict[str, Any] | None:
    """Train once and return the result (status "ok" or "diverged").

    A distributed variant (ddp, allreduce) trains with N ranks (bpbench.distributed): rank 0's
    merged result comes back here; under torchrun, ranks other than 0 return None.
    """
    if variants.get(cfg["variant"]).distributed:
        from bpbench import distributed
        return distributed.execute(info, cfg, profile_lines=profile_lines, on_log=on_log)
    return execute_in_process(info, cfg, profile_lines=profile_lines, profile_ops=profile_ops,
                              trace_file=trace_file, on_log=on_log, on_epoch=on_epoch)


def execute_in_process(info, cfg: dict[str, Any], *, profile_lines: bool = False, profile_ops: bool = False,
                       trace_file=None, on_log: Callable[[str], None] | None = None,
                       on_epoch: Callable[[int, int, dict | None], None] | None = None) -> dict[str, Any]:
    """Train once under the harness and return the result (status "ok" or "diverged").

    After training (never inside the timed loop): one step's FLOPs are counted, the machine's
    peak is looked up (or measured once and cached), and with `profile_ops` a few steps run
    under torch.profiler; each of these rewinds the learner, so the trajectory is the run's.
    """
    import torch

    from bpbench import envinfo, opprofile, peak
    from bpbench.flops import count_step, throughput
    from bpbench.harness import memory, stats
    from bpbench.harness.loop import LoopConfig, run_loop
    from bpbench.harness.timer import synchronize
    from bpbench.variants.base import prime

    t_start = time.perf_counter()
    if cfg.get("threads"):   # before any torch work: set_num_threads is reliable once per process
        torch.set_num_threads(cfg["threads"])
    rss_start = memory.rss_mib()
    device = pick_device(cfg["device"])
    check_memory(info, cfg, device)
    exp = info.load()
    variant_info = variants.get(cfg["variant"])

    # The CUDA context is a one-time process cost: pay it before the clock of any phase starts.
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.zeros(1, device=device)
        synchronize(device)
        memory.cuda_reset_peaks(device)
    device_init_s = time.perf_counter() - t0

    with memory.PeakRss() as setup_rss:
        t0 = time.perf_counter()
        task, learner, session = build_session(info, cfg, device)
        synchronize(device)
        setup_s = time.perf_counter() - t0

        # Priming: real steps on sample batches before the clock, then rewound in place.
        sync = lambda: synchronize(device)   # noqa: E731
        prepare = getattr(learner, "prepare", None)
        try:
            first_step_s = prepare(session.sample_batches(), sync) if prepare else \
                prime(learner, session.sample_batches()[:1], steps=1, sync=sync)
        except RuntimeError as e:    # a diverging lr can break the model already here; rewound,
            if not _refuses_non_finite(e):   # the timed loop meets it again and reports it (exit 3)
                raise
            first_step_s = None
    # The baseline the model's own training memory is measured from: data, model, optimizer and
    # the primed step's buffers are in; imports and torch's one-time state too.
    rss_setup = memory.rss_mib()

    with memory.PeakRss() as rss:
        lines = None
        if profile_lines:
            lines = memory.LineProfile()
            targets = getattr(learner, "line_profile_targets", lambda: [(learner, "step")])()
            for obj, name in targets:
                lines.attach(obj, name)

        loop_cfg = LoopConfig(epochs=cfg["epochs"], warmup_steps=cfg.get("warmup_steps", 0),
                              log_every=cfg.get("log_every", 0), eval_every=cfg.get("eval_every", 0),
                              eval_every_updates=cfg.get("eval_every_updates", 0),
                              max_updates=cfg.get("updates"))

        def finite() -> bool:
            return all(bool(torch.isfinite(p).all()) for p in learner.params().values())

        res = run_loop(session, loop_cfg, device,
                       on_log=(lambda entry, n: on_log(exp.log_line(entry, n))) if on_log else None,
                       on_epoch=on_epoch, diverged_by=lambda e: _refuses_non_finite(e) or not finite())
        if res.diverged_at is None and res.history and not finite():
            # The last update broke the model after its loss was read: still a divergence, and
            # evaluating it would only raise (nn.BCELoss refuses NaN input).
            res.diverged_at, res.diverged_loss, res.diverged_inside = res.history[-1]["epoch"], \
                res.history[-1]["loss"], True

        t0 = time.perf_counter()
        diverged = res.diverged_at is not None
        stopped = diverged or res.interrupted_at is not None   # nothing more to evaluate or count
        metrics = {} if stopped else task.metrics(learner)
        extra = {} if stopped else task.extra(learner)
        synchronize(device)
        eval_s = res.eval_s + time.perf_counter() - t0
    # Read now, before the FLOP count and profile below run steps of their own (a compiled
    # variant's "compiled again after prepare" must describe the timed loop alone).
    details = learner.details() if hasattr(learner, "details") else {}
    cuda_alloc, cuda_reserved = memory.cuda_peaks_mib(device)

    t0 = time.perf_counter()
    x1, y1 = session.sample_batches()[0]
    profile, flops, peak_info = None, None, None
    if not stopped:   # a broken model has nothing to count or profile (and BCELoss refuses NaN)
        profile = opprofile.profile_steps(learner, x1, y1, device, trace_file=trace_file) if profile_ops else None
        if cfg.get("flops") is not False:
            flops = count_step(learner, x1, y1, sync, cuda_memory=device.type == "cuda")
            peak_info = peak.get(device, next(iter(learner.params().values())).dtype)
    analysis_s = time.perf_counter() - t0

    steady = res.steady_step_s
    steady_total = sum(steady)
    params = learner.params()
    compiles = getattr(learner, "compiles", False)
    result = RunResult(
        experiment=info.name, variant=cfg["variant"], device=device.type, config=cfg, data=task.data,
        reference_variant=variants.reference_of(variant_info.name, cfg)[0],
        final=Final(loss=res.history[-1]["loss"] if res.history else None, params=small_params(params),
                    metrics=metrics, param_digest=param_digest(params)),
        history=res.history,
        evaluations=res.evaluations,
        timing=Timing(
            device_init_s=device_init_s, setup_s=setup_s,
            compile_s=first_step_s if compiles else None, first_step_s=None if compiles else first_step_s,
            warmup_s=res.warmup_s, train_s=res.train_s, eval_s=eval_s,
            total_s=time.perf_counter() - t_start, steps=res.steps, warmup_steps=res.warmup_steps,
            step_s_median=stats.median(steady), step_s_iqr=stats.iqr(steady),
            samples_per_s=(res.steady_samples / steady_total) if steady_total > 0 else None,
            step_s_all=list(steady), analysis_s=analysis_s),
        memory=Memory(rss_start_mib=rss_start, rss_peak_mib=max(setup_rss.peak, rss.peak),
                      rss_peak_source=rss.source,
                      cuda_peak_allocated_mib=cuda_alloc, cuda_peak_reserved_mib=cuda_reserved,
                      line_profile=lines.table() if lines else None,
                      rss_setup_mib=rss_setup,
                      rss_train_above_setup_mib=max(rss.peak - rss_setup, 0.0),
                      cuda_phase_peak_mib=(flops or {}).pop("cuda_phase_peak_mib", None),
                      cublas_workspace_mib=(flops or {}).pop("cublas_workspace_mib", None)),
        env=envinfo.collect(device),
        variant_details=details,
        flops=flops,
        throughput=throughput(flops["per_step"], stats.median(steady), peak_info) if flops else None,
        profile=profile,
        warnings=[w for w in [stats.spread_warning(steady)] if w],
        extra=extra,
    )
    if diverged:
        result.status = "diverged"
        what = "the model's values became NaN/inf" if res.diverged_inside else f"loss became {res.diverged_loss}"
        result.error = f"{what} at epoch {res.diverged_at}: the run diverged (try a smaller --lr)"
    elif res.interrupted_at is not None:
        result.status = "interrupted"
        result.error = (f"interrupted in epoch {res.interrupted_at}: the {len(res.history)} finished "
                        f"epoch(s) are kept (the parameters as the interrupt left them)")
    return result.to_dict()
