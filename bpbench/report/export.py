"""Exports that CI dashboards read: `bpbench report FILE --format github-action-benchmark | bencher`.

One formatter per format, each turning a comparison (or a single run, read as a one-cell
comparison) into that tool's JSON; `EXPORTERS` maps the `--format` name to it:

- github-action-benchmark (`tool: customSmallerIsBetter`): a list of
  {name, unit, value, range}, one entry per cell and measure; range is "± half the 95 % interval".
- bencher (Bencher Metric Format): {benchmark: {measure: {value, lower_value, upper_value}}},
  one benchmark per cell; lower and upper are the 95 % interval's ends.

Measures, each where the cell has it: the median step time (`latency`, in ns, Bencher's built-in
measure), instructions per step (`instructions`, from --metric instructions), and the peak RSS
(`peak-rss`, MiB). Step times and instructions take the block-bootstrap interval of the pooled
median over every run's steps (results/noise.py); the peak RSS, one figure per run, takes the
lowest and highest of the cell's repeats. A cell measured under callgrind exports its
instructions only (its times and memory are valgrind's); runs measured on a busy machine
(results/contention.py) give no latency.

Torch-free.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable

from bpbench.results import contention, noise


@dataclass(frozen=True)
class Figure:
    """One measure of one cell: value and interval (None: not known) in `unit`."""
    measure: str          # Bencher's measure slug
    unit: str
    value: float
    low: float | None
    high: float | None


def _sampled(runs: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[float, float | None, float | None] | None:
    """(pooled median, interval low, interval high) of the per-step samples timing[key]."""
    samples = [[v * scale for v in r["timing"][key]] for r in runs if r["timing"].get(key)]
    if not samples:
        return None
    interval = noise.median_interval(samples)
    low, high = interval if interval else (None, None)
    return noise.pooled(samples), low, high


def _peak_rss(runs: list[dict[str, Any]]) -> tuple[float, float | None, float | None] | None:
    peaks = [r["memory"]["rss_peak_mib"] for r in runs if r["memory"].get("rss_peak_mib") is not None]
    if not peaks:
        return None
    return statistics.median(peaks), (min(peaks) if len(peaks) > 1 else None), (max(peaks) if len(peaks) > 1 else None)


def cell_figures(cell: dict[str, Any]) -> list[Figure]:
    """The measures a finished cell has (none for a cell that failed or did not run)."""
    runs = [r for r in cell.get("runs") or [] if r.get("status") == "ok"]
    if cell.get("status") != "ok" or not runs:
        return []
    counted = any(r["timing"].get("metric") == "instructions" for r in runs)
    quiet = [r for r in runs if not contention.contended(r)]   # a busy machine's times time its queue
    found = [("instructions", "instructions/step", _sampled(runs, "instructions_all"))]
    if not counted:
        found = [("latency", "ns/step", _sampled(quiet, "step_s_all", 1e9) if quiet else None)] + found + \
                [("peak-rss", "MiB", _peak_rss(runs))]
    return [Figure(m, unit, *v) for m, unit, v in found if v is not None]


def _figures(doc: dict[str, Any]) -> list[tuple[str, list[Figure]]]:
    return [(c["key"], figs) for c in doc["cells"] if (figs := cell_figures(c))]


def _range(f: Figure) -> str:
    if f.low is None or f.high is None:
        return ""
    return f"± {(f.high - f.low) / 2:.6g}"


def github_action_benchmark(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """customSmallerIsBetter: one entry per cell and measure, named "CELL (measure)"."""
    return [{"name": f"{key} ({f.measure})", "unit": f.unit, "value": f.value, "range": _range(f)}
            for key, figs in _figures(doc) for f in figs]


def bencher(doc: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Bencher Metric Format: benchmark (the cell's key) -> measure -> value, lower, upper."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, figs in _figures(doc):
        out[key] = {}
        for f in figs:
            metric = {"value": f.value}
            if f.low is not None and f.high is not None:
                metric.update(lower_value=f.low, upper_value=f.high)
            out[key][f.measure] = metric
    return out


EXPORTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "github-action-benchmark": github_action_benchmark,
    "bencher": bencher,
}
