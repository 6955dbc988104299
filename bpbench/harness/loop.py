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

from bpbench.harness.timer import step_timer, synchronize


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
    max_updates: int | None = None
    check_every: int = 50         # CUDA only: epochs between divergence checks (host syncs)


@dataclass
class LoopResult:
    history: list[dict] = field(default_factory=list)
    warmup_steps: int = 0
    warmup_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    steps: int = 0
    steady_step_s: list[float] = field(default_factory=list)
    steady_samples: int = 0
    diverged_at: int | None = None
    diverged_loss: float | None = None


def run_loop(t: Trainable, cfg: LoopConfig, device,
             on_log: Callable[[dict, int], None] | None = None,
             on_epoch: Callable[[int, int], None] | None = None) -> LoopResult:
    """Drive `t` for cfg.epochs (or cfg.max_updates) with every step timed.

    Like timeit, the loop runs with Python's cyclic garbage collector paused: its collections
    (which grow with the history kept) would otherwise land inside random steps.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_loop(t, cfg, device, on_log, on_epoch)
    finally:
        if was_enabled:
            gc.enable()


def _run_loop(t, cfg, device, on_log, on_epoch) -> LoopResult:
    out = LoopResult()
    total_steps = cfg.max_updates or cfg.epochs * t.steps_per_epoch
    epochs = math.ceil(total_steps / t.steps_per_epoch)
    warm = min(cfg.warmup_steps, max(total_steps - 1, 0))
    out.warmup_steps = warm
    on_cpu = getattr(device, "type", str(device)) != "cuda"
    timer = step_timer(device)
    pending: list[tuple[dict, object]] = []    # history entries whose loss is still a tensor
    batch_samples = t.samples_per_epoch / t.steps_per_epoch

    def flush() -> bool:
        """Read pending losses back to floats; False if one is NaN/inf (history ends there)."""
        if not pending:
            return True
        if len(pending) == 1:   # the CPU path: one epoch at a time, no stack needed
            entry, loss = pending.pop()
            entry["loss"] = v = loss.item()
            out.history.append(entry)
            if v - v != 0:       # NaN or inf, without a function call on the hot path
                out.diverged_at, out.diverged_loss = entry["epoch"], v
                return False
            return True
        import torch
        values = torch.stack([l for _, l in pending]).tolist()
        for (entry, _), v in zip(pending, values):
            entry["loss"] = v
            out.history.append(entry)
            if not math.isfinite(v):
                out.diverged_at, out.diverged_loss = entry["epoch"], v
                pending.clear()
                return False
        pending.clear()
        return True

    steady_start = time.perf_counter() if warm == 0 else None
    paused = 0.0          # evaluation/logging time inside the steady state (excluded from train_s)
    step = 0
    # Bound once: the per-step path is a handful of Python operations around t.step().
    start, stop, split, do_step, begin = timer.start, timer.stop, timer.split, t.step, t.begin_epoch
    log_every, eval_every, check_every = cfg.log_every, cfg.eval_every, cfg.check_every
    for epoch in range(1, epochs + 1):
        begin(epoch)
        n = min(t.steps_per_epoch, total_steps - step)
        if n == 1:                      # gradient descent: one update per epoch
            start()
            epoch_loss = do_step()
            stop()
            step += 1
            if step == warm:
                split()          # a timing block never mixes warm-up and steady steps
                synchronize(device)
                steady_start = time.perf_counter()
        else:
            losses = []
            for _ in range(n):
                start()
                losses.append(do_step())
                stop()
                step += 1
                if step == warm:
                    split()
                    synchronize(device)
                    steady_start = time.perf_counter()
            split()              # the epoch's loss mean and the next shuffle are not steps
            epoch_loss = _mean(losses)
        pending.append(({"epoch": epoch, "loss": None, "updates": step}, epoch_loss))

        log_now = log_every and (epoch % log_every == 0 or epoch == epochs)
        eval_now = log_now or (eval_every and (epoch % eval_every == 0 or epoch == epochs))
        if on_cpu or log_now or eval_now or epoch % check_every == 0 or epoch == epochs:
            split()              # read-back and evaluation pauses stay outside every block
            if not flush():
                break
        if eval_now:
            synchronize(device)
            t0 = time.perf_counter()
            entry = out.history[-1]
            entry["time_s"] = t0 - (steady_start or t0) - paused
            entry.update(t.evaluate())
            if log_now and on_log:
                on_log(entry, epochs)
            dt = time.perf_counter() - t0
            out.eval_s += dt
            if steady_start is not None:
                paused += dt
        if on_epoch:
            on_epoch(epoch, epochs)
    else:
        flush()

    synchronize(device)
    end = time.perf_counter()
    out.steps = step
    out.train_s = (end - steady_start - paused) if steady_start is not None else 0.0
    step_s = timer.seconds()
    out.warmup_s = sum(step_s[:warm])
    out.steady_step_s = step_s[warm:]
    out.steady_samples = round(len(out.steady_step_s) * batch_samples)
    return out


def _mean(losses):
    import torch
    return torch.stack(losses).mean()
