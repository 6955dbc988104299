"""Summary statistics of step times: robust to the odd slow step that noisy machines produce."""

from __future__ import annotations

import statistics


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def iqr(xs: list[float]) -> float | None:
    """Interquartile range (Q3 - Q1), the spread that pytest-benchmark and torch.utils.benchmark report."""
    if len(xs) < 2:
        return 0.0 if xs else None
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q3 - q1


# torch.utils.benchmark's rule: an IQR above this share of the median is too noisy to trust as is.
NOISY_IQR_SHARE = 0.1


def spread_warning(xs: list[float], limit: float = NOISY_IQR_SHARE) -> str | None:
    """A warning when the IQR exceeds `limit` of the median, torch.utils.benchmark's rule for a
    measurement too noisy to trust at face value; None otherwise."""
    med, spread = median(xs), iqr(xs)
    if not med or spread is None or spread <= limit * med:
        return None
    return (f"step times are noisy: the IQR is {spread / med:.0%} of the median (over {limit:.0%}); "
            "rerun on a quieter machine or compare medians of repeats")
