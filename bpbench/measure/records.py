"""What the harness keeps of a run, in memory that does not grow with it.

A run of 50 million updates must start and stay small, yet its readers (the noise intervals'
block bootstrap, the loss curves, the parity guard) want step times in the order they ran and a
loss history. Two bounded records give them that:

- `StepRecord`: every step's seconds go into an `array('d')` (8 bytes each; the timed path is one
  C-level append), folded now and then into exact running figures (count, sum, min, max) and an
  evenly spaced, ordered sample of at most `KEEP_STEPS` steps: every step while they fit, then
  every 2nd, 4th, ... (the stride doubles each time the sample fills). A run up to `KEEP_STEPS`
  steps keeps every step exactly; a longer one keeps a systematic sample, which a median or a
  percentile estimates to well within the noise, and which, being in order, still cuts into the
  contiguous blocks the bootstrap resamples. Decimation depends only on step counts, so two
  ranks of one world keep the same steps.
- `HistoryPlan`: which epochs' history entries are kept: every log and evaluation point the user
  asked for, `HISTORY_POINTS` evenly spaced epochs, the last epoch, and always the latest one (the
  run's final loss, where a divergence or an interrupt ended it). Every variant of a config keeps
  the same epochs, so the parity guard still compares like with like.
"""

from __future__ import annotations

import math
from array import array

KEEP_STEPS = 2 ** 17            # steps kept exactly; beyond, an evenly spaced sample of 2^16..2^17
FOLD_EVERY = 4096               # appends between folds into the running figures (32 KiB)
HISTORY_POINTS = 10_000         # evenly spaced history entries beyond the log and evaluation points
BATCH_LOSSES_MAX = 1_000_000    # per-update losses are kept in the history for runs up to this many updates

# Host memory a kept history entry takes (a dict of epoch, loss, updates; evaluation metrics aside),
# and a kept per-update loss (a float in a list). Measured here on CPU: 348 bytes per entry
# (linreg, 10,000 vs 400,000 epochs) and 143 per extra mini-batch update (mnist01, batch 1).
ENTRY_BYTES = 400
UPDATE_LOSS_BYTES = 200
STEP_BYTES = 8


class StepRecord:
    """Step durations in bounded memory. The timed path calls `append(seconds)`; the loop calls
    `fold()` between steps when `pending()` reaches FOLD_EVERY, and once at the end.

    The first `skip` steps (the warm-up) are summed apart and never kept in the sample.
    """

    def __init__(self, skip: int = 0, keep: int | None = None):
        keep = keep or KEEP_STEPS
        if keep < 2:
            raise ValueError("keep must be at least 2")
        self._fresh = array("d")
        self.append = self._fresh.append     # the timed path: one C call, 8 bytes
        self.extend = self._fresh.extend
        self._skip, self._keep = skip, keep
        self.warmup_count, self.warmup_s = 0, 0.0
        self.count, self.total_s = 0, 0.0     # steady steps, all of them
        self.min_s, self.max_s = math.inf, 0.0
        self._kept = array("d")
        self.stride = 1                       # the sample holds steady steps 0, stride, 2*stride, ...

    def pending(self) -> int:
        return len(self._fresh)

    def fold(self) -> None:
        """Move the appended seconds into the running figures and the sample."""
        fresh = self._fresh
        if not fresh:
            return
        warm = min(self._skip - self.warmup_count, len(fresh))
        if warm > 0:
            self.warmup_count += warm
            self.warmup_s += sum(fresh[:warm])
        steady = fresh[max(warm, 0):]
        del fresh[:]                          # in place: `append` stays bound to this array
        if not steady:
            return
        start = self.count                    # steady index of steady[0]
        self.count += len(steady)
        self.total_s += sum(steady)
        self.min_s, self.max_s = min(self.min_s, min(steady)), max(self.max_s, max(steady))
        self._kept.extend(steady[-start % self.stride::self.stride])
        while len(self._kept) > self._keep:   # full: keep every other one, from step 0
            self._kept = self._kept[::2]
            self.stride *= 2

    def sample(self) -> list[float]:
        """The kept steady steps, in the order they ran (every one when stride is 1)."""
        self.fold()
        return self._kept.tolist()


class HistoryPlan:
    """Which epochs' history entries a run of `epochs` keeps (see the module's docstring)."""

    def __init__(self, epochs: int, log_every: int = 0, eval_every: int = 0, points: int | None = None):
        self.epochs = epochs
        self.spacing = max(1, math.ceil(epochs / (points or HISTORY_POINTS)))
        self.every = tuple(n for n in (self.spacing, log_every, eval_every) if n)
        if self.spacing == 1:          # a run this short keeps every epoch: nothing to decide
            self.keeps = lambda epoch: True

    def keeps(self, epoch: int) -> bool:
        if epoch == self.epochs:
            return True
        for n in self.every:           # called once an epoch, between steps: no generator
            if epoch % n == 0:
                return True
        return False

    def kept_entries(self) -> int:
        """How many entries the run keeps at most (an upper bound: points may coincide)."""
        return min(self.epochs, sum(self.epochs // n for n in self.every) + 2)


def record_bytes(epochs: int, steps: int, log_every: int = 0, eval_every: int = 0,
                 eval_every_updates: int = 0) -> int:
    """The host memory the loop's records of a run of `epochs` and `steps` will take at most:
    its kept history entries and evaluation-grid points, per-update losses where kept, and the
    step-time record."""
    entries = HistoryPlan(epochs, log_every, eval_every).kept_entries()
    entries += steps // eval_every_updates + 1 if eval_every_updates else 0
    update_losses = steps if steps <= BATCH_LOSSES_MAX and steps > epochs else 0
    step_record = STEP_BYTES * (min(steps, KEEP_STEPS) + FOLD_EVERY)
    return ENTRY_BYTES * entries + UPDATE_LOSS_BYTES * update_losses + step_record
