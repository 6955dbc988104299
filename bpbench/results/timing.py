"""Step times, one noun for every reader: `StepTimes` holds the steady steps of one run or of several
(repeats, ranks) and answers median, IQR, noise and whether to trust them, as torch.utils.benchmark's
`Measurement` does. `run`, the data-parallel merge, compare's cell summaries and both noise warnings
(a run's and a comparison's) ask it, so the rule is written once.

Robust to the odd slow step that noisy machines produce: medians and quartiles, never means.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

# torch.utils.benchmark's rule: an IQR above this share of the median is too noisy to trust as is.
NOISY_IQR_SHARE = 0.1


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if len(xs) else None


def iqr(xs: Sequence[float]) -> float | None:
    """Interquartile range (Q3 - Q1), the spread that pytest-benchmark and torch.utils.benchmark report."""
    if len(xs) < 2:
        return 0.0 if len(xs) else None
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q3 - q1


def is_noisy(step_median: float | None, step_iqr: float | None, limit: float = NOISY_IQR_SHARE) -> bool:
    """The one noise rule: the IQR exceeds `limit` of the median."""
    return bool(step_median) and step_iqr is not None and step_iqr > limit * step_median


@dataclass(frozen=True)
class StepTimes:
    """The steady step times of one or more runs (each in the order its steps ran)."""
    runs: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, steps: Sequence[float]) -> "StepTimes":
        return cls((tuple(steps),))

    @classmethod
    def of_results(cls, results: Sequence[dict]) -> "StepTimes":
        """From run results (runs written before step_s_all existed have none)."""
        return cls(tuple(tuple(r["timing"]["step_s_all"]) for r in results if r["timing"].get("step_s_all")))

    @property
    def all(self) -> list[float]:
        return [s for r in self.runs for s in r]

    @property
    def median(self) -> float | None:
        """Pooled over every step of every run."""
        return median(self.all)

    @property
    def iqr(self) -> float | None:
        """Of one run: its IQR; of several: the median of their IQRs (repeats differ by process)."""
        spreads = [s for s in (iqr(r) for r in self.runs) if s is not None]
        return statistics.median(spreads) if spreads else None

    @property
    def noisy(self) -> bool:
        return is_noisy(self.median, self.iqr)

    def warning(self, limit: float = NOISY_IQR_SHARE) -> str | None:
        """A warning when the IQR exceeds `limit` of the median; None otherwise."""
        med, spread = self.median, self.iqr
        if not is_noisy(med, spread, limit):
            return None
        return (f"step times are noisy: the IQR is {spread / med:.0%} of the median (over {limit:.0%}); "
                "rerun on a quieter machine or compare medians of repeats")


def _seconds(x: Any, positive: bool) -> bool:
    """A number of seconds a clock can have measured: finite, not negative (positive: above 0)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and \
        (x > 0 if positive else x >= 0)


def timing_problem(timing: dict[str, Any]) -> str | None:
    """Why a run's recorded step times are no measurement (None: they are one): a step time, or
    the median, IQR or training time, that is not a finite, non-negative number of seconds (a NaN,
    an infinity, a negative: a damaged or edited file), a step of 0 s, or a step longer than the
    whole run it was part of. Nothing is compared or called from such times."""
    steps = timing.get("step_s_all") or []
    bad = [x for x in steps if not _seconds(x, positive=True)]
    if bad:
        return f"a step time is {bad[0]!r}"
    for key in ("step_s_median", "step_s_iqr", "train_s", "total_s"):
        if timing.get(key) is not None and not _seconds(timing[key], positive=False):
            return f"{key} is {timing[key]!r}"
    total = timing.get("total_s")
    if steps and total and max(steps) > total:
        return f"a step of {max(steps):.3g} s is longer than the whole run ({total:.3g} s)"
    return None
