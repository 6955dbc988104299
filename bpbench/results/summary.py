"""A comparison cell's figures from its runs: what every table, file and baseline reads.

Pure and torch-free: `compare` fills it as each cell finishes, `report` computes it again from a
saved file's runs (derived figures are never trusted from the file).
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

from bpbench.results import bounds, contention, figures, noise
from bpbench.results.noise import step_samples
from bpbench.results.timing import StepTimes, timing_problem

# The timing figures a cell's summary takes from its runs (none when they are no measurement).
TIMES = ("step_s_all", "step_s_median", "step_s_iqr", "train_s", "samples_per_s")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The cell's figures: step time (and instructions per step) from every steady (counted) step
    of every repeat, the rest medians over repeats; `noise` is the relative half-width of the step
    median's 95 % interval."""
    if not runs:
        return {}

    def med(get: Callable[[dict], Any]):
        vals = [v for v in (get(r) for r in runs) if v is not None]
        return statistics.median(vals) if vals else None

    problem = next((p for p in (timing_problem(r["timing"]) for r in runs) if p), None)
    if problem:   # no figure, ratio or verdict from times that are no measurement
        runs = [{**r, "timing": {**r["timing"], **dict.fromkeys(TIMES)}} for r in runs]
    samples = step_samples(runs)
    counts = noise.samples(runs, "instructions_all")
    times = StepTimes(tuple(map(tuple, samples)))
    metrics = runs[-1]["final"].get("metrics") or {}
    step = times.median if noise.usable(samples) else med(lambda r: r["timing"]["step_s_median"])
    return {
        **({"invalid_timing": problem} if problem else {}),
        "repeats": len(runs),
        "setup_s": med(lambda r: r["timing"]["setup_s"]),
        "step_s_median": step,
        "step_s_iqr": med(lambda r: r["timing"]["step_s_iqr"]),
        "noise": noise.relative_noise(samples),
        "train_s": med(lambda r: r["timing"]["train_s"]),
        "samples_per_s": med(lambda r: r["timing"]["samples_per_s"]),
        "rss_peak_mib": med(lambda r: r["memory"]["rss_peak_mib"]),
        "cuda_peak_allocated_mib": med(lambda r: r["memory"]["cuda_peak_allocated_mib"]),
        "saved_for_backward_bytes": med(_saved_bytes),
        "compile_s": med(lambda r: r["timing"].get("compile_s")),
        "final_loss": runs[-1]["final"]["loss"],
        "accuracy": metrics.get("test_accuracy", metrics.get("accuracy")),
        "steps": runs[-1]["timing"]["steps"],
        # measured on a busy machine (any repeat): no ratio, verdict or baseline change is drawn
        "contended": any(contention.contended(r) for r in runs),
        "contention": contention.reason(runs),
        # --metric instructions: pooled over every counted step, as step times are
        "instructions_per_step": noise.pooled(counts) if counts else None,
        "instructions_noise": noise.relative_noise(counts),
        **figures.cell_figures(runs),
        **bounds.cell_bound(runs, step),
    }


def _saved_bytes(run: dict[str, Any]) -> int | None:
    """What one step of this run's variant keeps for backward (its own world's figure)."""
    sfb = run["memory"].get("saved_for_backward") or {}
    return sfb.get(sfb.get("world"))
