"""The width study, seed 004 sections C-D: a 1-H-1 ReLU MLP trained by Adam on CPU and GPU.

Per hidden width H: the step time on each device, the CUDA speedup, and the crossover width where
the GPU starts to win. The seed timed 1000 steps at H = 500 (CPU faster) and H = 200,000 (GPU
about 60x faster); its figures are shown beside ours as reference points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bpbench import experiments, figures
from bpbench import variants as V
from bpbench.compare import Cell, make_cell

# Seed 004, `t2 - t1` around 1000 Adam steps (time.time()), per step: its own CPU and GPU.
SEED_STEPS = 1000
SEED_S = {"cpu": {500: 0.36923766136169434, 200_000: 84.05620455741882},
          "cuda": {500: 0.5803208351135254, 200_000: 1.373826026916504}}
SEED_STEP_S = {dev: {h: s / SEED_STEPS for h, s in by_h.items()} for dev, by_h in SEED_S.items()}


def plan(devices: list[str], variants: list[str], entry: dict[str, Any], opts: dict[str, Any]) -> list[Cell]:
    """One cell per width, variant and device; epochs are Adam steps (one full-batch step each)."""
    widths = opts.get("widths") or entry.get("widths", [500])
    steps = opts.get("steps") or entry.get("epochs", 1000)
    base = {k: v for k, v in entry.items() if k not in ("widths", "epochs")}
    return [make_cell("width", "width", v, d, {**base, "width": w, "epochs": steps})
            for w in widths for v in V.chosen(experiments.REGISTRY["width"].variants, variants) for d in devices]


def _peak(cells: list[dict[str, Any]]) -> dict[int, dict[str, float | None]]:
    """width -> {"cpu_percent_of_peak": ..., "cuda_percent_of_peak": ...}."""
    out: dict[int, dict[str, float | None]] = {}
    for c in cells:
        if c["study"] == "width":
            pct = (c.get("summary") or {}).get("percent_of_peak")
            out.setdefault(c["overrides"]["width"], {})[f"{c['device']}_percent_of_peak"] = pct
    return out


def derive(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    rows: dict[int, dict[str, Any]] = {}
    hardware: dict[str, str] = {}
    steps = set()
    for c in cells:
        w = c["overrides"]["width"]
        rows.setdefault(w, {"width": w})[f"{c['device']}_step_s"] = (c.get("summary") or {}).get("step_s_median")
        steps.add(c["overrides"].get("epochs"))
        if c.get("runs"):
            env = c["runs"][-1]["env"]
            hardware[c["device"]] = env.get("cuda_device") or env.get("cpu") or c["device"]
    if not rows:
        return None
    for w, pct in _peak(cells).items():   # achieved % of the measured peak
        rows[w].update(pct)
    out, crossover = [], None
    for w in sorted(rows):
        r = rows[w]
        cpu, gpu = r.get("cpu_step_s"), r.get("cuda_step_s")
        r["cuda_speedup"] = cpu / gpu if cpu and gpu else None
        if crossover is None and r["cuda_speedup"] and r["cuda_speedup"] > 1:
            crossover = w
        out.append(r)
    # Never below the smallest width measured: when the GPU already wins there, the true crossover
    # is at or below it, and the table says so rather than name a width it did not see.
    return {"rows": out, "crossover_width": crossover,
            "crossover_at_or_below": bool(crossover) and crossover == min(rows),
            "steps": sorted(s for s in steps if s),
            "hardware": hardware, "seed_step_s": {d: {str(h): s for h, s in v.items()} for d, v in SEED_STEP_S.items()},
            "note": "crossover: the smallest width at which CUDA's step is faster than the CPU's"}


def render(w: dict[str, Any]) -> list:
    from bpbench.report import Tab, _ratio, fmt_s

    steps = ", ".join(f"{s:,}" for s in w.get("steps") or []) or "?"
    tab = Tab("", ["H", "CPU step", "CUDA step", "CUDA speedup", "CPU % peak", "CUDA % peak"], text=0)
    for r in w["rows"]:
        tab.rows.append([f"{r['width']:,}", fmt_s(r.get("cpu_step_s")), fmt_s(r.get("cuda_step_s")),
                         _ratio(r.get("cuda_speedup")), figures.fmt_percent(r.get("cpu_percent_of_peak")),
                         figures.fmt_percent(r.get("cuda_percent_of_peak"))])
    cross = w.get("crossover_width")
    has_cuda = any(r.get("cuda_step_s") for r in w["rows"])
    seed = "; ".join(f"H = {h:,}: CPU {fmt_s(SEED_STEP_S['cpu'][h])}, GPU {fmt_s(SEED_STEP_S['cuda'][h])}"
                     for h in SEED_STEP_S["cpu"])
    return [f"[bold]width study[/] (seed 004): 1-H-1 MLP, Adam, {steps} steps per width", tab.drop_empty(keep=2),
            f"crossover: GPU faster from H = {cross:,}"
            + (" (already at the smallest width measured: the crossover is at or below it)"
               if w.get("crossover_at_or_below") else "") if cross else
            "crossover: the GPU was not faster at any width measured" if has_cuda else
            "crossover: n/a (no CUDA cells ran)",
            f"[dim]seed 004's own machine, per step: {seed}[/]"]


def plot(w: dict[str, Any], out_dir: Path) -> list[Path]:
    from bpbench import plots
    plt = plots.pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    hw = w.get("hardware") or {}
    for dev, color in (("cpu", "C0"), ("cuda", "C1")):
        pts = [(r["width"], r[f"{dev}_step_s"]) for r in w["rows"] if r.get(f"{dev}_step_s")]
        if pts:
            ax.plot(*zip(*pts), marker="o", color=color, label=f"{dev.upper()} here ({hw.get(dev, dev)})")
        seed = SEED_STEP_S[dev]
        ax.scatter(list(seed), list(seed.values()), marker="x", s=60, color=color,
                   label=f"seed 004's {'GPU' if dev == 'cuda' else 'CPU'} ({SEED_STEPS} steps)")
    if w.get("crossover_width"):
        ax.axvline(w["crossover_width"], ls="--", color="gray", label=f"crossover H={w['crossover_width']:,}")
    steps = ", ".join(f"{s:,}" for s in w.get("steps") or [])
    ran = " vs ".join(d.upper() for d in ("cpu", "cuda") if any(r.get(f"{d}_step_s") for r in w["rows"]))
    ax.yaxis.set_major_formatter(plots.seconds())
    ax.set(xscale="log", yscale="log", xlabel="hidden width H", ylabel="time per Adam step (median)",
           title=f"1-H-1 MLP, Adam, {steps} steps per width: {ran or 'nothing ran'}")
    ax.legend(fontsize=7)
    _plot_peak(ax, w)
    return [plots.save(fig, out_dir / "width.png")]


def _plot_peak(ax, w: dict[str, Any]) -> None:
    """The width plot's second axis: achieved % of the measured peak per H and device (dashed),
    which explains the crossover: the GPU's share of its peak climbs with H."""
    ax2 = None
    for dev in ("cpu", "cuda"):
        pts = [(r["width"], r[f"{dev}_percent_of_peak"]) for r in w["rows"] if r.get(f"{dev}_percent_of_peak")]
        if pts:
            ax2 = ax2 or ax.twinx()
            ax2.plot(*zip(*pts), ls="--", marker="x", label=f"{dev.upper()} % of peak")
    if ax2 is not None:
        ax2.set(yscale="log", ylabel="% of measured matmul peak (dashed)")
        ax2.legend(loc="lower right", fontsize=7)
