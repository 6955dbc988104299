"""The training loop the harness drives, and the protocol a model must follow to be driven.

Phases are timed apart: the first `warmup_steps` updates (real updates, so results stay the
sources'; excluded from steady-state statistics), the steady state (every step timed on its own
on CPU, in blocks of consecutive steps on CUDA: see timer),
and evaluation/logging pauses (excluded from both). Losses stay on the device as tensors and are
read back only at epoch ends on CPU (cheap there) or every `check_every` epochs on CUDA (a host
sync), so the hot loop never waits for the GPU unless logging asks for it.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from bpbench.measure.records import BATCH_LOSSES_MAX, FOLD_EVERY, HistoryPlan, StepRecord
from bpbench.measure.timer import step_timer, synchronize


class Trainable(Protocol):
    steps_per_epoch: int          # updates in one epoch
    samples_per_epoch: int        # samples seen in one epoch

    def begin_epoch(self, epoch: int) -> None: ...     # e.g. reshuffle mini-batches
    def step(self): ...                                # one update; returns the batch loss (0-d tensor)
    def evaluate(self) -> dict[str, float]: ...        # metrics of the current parameters


@dataclass
class LoopConfig:
    epochs: int
    warmup_steps: int = 0
    log_every: int = 0            # epochs between log lines (0: none)
    eval_every: int = 0           # epochs between evaluate() calls (0: at log points only)
    eval_every_updates: int = 0   # also evaluate every N updates, mid-epoch too (one grid for any batching)
    max_updates: int | None = None
    check_every: int = 50         # epochs between parameter checks (and, on CUDA, loss read-backs)


@dataclass
class LoopResult:
    history: list[dict] = field(default_factory=list)
    warmup_steps: int = 0
    warmup_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    steps: int = 0
    steady_step_s: list[float] = field(default_factory=list)   # the kept sample (measure.records)
    steady_stride: int = 1            # steady_step_s holds every steady_stride-th steady step
    steady_steps: int = 0             # steady steps, all of them
    steady_total_s: float = 0.0       # their seconds, all of them
    steady_samples: int = 0
    evaluations: list[dict] = field(default_factory=list)   # the eval_every_updates grid
    diverged_at: int | None = None
    diverged_loss: float | None = None
    diverged_inside: bool = False     # a step or evaluation failed on non-finite values
    diverged_reason: str | None = None   # why, with the epoch, when a rule of divergence.py ended it
    interrupted_at: int | None = None   # the epoch Ctrl-C / SIGTERM stopped (history: the ones before)


def run_loop(t: Trainable, cfg: LoopConfig, device,
             on_log: Callable[[dict, int], None] | None = None,
             on_epoch: Callable[[int, int, dict | None], None] | None = None,
             diverged_by: Callable[[Exception], bool] | None = None, timer=None,
             check: Callable[[], str | None] | None = None) -> LoopResult:
    """Drive `t` for cfg.epochs (or cfg.max_updates) with every step timed.

    `timer(record)`, given the loop's StepRecord, returns the step timer that replaces the
    device's (timer.step_timer; the same start, stop, split, finish and `times`), e.g. the
    instruction counter that switches callgrind on around each step.

    Like timeit, the loop runs with Python's cyclic garbage collector paused: its collections
    (which grow with the history kept) would otherwise land inside random steps.

    `diverged_by(error)` says whether an exception that a step or an evaluation raised means the
    run has diverged (nn.BCELoss, for one, raises on the NaN its input becomes instead of
    returning a NaN loss): the loop then ends there as on a NaN loss; other errors propagate.
    `check()` (every cfg.check_every epochs and after the last) says why the model has diverged
    even though its loss is finite (divergence.blown_up: huge parameters), or None.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_loop(t, cfg, device, on_log, on_epoch, diverged_by, timer, check)
    finally:
        if was_enabled:
            gc.enable()


def _run_loop(t, cfg, device, on_log, on_epoch, diverged_by, timer=None, check=None) -> LoopResult:
    loop = _Loop(t, cfg, device, on_log, on_epoch, diverged_by, check)
    if timer is not None:   # the caller's timer, writing into the loop's record of step times
        loop.timer = timer(loop.timer.times)
    return loop.run()


class _Loop:
    """One drive of a Trainable: the epochs, their timed steps, the read-backs and evaluations."""

    def __init__(self, t, cfg: LoopConfig, device, on_log, on_epoch, diverged_by, check):
        self.t, self.cfg, self.device = t, cfg, device
        self.on_log, self.on_epoch, self.diverged_by, self.check = on_log, on_epoch, diverged_by, check
        self.out = LoopResult()
        self.total_steps = cfg.max_updates or cfg.epochs * t.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / t.steps_per_epoch)
        self.warm = self.out.warmup_steps = min(cfg.warmup_steps, max(self.total_steps - 1, 0))
        self.on_cpu = getattr(device, "type", str(device)) != "cuda"
        self.timer = step_timer(device, StepRecord(skip=self.warm))
        self.steps_pending = self.timer.times.pending
        self.pending: list[tuple[dict, object]] = []    # history entries whose loss is still a tensor
        self.keeps = HistoryPlan(self.epochs, cfg.log_every, cfg.eval_every).keeps
        self.update_losses = self.total_steps <= BATCH_LOSSES_MAX   # each update's loss, where few
        self.latest_only = False      # is history[-1] kept only for being the latest entry?
        self.steady_start = time.perf_counter() if self.warm == 0 else None
        self.paused = 0.0     # evaluation/logging time inside the steady state (excluded from train_s)
        self.step = 0
        self.next_eval = cfg.eval_every_updates or -1     # the next point of the update grid (-1: none)

    def run(self) -> LoopResult:
        epoch = 0
        try:
            for epoch in range(1, self.epochs + 1):
                if not self.epoch(epoch):
                    break
            else:
                self.flush()
                evals = self.out.evaluations
                if self.cfg.eval_every_updates and (not evals or evals[-1]["updates"] != self.step):
                    self.grid_point(self.epochs)   # the grid ends where training does
        except KeyboardInterrupt:   # Ctrl-C or SIGTERM: stop, keeping every finished epoch (a rank
            self.out.interrupted_at = epoch   # too: it runs no collective after this, see distributed.py)
            self.out.warmup_steps = min(self.warm, self.step)
            self.timer.split()
            self.flush()
        return self.finish()

    def epoch(self, epoch: int) -> bool:
        """Train one epoch and do what follows it; False: the run ends here (diverged)."""
        self.t.begin_epoch(epoch)
        n = min(self.t.steps_per_epoch, self.total_steps - self.step)
        try:
            epoch_loss = self.one_update(epoch) if n == 1 else self.updates(epoch, n)
        except Exception as e:
            if self.diverged_inside(e, epoch, None):
                return False
            raise
        self.pending.append(({"epoch": epoch, "loss": None, "updates": self.step}, epoch_loss))
        if self.steps_pending() >= FOLD_EVERY:    # between steps: the record stays bounded
            self.timer.times.fold()
        cfg = self.cfg
        log_now = cfg.log_every and (epoch % cfg.log_every == 0 or epoch == self.epochs)
        eval_now = log_now or (cfg.eval_every and (epoch % cfg.eval_every == 0 or epoch == self.epochs))
        check_now = epoch % cfg.check_every == 0 or epoch == self.epochs
        if self.on_cpu or log_now or eval_now or check_now:
            self.timer.split()       # read-back and evaluation pauses stay outside every block
            if not self.flush() or (check_now and self.blown_up(epoch)):
                return False
        if eval_now and not self.evaluate(epoch, log_now):
            return False
        if self.on_epoch:
            self.on_epoch(epoch, self.epochs, self.out.history[-1] if self.out.history else None)
        return True

    def blown_up(self, epoch: int) -> bool:
        """Ask `check` (after a flush): True, and the run ends at `epoch`, if the model diverged."""
        reason = self.check() if self.check else None
        if reason is not None:
            self.out.diverged_at, self.out.diverged_loss = epoch, self.out.history[-1]["loss"]
            self.out.diverged_reason = f"{reason} at epoch {epoch}"
        return reason is not None

    # The hot path: a handful of Python operations around t.step(), names bound once.
    def one_update(self, epoch: int):
        """Gradient descent: one update per epoch."""
        timer = self.timer
        timer.start()
        loss = self.t.step()
        timer.stop()
        self.after_step(epoch)
        return loss

    def updates(self, epoch: int, n: int):
        """`n` mini-batch updates; their losses stacked (flush keeps each and their mean)."""
        start, stop, do_step, after = self.timer.start, self.timer.stop, self.t.step, self.after_step
        losses = []
        for _ in range(n):
            start()
            losses.append(do_step())
            stop()
            after(epoch)
        self.timer.split()        # the epoch's losses and the next shuffle are not steps
        return _stack(losses)

    def after_step(self, epoch: int) -> None:
        self.step += 1
        if self.step == self.warm:
            self.timer.split()    # a timing block never mixes warm-up and steady steps
            synchronize(self.device)
            self.steady_start = time.perf_counter()
        if self.step == self.next_eval:
            self.timer.split()    # an evaluation is not a step
            self.grid_point(epoch)

    def grid_point(self, epoch: int) -> None:
        """Evaluate at a point of the update grid (mid-epoch too); the time it takes is paused
        time, never training time."""
        synchronize(self.device)
        t0 = time.perf_counter()
        since = t0 - self.steady_start - self.paused if self.steady_start is not None else 0.0
        self.out.evaluations.append({"updates": self.step, "epoch": epoch, "time_s": since, **self.t.evaluate()})
        self.next_eval = self.step + self.cfg.eval_every_updates
        self.pause(time.perf_counter() - t0)

    def evaluate(self, epoch: int, log_now: bool) -> bool:
        """The epoch's evaluation (and log line); False: it met a diverged model."""
        synchronize(self.device)
        t0 = time.perf_counter()
        entry = self.out.history[-1]
        entry["time_s"] = t0 - (self.steady_start or t0) - self.paused
        try:
            entry.update(self.t.evaluate())
        except Exception as e:
            if self.diverged_inside(e, epoch, entry):
                return False
            raise
        if log_now and self.on_log:
            self.on_log(entry, self.epochs)
        self.pause(time.perf_counter() - t0)
        return True

    def pause(self, seconds: float) -> None:
        self.out.eval_s += seconds
        if self.steady_start is not None:
            self.paused += seconds

    def diverged_inside(self, error: Exception, epoch: int, entry: dict | None) -> bool:
        """After `error` at `epoch`: True (and the run ends there) if it means divergence; False
        if it must propagate."""
        if self.diverged_by is None or not self.diverged_by(error):
            return False
        if self.flush() and entry is None:       # earlier epochs first: one may have diverged already
            entry = {"epoch": epoch, "loss": math.nan, "updates": self.step}
            self.record(entry)
        out = self.out
        if out.diverged_at is None:
            out.diverged_at, out.diverged_loss, out.diverged_inside = epoch, entry["loss"], True
        return True

    def flush(self) -> bool:
        """Read pending losses back to floats; False if one is NaN/inf (history ends there)."""
        pending, out = self.pending, self.out
        if not pending:
            return True
        if len(pending) == 1:   # the CPU path: one epoch at a time, no stack needed
            entry, loss = pending.pop()
            if loss.dim():      # a mini-batch epoch: every update's loss, and their mean
                if self.update_losses:
                    entry["batch_losses"] = loss.tolist()
                loss = loss.mean()
            entry["loss"] = v = loss.item()
            self.record(entry)
            if v - v != 0:       # NaN or inf, without a function call on the hot path
                out.diverged_at, out.diverged_loss = entry["epoch"], v
                return False
            return True
        import torch
        items = list(pending)
        pending.clear()    # taken first: an interrupt below must not let a second flush repeat them
        values = torch.stack([l if not l.dim() else l.mean() for _, l in items]).tolist()
        for (entry, l), v in zip(items, values):
            entry["loss"] = v
            if l.dim() and self.update_losses:
                entry["batch_losses"] = l.tolist()
            self.record(entry)
            if not math.isfinite(v):
                out.diverged_at, out.diverged_loss = entry["epoch"], v
                return False
        return True

    def record(self, entry: dict) -> None:
        """Append `entry` to the history, dropping the previous one unless the plan keeps it."""
        history = self.out.history
        if self.latest_only:
            history.pop()
        history.append(entry)
        self.latest_only = not self.keeps(entry["epoch"])

    def finish(self) -> LoopResult:
        synchronize(self.device)
        end = time.perf_counter()
        out = self.out
        out.steps = self.step
        out.train_s = (end - self.steady_start - self.paused) if self.steady_start is not None else 0.0
        times = self.timer.finish()
        out.warmup_s = times.warmup_s
        out.steady_step_s, out.steady_stride = times.sample(), times.stride
        out.steady_steps, out.steady_total_s = times.count, times.total_s
        out.steady_samples = round(times.count * self.t.samples_per_epoch / self.t.steps_per_epoch)
        return out


def _stack(losses):
    import torch
    return torch.stack(losses)
