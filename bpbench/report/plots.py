"""PNG plots of a comparison (optional extra `plot`: matplotlib). Reads result dicts only.

Per experiment: the training loss of every cell against updates (one panel per run: a data set
or batching), each mini-batch update's own loss where there is one, and the step time of every
cell (median with its interquartile range); for every analysed cell, a point on the roofline of
its device. Each study draws its own plot (bpbench.studies).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from bpbench.errors import BadInput

LINESTYLES = ("-", "--", ":", "-.")
FEW_POINTS = 20   # a loss curve this short is drawn with a marker at each point
PLOT_HINT = "plots need matplotlib: pip install 'bpbench[plot]' (the comparison itself is complete)"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def seconds():
    """Tick labels in s, ms, µs (not 0.00035)."""
    from matplotlib.ticker import EngFormatter
    return EngFormatter(unit="s")


def seconds_axis(axis) -> None:
    """`seconds()` on an axis whose scale is already set (setting a scale replaces the formatters).
    A log axis that spans about a decade or less labels minor ticks too: those get the unit as
    well (2 and 5 of each decade only, unless the view is narrow)."""
    import math

    from matplotlib.ticker import EngFormatter

    class MinorSeconds(EngFormatter):
        def __call__(self, x, pos=None):
            lo, hi = sorted(self.axis.get_view_interval())
            if x <= 0 or lo <= 0 or math.floor(math.log10(hi)) - math.ceil(math.log10(lo)) >= 1:
                return ""   # two or more labelled decades: minor labels would only crowd
            mantissa = x / 10 ** math.floor(math.log10(x) + 1e-9)
            few = math.log10(hi / lo) < 0.4   # a narrow view: every minor tick, else too few labels
            return super().__call__(x, pos) if few or any(abs(mantissa - m) < 1e-6 for m in (2, 5)) else ""

    axis.set_major_formatter(seconds())
    if axis.get_scale() == "log":
        axis.set_minor_formatter(MinorSeconds(unit="s"))


LOG = " (log scale)"   # what an axis label says when the axis turned logarithmic


def spans_decades(values: list[Any]) -> bool:
    """More than a decade between the smallest and the largest positive value: a log axis."""
    vals = [v for v in values if v is not None]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > 10


def plain_log_ticks(axis, values: list[float], fmt) -> None:
    """A log axis labelled at the values themselves (500, 2,000, 200,000; 0.1%, 4.8%), by `fmt`,
    instead of matplotlib's 10^3 and 2x10^-4; no minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    axis.set_major_locator(FixedLocator(sorted(set(values))))
    axis.set_major_formatter(FuncFormatter(lambda x, pos: fmt(x)))
    axis.set_minor_formatter(NullFormatter())


def loss_scale(ax, values: list[Any]) -> bool:
    """Log axis when the loss spans more than a decade (returns True); else linear with plain
    ticks (a loss that moves within a narrow band on a log axis gets ticks like 7.075e-1)."""
    if spans_decades(values):
        ax.set_yscale("log")
        return True
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    return False


def _curve(run: dict[str, Any]) -> tuple[list[int], list[float], str]:
    """(updates, losses, what they are): each mini-batch update's loss where the run kept them,
    else the epoch's loss at the update that ended it (gradient descent: the same thing)."""
    xs: list[int] = []
    ys: list[float] = []
    per_update = False
    for h in run["history"]:
        batch = h.get("batch_losses")
        if batch:
            per_update = True
            first = h["updates"] - len(batch) + 1
            xs += range(first, h["updates"] + 1)
            ys += batch
        else:
            xs.append(h["updates"])
            ys.append(h["loss"])
    return xs, ys, "loss of each mini-batch update" if per_update else "training loss"


def _matrix(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_exp: dict[str, list[dict]] = {}
    for c in doc["cells"]:
        if c["study"] == "matrix" and c.get("runs"):
            by_exp.setdefault(c["experiment"], []).append(c)
    return by_exp


def loss_plot(exp: str, cells: list[dict[str, Any]], out_dir: Path) -> Path:
    plt = pyplot()
    labels = list(dict.fromkeys(c["label"] for c in cells))
    fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 4), squeeze=False)
    for ax, label in zip(axes[0], labels):
        shown: list[float] = []
        ylabel = "training loss"
        for i, c in enumerate(x for x in cells if x["label"] == label):
            xs, ys, ylabel = _curve(c["runs"][-1])
            shown += ys
            # Variants that agree draw on top of each other: vary the dash so each stays visible.
            # A line of one point draws nothing (a one-update run): few points get markers.
            ax.plot(xs, ys, ls=LINESTYLES[i % len(LINESTYLES)], lw=1, label=f"{c['variant']} ({c['device']})",
                    marker="o" if len(xs) <= FEW_POINTS else None, ms=4)
        log = loss_scale(ax, shown)
        ax.set(xlabel="updates", ylabel=ylabel + (LOG if log else ""), title=f"{exp} · {label}" if label else exp)
        ax.legend(fontsize=7)
    return save(fig, out_dir / f"loss_{exp}.png")


def _quartiles(c: dict[str, Any]) -> tuple[float, float, float]:
    """(Q1, median, Q3) of the cell's steady steps (from its summary where steps were not kept)."""
    import numpy as np

    from bpbench.results.noise import step_samples
    samples = step_samples(c["runs"])
    if samples:
        q1, q2, q3 = np.percentile(np.concatenate(samples), [25, 50, 75])
        return float(q1), float(q2), float(q3)
    s = c["summary"]
    half = (s.get("step_s_iqr") or 0.0) / 2
    return s["step_s_median"] - half, s["step_s_median"], s["step_s_median"] + half


def step_plot(exp: str, cells: list[dict[str, Any]], out_dir: Path) -> Path | None:
    cells = [c for c in cells if (c.get("summary") or {}).get("step_s_median")]
    if not cells:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.8 + 0.45 * len(cells)))
    q = [_quartiles(c) for c in cells]
    med = [m for _, m, _ in q]
    ax.barh(range(len(cells)), med, xerr=[[m - lo for lo, m, _ in q], [hi - m for _, m, hi in q]],
            color=[f"C{['cpu', 'cuda'].index(c['device']) if c['device'] in ('cpu', 'cuda') else 2}" for c in cells],
            capsize=3)
    ax.set_yticks(range(len(cells)), [" · ".join(x for x in (c["variant"], c["device"], c["label"]) if x)
                                      for c in cells], fontsize=8)
    ax.invert_yaxis()
    base = _baseline_marks(ax, cells)
    log = spans_decades(med + base)
    if log:
        ax.set_xscale("log")
    seconds_axis(ax.xaxis)
    ax.set(xlabel="time per step (median; bars: interquartile range)" + (LOG if log else ""), title=f"{exp}: step time")
    return save(fig, out_dir / f"steps_{exp}.png")


def _baseline_marks(ax, cells: list[dict[str, Any]]) -> list[float]:
    """Each cell's baseline median (compare/report --baseline) as a black diamond on its bar;
    returns the times drawn."""
    marks = [(i, c["summary"]["baseline_step_s"]) for i, c in enumerate(cells) if c["summary"].get("baseline_step_s")]
    if marks:
        ax.plot([t for _, t in marks], [i for i, _ in marks], "D", color="black", mfc="none", ms=7, ls="none",
                label="baseline median")
        ax.legend(fontsize=7, loc="lower right")
    return [t for _, t in marks]


def write_all(doc: dict[str, Any], out_dir: Path, extra: list[Callable[[Path], list[Path]]] = ()) -> list[Path]:
    """Write every plot the comparison has data for, and those `extra` draws (the studies'
    sections, given by the caller: reports know no study); returns the files written."""
    written = []
    for exp, cells in _matrix(doc).items():
        written.append(loss_plot(exp, cells, out_dir))
        steps = step_plot(exp, cells, out_dir)
        if steps:
            written.append(steps)
    for draw in extra:
        written += draw(out_dir)
    written += plot_thread_scaling(doc, out_dir)
    written += roofline_plot(doc, out_dir)
    return written


DEVICE_COLORS = {"cpu": "C0", "cuda": "C1"}


def roofline_points(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per cell whose last run was analysed: label, device, intensity, GFLOP/s, bound, ceilings."""
    out = []
    for c in cells:
        a = (c.get("runs") or [{}])[-1].get("analysis") or {}
        step = (c.get("summary") or {}).get("step_s_median") or a.get("step_s")
        if a.get("arithmetic_intensity") and step:
            name = " ".join(x for x in (c["experiment"], c["variant"], c.get("label")) if x)
            out.append({"label": name, "device": c["device"], "intensity": a["arithmetic_intensity"],
                        "gflops": a["flops_per_step"] / step / 1e9, "bound": (c.get("summary") or {}).get("bound"),
                        "ceilings": a.get("ceilings") or {}})
    return out


def _roofs(pts: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per device the best ceilings its cells measured (one machine may hold several dtypes)."""
    roofs: dict[str, dict[str, float]] = {}
    for p in pts:
        r = roofs.setdefault(p["device"], {})
        for k in ("gflops", "bandwidth_gbs", "best_bandwidth_gbs"):
            if p["ceilings"].get(k):
                r[k] = max(r.get(k, 0.0), p["ceilings"][k])
    return roofs


def roofline_plot(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """roofline.png: each analysed cell's arithmetic intensity (FLOP per byte, the unfused count)
    against the GFLOP/s it achieved, under its device's roof: min(peak, intensity x bandwidth),
    the matrix-product peak and the large-copy bandwidth its runs measured; dotted, the same with
    the best bandwidth of any cache size. A point far below its roof is bound by neither but by
    per-op overhead, which a roofline does not draw: each point's label says its bound."""
    pts = roofline_points(doc["cells"])
    if not pts:
        return []
    import numpy as np
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5 + 0.12 * len(pts)))
    roofs = _roofs(pts)
    ridges = [r["gflops"] / r["bandwidth_gbs"] for r in roofs.values() if r.get("gflops") and r.get("bandwidth_gbs")]
    lo = min(p["intensity"] for p in pts) / 10
    hi = max([p["intensity"] for p in pts] + ridges) * 10   # the roof's flat part in view
    for dev, r in roofs.items():
        color, x = DEVICE_COLORS.get(dev, "C2"), np.logspace(np.log10(lo), np.log10(hi), 200)
        if r.get("gflops") and r.get("bandwidth_gbs"):
            ax.plot(x, np.minimum(r["gflops"], x * r["bandwidth_gbs"]), color=color, lw=2,
                    label=f"{dev.upper()} roof: {r['gflops']:.4g} GFLOP/s, {r['bandwidth_gbs']:.3g} GB/s")
        if r.get("gflops") and r.get("best_bandwidth_gbs"):
            ax.plot(x, np.minimum(r["gflops"], x * r["best_bandwidth_gbs"]), color=color, lw=1, ls=":",
                    label=f"{dev.upper()} in cache: {r['best_bandwidth_gbs']:.3g} GB/s")
    for i, p in enumerate(pts, 1):   # numbered: cells of one model share an intensity, and labels would pile up
        color = DEVICE_COLORS.get(p["device"], "C2")
        ax.scatter([p["intensity"]], [p["gflops"]], color=color, zorder=3, s=25,
                   label=f"{i}: {p['label']} ({p['device']}, {p['bound'] or '?'})")
        ax.annotate(str(i), (p["intensity"], p["gflops"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per byte moved, unfused count)",
           ylabel="achieved GFLOP/s (FLOPs per step / median step)", title="roofline: every cell under its device's ceilings")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return [save(fig, out_dir / "roofline.png")]


def save(fig, path: Path) -> Path:
    """Through bpbench's one writer (results.files): atomically, into a symlink's target; never
    over something that is not a regular file, nor over a PNG another program wrote."""
    from bpbench.results import files as results
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    try:
        results.write_bytes(path, buf.getvalue(), "plot")
    except OSError as e:
        raise BadInput(f"cannot write plot {path}: {e.strerror or e}") from None
    return path


def plot_thread_scaling(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """threads.png for `compare --threads`: step time against CPU threads, one line per cell."""
    from bpbench.results.figures import thread_scaling
    series = {k: v for k, v in thread_scaling(doc["cells"]).items() if len(v) > 1}
    if not series:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, pts) in enumerate(series.items()):
        ax.plot(*zip(*pts), marker="o", ls=LINESTYLES[i % len(LINESTYLES)], label=name)
    log = spans_decades([t for pts in series.values() for _, t in pts])
    ax.set(xlabel="CPU threads", ylabel="time per step (median)" + (LOG if log else ""),
           yscale="log" if log else "linear", title="step time per thread count")
    seconds_axis(ax.yaxis)   # after the scale, which replaces the formatters (labels read 2.6x10^-4)
    if not log:
        ax.set_ylim(bottom=0)   # a linear time axis from zero: the gaps read as they are
    ax.set_xticks(sorted({n for pts in series.values() for n, _ in pts}))
    ax.legend(fontsize=7)
    return [save(fig, out_dir / "threads.png")]
