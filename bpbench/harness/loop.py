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


# Host memory the loop keeps per epoch (a history entry, evaluation metrics aside) and per update
# (its step time). Measured here on CPU: 348 bytes per gradient-descent epoch (one update each,
# linreg, 10,000 vs 400,000 epochs) and 143 per extra mini-batch update (mnist01, batch 1).
RECORD_BYTES_PER_EPOCH = 400
RECORD_BYTES_PER_STEP = 200


def record_bytes(epochs: int, steps: int) -> int:
    """What run_loop's history and step times will hold for a run of `epochs` and `steps`."""
    return RECORD_BYTES_PER_EPOCH * epochs + RECORD_BYTES_PER_STEP * steps


@dataclass
class LoopConfig:
    epochs: int
    warmup_steps: int = 0
    log_every: int = 0            # epochs between log lines (0: none)
    eval_every: int = 0           # epochs between evaluate() calls (0: at log points only)
    eval_every_updates: int = 0   # also evaluate every N updates, mid-epoch too (one grid for any batching)
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
    evaluations: list[dict] = field(default_factory=list)   # the eval_every_updates grid
    diverged_at: int | None = None
    diverged_loss: float | None = None
    diverged_inside: bool = False     # a step or evaluation failed on non-finite values
    interrupted_at: int | None = None   # the epoch Ctrl-C / SIGTERM stopped (history: the ones before)


def run_loop(t: Trainable, cfg: LoopConfig, device,
             on_log: Callable[[dict, int], None] | None = None,
             on_epoch: Callable[[int, int, dict | None], None] | None = None,
             diverged_by: Callable[[Exception], bool] | None = None) -> LoopResult:
    """Drive `t` for cfg.epochs (or cfg.max_updates) with every step timed.

    Like timeit, the loop runs with Python's cyclic garbage collector paused: its collections
    (which grow with the history kept) would otherwise land inside random steps.

    `diverged_by(error)` says whether an exception that a step or an evaluation raised means the
    run has diverged (nn.BCELoss, for one, raises on the NaN its input becomes instead of
    returning a NaN loss): the loop then ends there as on a NaN loss; other errors propagate.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_loop(t, cfg, device, on_log, on_epoch, diverged_by)
    finally:
        if was_enabled:
            gc.enable()


def _run_loop(t, cfg, device, on_log, on_epoch, diverged_by) -> LoopResult:
    out = LoopResult()
    total_steps = cfg.max_updates or cfg.epochs * t.steps_per_epoch
    epochs = math.ceil(total_steps / t.steps_per_epoch)
    warm = min(cfg.warmup_steps, max(total_steps - 1, 0))
    out.warmup_steps = warm
    on_cpu = getattr(device, "type", str(device)) != "cuda"
    timer = step_timer(device)
    pending: list[tuple[dict, object]] = []    # history entries whose loss is still a tensor
    batch_samples = t.samples_per_epoch / t.steps_per_epoch

    def diverged_inside(error: Exception, epoch: int, entry: dict | None) -> bool:
        """After `error` at `epoch`: True (and the run ends there) if it means divergence; False
        if it must propagate."""
        if diverged_by is None or not diverged_by(error):
            return False
        if flush() and entry is None:       # earlier epochs first: one may have diverged already
            entry = {"epoch": epoch, "loss": math.nan, "updates": step}
            out.history.append(entry)
        if out.diverged_at is None:
            out.diverged_at, out.diverged_loss, out.diverged_inside = epoch, entry["loss"], True
        return True

    def flush() -> bool:
        """Read pending losses back to floats; False if one is NaN/inf (history ends there)."""
        if not pending:
            return True
        if len(pending) == 1:   # the CPU path: one epoch at a time, no stack needed
            entry, loss = pending.pop()
            if loss.dim():      # a mini-batch epoch: every update's loss, and their mean
                entry["batch_losses"] = loss.tolist()
                loss = loss.mean()
            entry["loss"] = v = loss.item()
            out.history.append(entry)
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
            if l.dim():
                entry["batch_losses"] = l.tolist()
            out.history.append(entry)
            if not math.isfinite(v):
                out.diverged_at, out.diverged_loss = entry["epoch"], v
                return False
        return True

    steady_start = time.perf_counter() if warm == 0 else None
    paused = 0.0          # evaluation/logging time inside the steady state (excluded from train_s)
    step = 0
    # Bound once: the per-step path is a handful of Python operations around t.step().
    start, stop, split, do_step, begin = timer.start, timer.stop, timer.split, t.step, t.begin_epoch
    log_every, eval_every, check_every = cfg.log_every, cfg.eval_every, cfg.check_every
    next_eval = cfg.eval_every_updates or -1     # the next point of the update grid (-1: no grid)

    def grid_point(epoch, step, steady_start, paused):
        """Evaluate at a point of the update grid (mid-epoch too); returns the next grid point and
        the paused time, which the evaluation adds to (it is never training time)."""
        synchronize(device)
        t0 = time.perf_counter()
        out.evaluations.append({"updates": step, "epoch": epoch,
                                "time_s": t0 - steady_start - paused if steady_start is not None else 0.0,
                                **t.evaluate()})
        dt = time.perf_counter() - t0
        out.eval_s += dt
        return step + cfg.eval_every_updates, paused + (dt if steady_start is not None else 0.0)

    epoch = 0
    try:
        for epoch in range(1, epochs + 1):
            begin(epoch)
            n = min(t.steps_per_epoch, total_steps - step)
            try:
                if n == 1:                      # gradient descent: one update per epoch
                    start()
                    epoch_loss = do_step()
                    stop()
                    step += 1
                    if step == warm:
                        split()          # a timing block never mixes warm-up and steady steps
                        synchronize(device)
                        steady_start = time.perf_counter()
                    if step == next_eval:
                        split()
                        next_eval, paused = grid_point(epoch, step, steady_start, paused)
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
                        if step == next_eval:
                            split()      # an evaluation is not a step
                            next_eval, paused = grid_point(epoch, step, steady_start, paused)
                    split()              # the epoch's losses and the next shuffle are not steps
                    epoch_loss = _stack(losses)     # flush() keeps each update's loss and their mean
            except Exception as e:
                if diverged_inside(e, epoch, None):
                    break
                raise
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
                try:
                    entry.update(t.evaluate())
                except Exception as e:
                    if diverged_inside(e, epoch, entry):
                        break
                    raise
                if log_now and on_log:
                    on_log(entry, epochs)
                dt = time.perf_counter() - t0
                out.eval_s += dt
                if steady_start is not None:
                    paused += dt
            if on_epoch:
                on_epoch(epoch, epochs, out.history[-1] if out.history else None)
        else:
            flush()
            if cfg.eval_every_updates and (not out.evaluations or out.evaluations[-1]["updates"] != step):
                _, paused = grid_point(epochs, step, steady_start, paused)   # the grid ends where training does

    except KeyboardInterrupt:   # Ctrl-C or SIGTERM: stop, keeping every finished epoch
        if _in_a_world():
            raise       # a rank: its peers wait in collectives that only its exit breaks
        out.interrupted_at = epoch
        out.warmup_steps = min(warm, step)
        split()
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


def _in_a_world() -> bool:
    """True in a rank of torch.distributed (bpbench's launcher or torchrun)."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def _stack(losses):
    import torch
    return torch.stack(losses)
