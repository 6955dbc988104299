"""Is a difference in step time real? Confidence intervals from recorded step times.

Every run keeps each steady step's time (`timing.step_s_all`, in the order they ran). Comparing two
medians alone calls the machine's mood a change: on a shared machine the same code moved 17-33 %
between two runs. Two things make a verdict trustworthy here:

- Intervals from a *block* bootstrap: each run's steps are cut into contiguous blocks and the
  blocks, not single steps, are resampled. Neighbouring steps share the machine's state (another
  process's burst, a frequency change), so resampling single steps would pretend they are
  independent and give intervals far too narrow. Repeats (`--repeat N`) add runs, and with them
  the variation between processes.
- Two statistics: the median and the 10th percentile. Contention only ever adds time (timeit's
  reason to trust the fastest runs), so a busy neighbour inflates the median while the fast end
  of the distribution stays where the code puts it. A change is called only when the whole
  distribution moved: both statistics, in the same direction, each beyond its interval and by
  more than a threshold (MIN_CHANGE, or `--fail-on-regression PCT`). Recorded here (tests/data):
  the same code run twice moved +36 % at the median and +5 % at the 10th percentile.

Instruction counts (`timing.instructions_all`, --metric instructions) are another matter: the
machine adds nothing to them, but the counted steps of one run drift (the first ones execute more:
caches and Python's specialising interpreter warming up), and the same drift repeats run after
run. So counts are compared step by step (`paired_ratio`): the i-th step of one run against the
i-th of the other, whose code is the same; the median of those ratios, with a bootstrap interval
over the steps. Recorded here (tests/data/instructions_*.json): an A/A pair's step ratios were
within 0.5 % of 1 and their median within 0.04 %; one more tensor operation a step moved it +2.3 %
to +6.4 %.

Torch-free; numpy does the resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95          # confidence level of every interval
RESAMPLES = 2000      # bootstrap resamples (percentile intervals)
BLOCKS = 20           # blocks per side, spread over its runs
MIN_STEPS = 10        # fewer steady steps than this: no interval (the noise is unknown)
MIN_CHANGE = 0.10     # a change below 10 % is not called without --fail-on-regression PCT
FAST = 10             # the percentile that stands for "the fast end" of a distribution

Runs = Sequence[Sequence[float]]   # runs, each its steady step times in the order they ran


def samples(runs: list[dict], key: str = "step_s_all") -> list[list[float]]:
    """Each run's per-step samples timing[key]: step times (step_s_all; runs written before it
    existed have none) or instruction counts (instructions_all, --metric instructions)."""
    return [r["timing"][key] for r in runs if r["timing"].get(key)]


def step_samples(runs: list[dict]) -> list[list[float]]:
    """Every steady step time of each run."""
    return samples(runs, "step_s_all")


@dataclass(frozen=True)
class Interval:
    value: float          # point estimate: new / old of the pooled statistic
    low: float
    high: float

    def beyond_noise(self) -> bool:
        return self.low > 1.0 or self.high < 1.0


@dataclass(frozen=True)
class Ratio:
    """new / old step time at the median and at the fast end, each with its 95 % interval."""
    median: Interval
    fast: Interval

    @property
    def change(self) -> float:
        """The change people read: of the median step time (+0.25: 25 % slower)."""
        return self.median.value - 1.0

    def significant(self, threshold: float = MIN_CHANGE) -> bool:
        both = (self.median, self.fast)
        same_way = all(i.value > 1 for i in both) or all(i.value < 1 for i in both)
        return same_way and all(i.beyond_noise() and abs(i.value - 1) > threshold for i in both)

    def slower_beyond(self, threshold: float) -> bool:
        """A regression: both statistics slower by more than `threshold`, both intervals above 1."""
        return all(i.low > 1.0 and i.value - 1 > threshold for i in (self.median, self.fast))


def valid(runs: Runs) -> bool:
    """Every recorded step time is a positive, finite number of seconds. A NaN, an infinity, a
    negative or zero time, a string is no measurement (a damaged or edited file): nothing is
    inferred from it."""
    return all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
               for r in runs for s in r)


def usable(runs: Runs | None) -> bool:
    return bool(runs) and all(len(r) > 0 for r in runs) and sum(len(r) for r in runs) >= MIN_STEPS \
        and valid(runs)


def _blocks(runs: Runs) -> list[np.ndarray]:
    """Each run cut into contiguous blocks, in logs: a ratio of times is a difference of logs, and
    neither a median of two 1e308 s steps nor the ratio 1e308 / 1e-4 overflows there."""
    per_run = max(1, BLOCKS // len(runs))
    out: list[np.ndarray] = []
    for r in runs:
        a = np.log(np.asarray(r, dtype=float))
        out += np.array_split(a, min(per_run, len(a)))
    return out


def _bootstrap(runs: Runs, q: float, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap distribution of the q-th percentile's log: resample the blocks, take the median
    of the resampled blocks' own q-th percentiles."""
    per_block = np.asarray([np.percentile(b, q) for b in _blocks(runs)])
    picks = rng.integers(0, len(per_block), size=(RESAMPLES, len(per_block)))
    return np.median(per_block[picks], axis=1)


def pooled(runs: Runs, q: float = 50) -> float:
    return float(np.percentile(np.concatenate([np.asarray(r, dtype=float) for r in runs]), q))


def _interval(new: Runs, old: Runs, q: float, rng: np.random.Generator) -> Interval:
    log_ratio = _bootstrap(new, q, rng) - _bootstrap(old, q, rng)
    with np.errstate(over="ignore"):    # 1e308 s against 1e-4 s: infinitely slower is the honest answer
        low, high = np.exp(np.quantile(log_ratio, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
        value = np.exp(np.log(pooled(new, q)) - np.log(pooled(old, q)))
    return Interval(float(value), float(low), float(high))


def ratio(new: Runs | None, old: Runs | None, seed: int = 0) -> Ratio | None:
    """new / old with intervals; None when either side has too few steps to say anything."""
    if not (usable(new) and usable(old)):
        return None
    rng = np.random.default_rng(seed)     # fixed: the same samples always give the same verdict
    return Ratio(_interval(new, old, 50, rng), _interval(new, old, FAST, rng))


def paired_ratio(new: Runs | None, old: Runs | None, seed: int = 0) -> Interval | None:
    """new / old of samples that pair up step by step: the median over the steps of the ratio of
    their i-th steps (each side's median over its repeats), with the 95 % interval of that median
    (steps resampled); None with fewer than MIN_STEPS pairs."""
    if not (new and old):
        return None
    n = min(len(r) for r in (*new, *old))
    if n < MIN_STEPS:
        return None
    ratios = np.median([r[:n] for r in new], axis=0) / np.median([r[:n] for r in old], axis=0)
    picks = np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))
    low, high = np.quantile(np.median(ratios[picks], axis=1), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(np.median(ratios)), float(low), float(high))


def median_interval(runs: Runs | None, seed: int = 0) -> tuple[float, float] | None:
    """The pooled median's 95 % interval (block bootstrap); None with too few steps."""
    if not usable(runs):
        return None
    low, high = np.exp(np.quantile(_bootstrap(runs, 50, np.random.default_rng(seed)),
                                   [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
    return float(low), float(high)


def relative_noise(runs: Runs | None, seed: int = 0) -> float | None:
    """Half the width of the median's interval, relative to the median (0.05: +-5 %)."""
    interval = median_interval(runs, seed)
    if interval is None:
        return None
    return (interval[1] - interval[0]) / 2 / pooled(runs)
