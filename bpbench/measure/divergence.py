"""When a run has diverged: the rules every run of every experiment and variant is held to.

A diverged run ends with status "diverged" and exit code 3, its finished epochs kept, and its
error names the rule and the numbers that broke it (docs/limits.md lists the rules):

1. Its loss became NaN or infinite (the loop sees it as it reads each loss back), or torch
   refused a non-finite value instead of returning one (nn.BCELoss raises on a NaN probability).
2. A parameter became NaN or infinite, or grew beyond PARAM_LIMIT in magnitude. Checked every
   `check_every` epochs and after the last (outside the timed steps).
3. It saturated: its loss ended above LOSS_RISE times its first epoch's and stopped moving (the
   last FROZEN epochs equal within a relative 1e-6): the gradient vanished while the model is far
   worse than it began, so training cannot recover. BCELoss shows it: its log is clamped at -100,
   so a sample whose sigmoid rounded to exactly 0 or 1 on the wrong side costs 100 and passes no
   gradient, and the loss stays pinned at 100 times the share of such samples (50 on four XOR
   points with two wrong; 53.2 on mnist01 at lr 1e6) while no value is NaN or large. A loss that
   is still moving is not judged: Adam's first steps on a wide net raise it 600-fold before it
   falls far below where it started (width, H = 20,000: 0.049, 29.3, then 9e-5), and a run
   stopped inside that spike (--epochs 2) has not diverged either.
"""

from __future__ import annotations

import math
from typing import Any

# Every model here trains in float32, whose 24-bit significand spaces the values near 1e12 by
# 2**16 = 65,536: an update (lr x gradient) below 32,768 rounds away, so a weight that large can no
# longer be trained by any sane step; it got there by an insane one.
PARAM_LIMIT = 1e12
# A frozen loss above this many times the first epoch's is saturation (Lightning's and fastai's
# learning-rate finders call a loss above 4x the best one "diverged").
LOSS_RISE = 4.0
FROZEN = 3            # epochs whose losses agree within FROZEN_RTOL: the loss has stopped moving
FROZEN_RTOL = 1e-6    # (a mini-batch epoch's mean sums the same losses in another order)

# What torch raises, instead of returning NaN, when a non-finite value reaches it: nn.BCELoss on
# a probability that overflowed to NaN (huge but finite weights are enough: inf - inf).
_NON_FINITE_ERRORS = ("all elements of input should be between 0 and 1",)


def refuses_non_finite(error: Exception) -> bool:
    """Rule 1: an exception that torch raised on a non-finite value."""
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _NON_FINITE_ERRORS)


def blown_up(params: dict[str, Any]) -> str | None:
    """Rule 2: what is wrong with the parameters (None: nothing)."""
    for name, p in params.items():
        largest = float(p.detach().abs().max()) if p.numel() else 0.0   # NaN if any element is NaN
        if not math.isfinite(largest):
            return f"parameter {name} became {largest}"
        if largest > PARAM_LIMIT:
            return f"parameter {name} reached {largest:.3g} (beyond {PARAM_LIMIT:g})"
    return None


def saturated(history: list[dict[str, Any]]) -> tuple[int, str] | None:
    """Rule 3: (the epoch the loss froze at, why) or None."""
    losses = [h["loss"] for h in history]
    if len(losses) < FROZEN + 1 or not (losses[0] > 0 and math.isfinite(losses[0])):
        return None
    first, last = losses[0], losses[-1]
    frozen = lambda v: abs(v - last) <= FROZEN_RTOL * abs(last)   # noqa: E731
    if not (last > LOSS_RISE * first and all(frozen(v) for v in losses[-FROZEN:])):
        return None
    since = len(losses) - 1
    while since > 1 and frozen(losses[since - 1]):
        since -= 1
    epoch = history[since]["epoch"]
    return epoch, (f"the loss froze at {last:.4g}, {last / first:,.0f}x its first epoch's {first:.4g}, from "
                   f"epoch {epoch} on (saturated: no gradient left to train with)")
