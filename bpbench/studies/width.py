"""The width study, seed 004 sections C-D: a 1-H-1 ReLU MLP trained by Adam on CPU and GPU.

Per hidden width H: the step time on each device, the CUDA speedup, and the crossover width where
the GPU starts to win. The seed timed 1000 steps at H = 500 (CPU faster) and H = 200,000 (GPU
about 60x faster); its figures are shown beside ours as reference points.
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any

from bpbench import experiments
from bpbench import variants as V
from bpbench.results import figures
from bpbench.results.cells import Cell, make_cell
from bpbench.results.contention import NOT_COMPARABLE

# Seed 004, `t2 - t1` around 1000 Adam steps (time.time()), per step: its own CPU and GPU.
SEED_STEPS = 1000
SEED_S = {"cpu": {500: 0.36923766136169434, 200_000: 84.05620455741882},
          "cuda": {500: 0.5803208351135254, 200_000: 1.373826026916504}}
SEED_STEP_S = {dev: {h: s / SEED_STEPS for h, s in by_h.items()} for dev, by_h in SEED_S.items()}
# Step-time markers per series; % of peak is drawn with hollow triangles and the seed with crosses.
SERIES_MARKERS = ("o", "s", "D", "P")
# What seed 004 timed: the torch module, autograd and torch.optim.Adam. The other variants
# (manual's hand-written Adam, compiled, ...) join the study when --variant asks for them.
SEED_VARIANTS = ["autograd"]


def plan(devices: list[str], variants: list[str], entry: dict[str, Any], opts: dict[str, Any]) -> list[Cell]:
    """One cell per width, variant and device; epochs are Adam steps (one full-batch step each)."""
    widths = opts.get("widths") or entry.get("widths", [500])
    steps = opts.get("steps") or entry.get("epochs", 1000)
    base = {k: v for k, v in entry.items() if k not in ("widths", "epochs")}
    return [make_cell("width", "width", v, d, {**base, "width": w, "epochs": steps})
            for w in widths for v in V.chosen(experiments.REGISTRY["width"].variants, variants or SEED_VARIANTS)
            for d in devices]


def _series(cells: list[dict[str, Any]]) -> list[list[str]]:
    """Per cell, the run series it belongs to: its variant and label less H ("autograd",
    "compiled", "autograd threads=2"): rows are one per series and width, so cells that differ
    in anything but H never share a row. `--threads` splits CPU cells only, so a GPU cell joins
    every thread count's series of its variant (its CUDA side, for the crossover)."""
    def parts(c: dict[str, Any]) -> list[str]:
        return [p for p in c["label"].split(", ") if p and not p.startswith("H=")]

    def name(c: dict[str, Any], ps: list[str]) -> str:
        return " ".join([c["variant"]] + [", ".join(ps)] * bool(ps))

    def unthreaded(c: dict[str, Any]) -> tuple:
        return c["variant"], tuple(p for p in parts(c) if not p.startswith("threads="))

    threaded: dict[tuple, list[str]] = {}
    for c in cells:
        if c["device"] == "cpu" and any(p.startswith("threads=") for p in parts(c)):
            names = threaded.setdefault(unthreaded(c), [])
            names += [name(c, parts(c))] * (name(c, parts(c)) not in names)
    return [threaded.get(unthreaded(c), [name(c, parts(c))])
            if c["device"] != "cpu" and tuple(parts(c)) == unthreaded(c)[1] else [name(c, parts(c))]
            for c in cells]


def derive(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    hardware: dict[str, str] = {}
    ceilings: dict[str, dict[str, Any] | None] = {}   # per device, as its first analysed cell measured them
    steps = set()
    for c, names in zip(cells, _series(cells)):
        w, s = c["overrides"]["width"], c.get("summary") or {}
        for name in names:
            r = rows.setdefault((name, w), {"series": name, "variant": c["variant"], "width": w})
            r[f"{c['device']}_step_s"] = s.get("step_s_median")
            r[f"{c['device']}_percent_of_peak"] = s.get("percent_of_peak")   # achieved % of the measured peak
            r["contended"] = r.get("contended", False) or bool(s.get("contended"))   # no speedup drawn
            r[f"{c['device']}_bound"] = s.get("bound")                       # compute | memory | overhead
            r[f"{c['device']}_step_over_bound"] = s.get("step_over_bound")
        steps.add(c["overrides"].get("epochs"))
        if c.get("runs"):
            env = c["runs"][-1]["env"]
            hardware[c["device"]] = env.get("cuda_device") or env.get("cpu") or c["device"]
            ceilings.setdefault(c["device"], (c["runs"][-1].get("analysis") or {}).get("ceilings"))
    if not rows:
        return None
    series = list(dict.fromkeys(name for name, _ in rows))   # in plan order: a fast variant's reference first
    out, crossovers = [], {}
    for name in series:
        widths = sorted(w for n, w in rows if n == name)
        crossover = None
        for w in widths:
            r = rows[name, w]
            cpu, gpu = r.get("cpu_step_s"), r.get("cuda_step_s")
            r["cuda_speedup"] = cpu / gpu if cpu and gpu and not r["contended"] else None
            if crossover is None and r["cuda_speedup"] and r["cuda_speedup"] > 1:
                crossover = w
            out.append(r)
        # Never below the smallest width measured: when the GPU already wins there, the true
        # crossover is at or below it, and the table says so rather than name a width it did not see.
        crossovers[name] = {"width": crossover, "at_or_below": bool(crossover) and crossover == widths[0]}
    first = crossovers[series[0]]
    return {"rows": out, "series": series, "crossovers": crossovers,
            "crossover_width": first["width"], "crossover_at_or_below": first["at_or_below"],
            "steps": sorted(s for s in steps if s),
            "hardware": hardware, "ceilings": {d: c for d, c in ceilings.items() if c}, "seed_step_s": {d: {str(h): s for h, s in v.items()} for d, v in SEED_STEP_S.items()},
            "note": "crossover (per series: variant and label less H): the smallest width at which CUDA's step "
                    "is faster than the CPU's; crossover_width: the first series'"}


def _rows(w: dict[str, Any], series: str | None) -> list[dict[str, Any]]:
    return [r for r in w["rows"] if r.get("series") == series]


def _crossover_line(cross: dict[str, Any], has_cuda: bool) -> str:
    w = cross.get("width")
    if w:
        return f"GPU faster from H = {w:,}" + (" (already at the smallest width measured: the crossover is at "
                                                "or below it)" if cross.get("at_or_below") else "")
    return "the GPU was not faster at any width measured" if has_cuda else "n/a (no CUDA cells ran)"


def render(w: dict[str, Any]) -> list:
    from bpbench.report.format import Tab, fmt_ratio, fmt_s

    steps = ", ".join(f"{s:,}" for s in w.get("steps") or []) or "?"
    # Documents written before rows had a series hold one series and a top-level crossover.
    series = w.get("series") or [None]
    crossovers = w.get("crossovers") or {series[0]: {"width": w.get("crossover_width"),
                                                     "at_or_below": w.get("crossover_at_or_below")}}
    named = len(series) > 1   # the series column only when there is something to tell apart
    tab = Tab("", ["series"] * named + ["H", "CPU step", "CUDA step", "CUDA speedup", "CPU % peak", "CUDA % peak",
                                        "CPU bound", "CUDA bound"], text=int(named))   # H is a number
    for r in w["rows"]:
        tab.rows.append([r.get("series", "")] * named +
                        [f"{r['width']:,}", fmt_s(r.get("cpu_step_s")), fmt_s(r.get("cuda_step_s")),
                         fmt_ratio(r.get("cuda_speedup")), figures.fmt_percent(r.get("cpu_percent_of_peak")),
                         figures.fmt_percent(r.get("cuda_percent_of_peak")),
                         *(_bound(r, dev) for dev in ("cpu", "cuda"))])
    crossings = [f"crossover{f' ({s})' if named else ''}: "
                 + _crossover_line(crossovers.get(s) or {}, any(r.get("cuda_step_s") for r in _rows(w, s)))
                 for s in series]
    if not any(r.get("cuda_step_s") for r in w["rows"]):
        crossings = ["crossover: n/a (no CUDA cells ran)"]   # once, not once per series
    busy = sorted({r["width"] for r in w["rows"] if r.get("contended")})
    if busy:
        crossings.append(f"[yellow]H = {', '.join(f'{h:,}' for h in busy)}: {NOT_COMPARABLE} "
                         "(no speedup or crossover drawn there)[/]")
    seed = "; ".join(f"H = {h:,}: CPU {fmt_s(SEED_STEP_S['cpu'][h])}, GPU {fmt_s(SEED_STEP_S['cuda'][h])}"
                     for h in SEED_STEP_S["cpu"])
    return [f"[bold]width study[/] (seed 004): 1-H-1 MLP, Adam, {steps} steps per width",
            tab.drop_empty(keep=2 + named), *crossings, *_why(w, series[0]),
            f"[dim]seed 004's own machine, per step: {seed}[/]"]


def _bound(r: dict[str, Any], dev: str) -> str:
    """'memory 12x': what bounds this device's step at this width, and the step's multiple of it."""
    from bpbench.report.format import fmt_cell_bound
    return fmt_cell_bound({"bound": r.get(f"{dev}_bound"), "step_over_bound": r.get(f"{dev}_step_over_bound")})


def _why(w: dict[str, Any], series: str | None) -> list[str]:
    """The crossover explained by the bounds: per device, what bounds its step as H grows and the
    ceilings behind it (each op's cost while overhead-bound, the bandwidth once memory-bound)."""
    from bpbench.report.format import fmt_rate
    ceilings, rows = w.get("ceilings") or {}, _rows(w, series) or w["rows"]
    lines = []
    for dev, c in ceilings.items():
        per_h = " · ".join(f"H = {r['width']:,} {r[f'{dev}_bound']}" for r in rows if r.get(f"{dev}_bound"))
        if per_h and c:
            lines.append(f"{dev.upper()} bound by {per_h} (one ATen call {fmt_rate(c.get('op_overhead_us'))} µs, "
                         f"{fmt_rate(c.get('bandwidth_gbs'))} GB/s, {fmt_rate(c.get('gflops'))} GFLOP/s)")
    if len(lines) == 2:
        lines.append("the GPU loses while both steps are overhead-bound (a kernel launch costs more than a CPU "
                     "op) and wins once the CPU's step is bound by memory or compute, where the GPU's ceilings "
                     "are far higher")
    return lines


def plot(w: dict[str, Any], out_dir: Path) -> list[Path]:
    from bpbench.report import plots
    plt = plots.pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 5.2))
    hw = w.get("hardware") or {}
    series = w.get("series") or [None]
    crossovers = w.get("crossovers") or {series[0]: {"width": w.get("crossover_width")}}
    named = len(series) > 1
    for i, name in enumerate(series):   # colour: the device (as the seed's points); line and marker: the series
        ls, marker = plots.LINESTYLES[i % len(plots.LINESTYLES)], SERIES_MARKERS[i % len(SERIES_MARKERS)]
        for dev, color in (("cpu", "C0"), ("cuda", "C1")):
            pts = [(r["width"], r[f"{dev}_step_s"]) for r in _rows(w, name) if r.get(f"{dev}_step_s")]
            if pts:
                ax.plot(*zip(*pts), marker=marker, ls=ls, color=color,
                        label=f"{dev.upper()}{f' {name}' if named else ''} here ({hw.get(dev, dev)})")
        cross = (crossovers.get(name) or {}).get("width")
        if cross:
            ax.axvline(cross, ls=ls, color="gray", label=f"crossover{f' {name}' if named else ''} H={cross:,}")
    for dev, color in (("cpu", "C0"), ("cuda", "C1")):
        seed = SEED_STEP_S[dev]
        ax.scatter(list(seed), list(seed.values()), marker="x", s=60, color=color,
                   label=f"seed 004's {'GPU' if dev == 'cuda' else 'CPU'} ({SEED_STEPS} steps)")
    steps = ", ".join(f"{s:,}" for s in w.get("steps") or [])
    ran = " vs ".join(d.upper() for d in ("cpu", "cuda") if any(r.get(f"{d}_step_s") for r in w["rows"]))
    ax.set(xscale="log", yscale="log", xlabel="hidden width H" + plots.LOG,
           ylabel="time per Adam step (median)" + plots.LOG,
           title=f"1-H-1 MLP, Adam, {steps} steps per width: {ran or 'nothing ran'}")
    plots.seconds_axis(ax.yaxis)   # after the scale: setting a scale replaces the formatters
    widths = [r["width"] for r in w["rows"]] + [h for seed in SEED_STEP_S.values() for h in seed]
    plots.plain_log_ticks(ax.xaxis, widths, lambda h: f"{h:,.0f}")   # the widths themselves, not 10^3
    handles, labels = ax.get_legend_handles_labels()
    ax2 = _plot_peak(ax, w, series)
    if ax2 is not None:
        more = ax2.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    # One legend for both axes, below the plot: inside, the twin axis' legend covered the first.
    ax.legend(handles, labels, fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    return [plots.save(fig, out_dir / "width.png")]


def _plot_peak(ax, w: dict[str, Any], series: list[str | None]):
    """The width plot's second axis: achieved % of the measured peak per H, device and series
    (triangles: the seed's reference points are crosses), which explains the crossover: the
    GPU's share of its peak climbs with H. Returns the axis (None: no % of peak was measured)."""
    from bpbench.report import plots
    ax2 = None
    named = len(series) > 1
    for i, name in enumerate(series):
        for dev, color in (("cpu", "C0"), ("cuda", "C1")):
            pts = [(r["width"], r[f"{dev}_percent_of_peak"]) for r in _rows(w, name) if r.get(f"{dev}_percent_of_peak")]
            if pts:
                ax2 = ax2 or ax.twinx()
                # Hollow and larger than the step markers: a lone point (one width) stays visible
                # where it lands on one (the twin axis draws on top).
                ax2.plot(*zip(*pts), ls=plots.LINESTYLES[i % len(plots.LINESTYLES)], lw=1, marker="^",
                         mfc="none", ms=9, mew=1.5, color=color,
                         label=f"{dev.upper()}{f' {name}' if named else ''} % of peak")
    if ax2 is not None:
        ax2.set(yscale="log", ylabel="% of measured matmul peak (triangles)" + plots.LOG)
        shares = [y for line in ax2.get_lines() for y in line.get_ydata()]
        decades = sorted({10.0 ** e for e in range(math.floor(math.log10(min(shares))),
                                                    math.ceil(math.log10(max(shares))) + 1)})
        plots.plain_log_ticks(ax2.yaxis, decades, lambda y: f"{y:g}%")   # 0.01%, not 10^-2
    return ax2
