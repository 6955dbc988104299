"""Work and the limit in a comparison: GFLOP/s and % of peak per cell, thread sweeps.

Torch-free helpers that `compare`, `report` and `plots` call, kept apart from them so that each
stays one line where it is used:

- `cell_figures(runs)`: a cell's achieved GFLOP/s and % of the measured peak (medians over its
  repeats), merged into the cell summary;
- `table_columns()`: the comparison table's GFLOP/s and % peak columns;
- `plan_threads(cells, threads)`: `compare --threads 1,2,...`, one CPU cell per thread count.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def cell_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{flops_per_step, achieved_gflops, peak_gflops, percent_of_peak, threads} of a cell's runs."""
    def tp(key: str) -> float | None:
        return _median([(r.get("throughput") or {}).get(key) for r in runs])
    return {"flops_per_step": _median([(r.get("flops") or {}).get("per_step") for r in runs]),
            "achieved_gflops": tp("achieved_gflops"), "peak_gflops": tp("peak_gflops"),
            "percent_of_peak": tp("percent_of_peak"),
            "threads": runs[-1]["env"].get("threads") if runs else None}


def fmt_gflops(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def fmt_percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}%"


def table_columns() -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """(header, summary -> text) for the comparison table."""
    def cell(s: dict[str, Any]) -> str:
        g, p = s.get("achieved_gflops"), s.get("percent_of_peak")
        return fmt_gflops(g) + (f" ({fmt_percent(p)})" if p is not None else "")
    return [("GFLOP/s\n(% peak)", cell)]   # one column: the table is already wide


CSV_COLUMNS = ["threads", "flops_per_step", "achieved_gflops", "peak_gflops", "percent_of_peak"]


def plan_threads(cells: list[Any], threads: list[int] | None) -> list[Any]:
    """Each CPU cell once per thread count (`threads=N` in its overrides and label; every cell is
    its own process, where torch.set_num_threads is reliable); other cells stay as they are."""
    if not threads:
        return cells
    out = []
    for c in cells:
        if c.device != "cpu":
            out.append(c)
            continue
        for n in threads:   # the label names threads=N (a shown override, like a --set key)
            overrides = tuple(sorted({**dict(c.overrides), "threads": n}.items()))
            out.append(dataclasses.replace(c, overrides=overrides, shown=tuple(dict.fromkeys((*c.shown, "threads")))))
    return out


def thread_scaling(cells: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """"experiment variant (label without threads)" -> [(threads, step_s), ...] for cells of a
    `--threads` sweep, sorted by thread count."""
    out: dict[str, list[tuple[int, float]]] = {}
    for c in cells:
        n = c["overrides"].get("threads")
        step = (c.get("summary") or {}).get("step_s_median")
        if n is None or not step:
            continue
        base = ", ".join(p for p in c["label"].split(", ") if not p.startswith("threads="))
        out.setdefault(f"{c['experiment']} {c['variant']}" + (f" {base}" if base else ""), []).append((n, step))
    return {k: sorted(v) for k, v in out.items()}
