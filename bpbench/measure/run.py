"""One run in this process, end to end: config -> experiment's Task -> variant's learner -> harness
-> result. The glue between the registries, the harness and the results; bpbench.api calls it (and
measure.distributed, in each rank). It reaches experiments and variants through their registries only.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from bpbench import config as C
from bpbench import experiments, variants
from bpbench.errors import BadInput, RunFailed
from bpbench.measure import divergence
from bpbench.results import contention
from bpbench.results.bounds import floor_warning
from bpbench.results.schema import Final, Memory, RunResult, Timing
from bpbench.results.timing import StepTimes


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


def check_memory(info, cfg: dict[str, Any], device) -> None:
    """Refuse, before anything is allocated, a run whose estimated memory exceeds what its device
    has: the experiment's Footprint (data, model, optimizer state, activations) plus the
    harness's records (bounded: measure.records; the log and evaluation points asked for grow
    with the run). An estimate, so it errs only on the impossible: it compares with the total
    memory (or what ulimit -v leaves), not with what happens to be free."""
    fp = info.footprint(cfg)
    steps, records = history_bytes(info, cfg)
    parts = [("data, model and activations", fp.device_bytes), (f"records of {steps:,} updates", records)]
    if device.type == "cuda":
        import torch
        refuse_beyond(info.name, parts[:1], torch.cuda.get_device_properties(device).total_memory, "the GPU has")
        parts = parts[1:]
    refuse_beyond(info.name, parts, *host_memory())


def history_bytes(info, cfg: dict[str, Any]) -> tuple[int, int]:
    """(updates, bytes of the run's records: measure.records)."""
    from bpbench.measure.records import record_bytes
    fp = info.footprint(cfg)
    steps = cfg.get("updates") or cfg["epochs"] * fp.steps_per_epoch
    return steps, record_bytes(math.ceil(steps / fp.steps_per_epoch), steps, cfg.get("log_every", 0),
                               cfg.get("eval_every", 0), cfg.get("eval_every_updates", 0))


def host_memory() -> tuple[int, str]:
    """(bytes this process may still allocate on the host, what says so): the machine's RAM, or
    less where an address-space limit (ulimit -v, RLIMIT_AS) is set: the limit less what the
    process has mapped already (torch alone maps about 3 GiB)."""
    import psutil
    ram = psutil.virtual_memory().total
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):   # not POSIX
        return ram, "this machine has"
    if limit == resource.RLIM_INFINITY or limit - psutil.Process().memory_info().vms >= ram:
        return ram, "this machine has"
    left = max(limit - psutil.Process().memory_info().vms, 0)
    return left, f"the address-space limit (ulimit -v {limit // 1024}) leaves this process"


def refuse_beyond(name: str, parts: list[tuple[str, int]], total: int, where: str,
                  fix: str = "use a smaller size or fewer epochs") -> None:
    """BadInput when the `parts` (what, bytes) of `name`'s need exceed `total` ("`where` N GiB")."""
    need = sum(n for _, n in parts)
    if need > total:
        gib = 1024 ** 3
        raise BadInput(f"{name} would need about {need / gib:,.1f} GiB of memory ("
                       + ", ".join(f"{what} {n / gib:,.1f} GiB" for what, n in parts)
                       + f"); {where} {total / gib:,.1f} GiB: {fix}")


@contextmanager
def out_of_memory_is_one_line():
    """An allocation that fails after all (the estimate is an estimate; other processes use memory
    too) ends the run in one line, not torch's traceback: RunFailed (exit 1)."""
    import torch
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as e:
        text = str(e)
        if isinstance(e, RuntimeError) and not isinstance(e, torch.OutOfMemoryError) \
                and "can't allocate memory" not in text:
            raise
        said = text.split("DefaultCPUAllocator: ", 1)[-1].split(". Error code")[0].splitlines()[0] if text else ""
        raise RunFailed(f"out of memory{f' ({said[:200]})' if said else ''}: use a smaller size or fewer "
                        "epochs, or allow more memory (ulimit -v)") from None


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


@dataclass
class _Run:
    """What one run gathers, stage by stage, until it becomes a RunResult."""
    info: Any
    cfg: dict[str, Any]
    t_start: float
    rss_start: float
    device: Any = None
    device_init_s: float = 0.0
    task: Any = None
    learner: Any = None
    session: Any = None
    setup_s: float = 0.0
    first_step_s: float | None = None
    setup_rss_peak: float = 0.0
    rss_setup: float = 0.0
    loop: Any = None            # the harness's LoopResult
    rss: Any = None             # the training phase's peak RSS
    lines: Any = None           # --profile-lines
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    eval_s: float = 0.0
    details: dict = field(default_factory=dict)
    cuda_peaks: tuple = (None, None)
    profile: dict | None = None
    flops: dict | None = None
    peak: dict | None = None
    analysis: dict | None = None
    saved: dict | None = None   # memory.saved_for_backward
    analysis_s: float = 0.0
    contention: dict | None = None   # the timed loop's figures (measure.contention)
    cut_short: str | None = None   # what Ctrl-C/SIGTERM stopped after the training loop had finished

    def sync(self) -> None:
        from bpbench.measure.timer import synchronize
        synchronize(self.device)

    @property
    def stopped(self) -> bool:
        """Diverged or interrupted: nothing more to evaluate, count or profile."""
        return self.loop.diverged_at is not None or self.loop.interrupted_at is not None


def execute_in_process(info, cfg: dict[str, Any], *, profile_lines: bool = False, profile_ops: bool = False,
                       trace_file=None, on_log: Callable[[str], None] | None = None,
                       on_epoch: Callable[[int, int, dict | None], None] | None = None,
                       step_counter: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Train once under the harness and return the result (status "ok", "diverged" or "interrupted").

    `step_counter()`, called just before the loop, gives the step timer that replaces the
    device's and the phase marker (`--metric instructions`' child: measure/instructions.py).

    After training (never inside the timed loop): one step's FLOPs are counted, the machine's
    peak is looked up (or measured once and cached), and with `profile_ops` a few steps run
    under torch.profiler; each of these rewinds the learner, so the trajectory is the run's.
    """
    with out_of_memory_is_one_line():
        return _execute(info, cfg, profile_lines, profile_ops, trace_file, on_log, on_epoch, step_counter)


def _execute(info, cfg, profile_lines, profile_ops, trace_file, on_log, on_epoch, step_counter) -> dict[str, Any]:
    import torch

    from bpbench.measure import memory

    run = _Run(info, cfg, t_start=time.perf_counter(), rss_start=0.0)
    if cfg.get("threads"):   # before any torch work: set_num_threads is reliable once per process
        torch.set_num_threads(cfg["threads"])
    run.rss_start = memory.rss_mib()
    run.device = pick_device(cfg["device"])
    check_memory(info, cfg, run.device)
    _init_device(run)
    _set_up(run)
    _train(run, profile_lines, on_log, on_epoch, step_counter)
    _analyse(run, profile_ops, trace_file)
    return _result(run).to_dict()


def _init_device(run: _Run) -> None:
    """The CUDA context is a one-time process cost: paid before the clock of any phase starts."""
    import torch

    from bpbench.measure import memory
    t0 = time.perf_counter()
    if run.device.type == "cuda":
        torch.zeros(1, device=run.device)
        run.sync()
        memory.cuda_reset_peaks(run.device)
    run.device_init_s = time.perf_counter() - t0


def _set_up(run: _Run) -> None:
    """Data, model, learner; then priming: real steps on sample batches before the clock, rewound."""
    from bpbench.measure import memory
    from bpbench.variants.base import prime
    with memory.PeakRss() as setup_rss:
        t0 = time.perf_counter()
        run.task, run.learner, run.session = build_session(run.info, run.cfg, run.device)
        run.sync()
        run.setup_s = time.perf_counter() - t0
        prepare = getattr(run.learner, "prepare", None)
        try:
            run.first_step_s = prepare(run.session.sample_batches(), run.sync) if prepare else \
                prime(run.learner, run.session.sample_batches()[:1], steps=1, sync=run.sync)
        except RuntimeError as e:    # a diverging lr can break the model already here; rewound,
            if not divergence.refuses_non_finite(e):   # the timed loop meets it again (exit 3)
                raise
    run.setup_rss_peak = setup_rss.peak
    # The baseline the model's own training memory is measured from: data, model, optimizer and
    # the primed step's buffers are in; imports and torch's one-time state too.
    run.rss_setup = memory.rss_mib()


def _train(run: _Run, profile_lines: bool, on_log, on_epoch, step_counter=None) -> None:
    """The timed loop, then the final metrics (of a model that did not break)."""
    import torch

    from bpbench.measure import memory
    from bpbench.measure.contention import Probe
    from bpbench.measure.loop import LoopConfig, run_loop
    cfg, learner, exp = run.cfg, run.learner, run.info.load()
    with memory.PeakRss() as rss:
        if profile_lines:
            run.lines = memory.LineProfile()
            for obj, name in getattr(learner, "line_profile_targets", lambda: [(learner, "step")])():
                run.lines.attach(obj, name)
        loop_cfg = LoopConfig(epochs=cfg["epochs"], warmup_steps=cfg.get("warmup_steps", 0),
                              log_every=cfg.get("log_every", 0), eval_every=cfg.get("eval_every", 0),
                              eval_every_updates=cfg.get("eval_every_updates", 0),
                              max_updates=cfg.get("updates"))
        counter = step_counter() if step_counter else None
        check = lambda: divergence.blown_up(learner.params())   # noqa: E731
        with Probe() as busy, counter or contextlib.nullcontext():   # busy: did the loop's threads wait for a CPU?
            res = run.loop = run_loop(run.session, loop_cfg, run.device,
                                      on_log=(lambda entry, n: on_log(exp.log_line(entry, n))) if on_log else None,
                                      on_epoch=on_epoch, check=check,
                                      diverged_by=lambda e: divergence.refuses_non_finite(e) or check() is not None,
                                      timer=counter.timer if counter else None)
        run.contention = busy.figures(res.steps, torch.get_num_threads())
        _judge_the_end(res, check)
        t0 = time.perf_counter()
        if not run.stopped:
            try:
                run.metrics, run.extra = run.task.metrics(learner), run.task.extra(learner)
            except KeyboardInterrupt:   # the training is finished: it is kept, without these
                run.cut_short, run.metrics, run.extra = "the final metrics", {}, {}
        run.sync()
        run.eval_s = res.eval_s + time.perf_counter() - t0
    run.rss = rss
    # Read now, before the FLOP count and profile below run steps of their own (a compiled
    # variant's "compiled again after prepare" must describe the timed loop alone).
    run.details = learner.details() if hasattr(learner, "details") else {}
    run.cuda_peaks = memory.cuda_peaks_mib(run.device)


def _judge_the_end(res, check: Callable[[], str | None]) -> None:
    """Divergence that only the end shows (divergence.py's rules 2 and 3): the last update broke
    the model after its loss was read, or the loss froze far above where it started."""
    if res.diverged_at is not None or res.interrupted_at is not None or not res.history:
        return
    last = res.history[-1]
    reason, frozen = check(), divergence.saturated(res.history)
    if reason is not None:
        res.diverged_at, res.diverged_reason = last["epoch"], f"{reason} after epoch {last['epoch']}"
    elif frozen is not None:
        res.diverged_at, res.diverged_reason = frozen
    res.diverged_loss = last["loss"]


def _analyse(run: _Run, profile_ops: bool, trace_file) -> None:
    """After training: --profile-ops, one step's FLOPs, the machine's ceilings, and what bounds
    the step (its counts against the ceilings); each counted or profiled step is rewound. And
    what one step keeps for backward (on copies of the model)."""
    from bpbench.measure import counts, peak
    from bpbench.measure import profile as opprofile
    from bpbench.measure.flops import counted_step
    t0 = time.perf_counter()
    x1, y1 = run.session.sample_batches()[0]
    if run.stopped or run.cut_short:   # a broken model has nothing to count (and BCELoss refuses NaN)
        run.analysis_s = time.perf_counter() - t0
        return
    try:
        if profile_ops:
            run.profile = opprofile.profile_steps(run.learner, x1, y1, run.device, trace_file=trace_file)
        if run.cfg.get("flops") is not False:
            run.flops = counted_step(run.info.name, run.cfg, run.learner, x1, y1, run.sync,
                                     cuda_memory=run.device.type == "cuda")
            run.peak = peak.get(run.device, next(iter(run.learner.params().values())).dtype)
            run.analysis = counts.analyse(run.info.name, run.cfg, run.learner, x1, y1, run.peak,
                                          StepTimes.of(run.loop.steady_step_s).median, run.sync)
        run.saved = _saved_for_backward(run, x1, y1)
    except KeyboardInterrupt:   # each of these rewinds the learner: the trained model is the run's
        run.cut_short, run.profile, run.flops, run.peak, run.analysis = \
            "the FLOP count, peak, bound and profile", None, None, None, None
        run.saved = None
    run.analysis_s = time.perf_counter() - t0


def _saved_for_backward(run: _Run, x, y) -> dict[str, Any]:
    """One step's tensors kept for backward on the first batch, three ways, and which of them
    this run's variant keeps (`world`). The experiment's model, fresh from its initial weights:
    the trained learner is not touched."""
    from bpbench.graph import keeps
    return {**keeps.measure(run.task.model, x, y), "world": variants.get(run.cfg["variant"]).world}


def _result(run: _Run) -> RunResult:
    from bpbench.measure import env
    from bpbench.measure.flops import throughput
    res, cfg = run.loop, run.cfg
    times = StepTimes.of(res.steady_step_s)
    params = run.learner.params()
    result = RunResult(
        experiment=run.info.name, variant=cfg["variant"], device=run.device.type, config=cfg, data=run.task.data,
        reference_variant=variants.reference_of(cfg["variant"], cfg)[0],
        final=Final(loss=res.history[-1]["loss"] if res.history else None, params=small_params(params),
                    metrics=run.metrics, param_digest=param_digest(params)),
        history=res.history, evaluations=res.evaluations, timing=_timing(run, times), memory=_memory(run),
        env=env.collect(run.device), variant_details=run.details, flops=run.flops,
        throughput=throughput(run.flops["per_step"], times.median, run.peak) if run.flops else None,
        profile=run.profile, analysis=run.analysis, warnings=_warnings(run, times), extra=run.extra)
    _set_status(result, res, run.cut_short)
    return result


def _warnings(run: _Run, times: StepTimes) -> list[str]:
    """A busy machine first (it explains the rest), then noisy step times, then a step that ran
    below its own floor (a ceiling measured too low)."""
    busy = contention.judge(run.contention)
    return [w for w in [contention.warning(busy) if busy else None, times.warning(), floor_warning(run.analysis)]
            if w]


def _timing(run: _Run, times: StepTimes) -> Timing:
    res, compiles = run.loop, getattr(run.learner, "compiles", False)
    steady_total = res.steady_total_s
    busy = contention.judge(run.contention)
    return Timing(
        device_init_s=run.device_init_s, setup_s=run.setup_s,
        compile_s=run.first_step_s if compiles else None, first_step_s=None if compiles else run.first_step_s,
        warmup_s=res.warmup_s, train_s=res.train_s, eval_s=run.eval_s,
        total_s=time.perf_counter() - run.t_start, steps=res.steps, warmup_steps=res.warmup_steps,
        step_s_median=times.median, step_s_iqr=times.iqr,
        samples_per_s=(res.steady_samples / steady_total) if steady_total > 0 else None,
        step_s_all=list(res.steady_step_s), step_s_all_stride=res.steady_stride, analysis_s=run.analysis_s,
        contended=busy is not None, contention={**run.contention, "reason": busy} if run.contention else None)


def _memory(run: _Run) -> Memory:
    flops = run.flops or {}
    return Memory(rss_start_mib=run.rss_start, rss_peak_mib=max(run.setup_rss_peak, run.rss.peak),
                  rss_peak_source=run.rss.source,
                  cuda_peak_allocated_mib=run.cuda_peaks[0], cuda_peak_reserved_mib=run.cuda_peaks[1],
                  line_profile=run.lines.table() if run.lines else None, rss_setup_mib=run.rss_setup,
                  rss_train_above_setup_mib=max(run.rss.peak - run.rss_setup, 0.0),
                  cuda_phase_peak_mib=flops.pop("cuda_phase_peak_mib", None),
                  cublas_workspace_mib=flops.pop("cublas_workspace_mib", None),
                  saved_for_backward=run.saved)


def _set_status(result: RunResult, res, cut_short: str | None = None) -> None:
    if res.diverged_at is not None:
        result.status = "diverged"
        what = res.diverged_reason or ("the model's values became NaN/inf" if res.diverged_inside
                                       else f"loss became {res.diverged_loss}") + f" at epoch {res.diverged_at}"
        result.error = f"{what}: the run diverged (try a smaller --lr)"
    elif res.interrupted_at is not None:
        result.status = "interrupted"
        result.error = (f"interrupted in epoch {res.interrupted_at}: the {res.interrupted_at - 1:,} finished "
                        f"epoch(s) are kept (the parameters as the interrupt left them)")
    elif cut_short is not None:
        result.status = "interrupted"
        done = res.history[-1]["epoch"] if res.history else 0
        result.error = f"interrupted after training, in {cut_short}: the {done:,} epoch(s) are kept, without it"
