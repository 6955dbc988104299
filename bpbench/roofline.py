"""roofline.png: each cell's arithmetic intensity against the GFLOP/s it achieved, under the
measured ceilings of its device (matplotlib; reads result dicts only).

The roof of a device is min(peak, intensity x bandwidth): the matrix-product peak and the large-copy
bandwidth its runs measured; a dotted line shows the best bandwidth any cache size reached. A point
far below its roof is bound by neither: by per-op overhead, which a roofline does not draw (each
point's label says its bound).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEVICE_COLORS = {"cpu": "C0", "cuda": "C1"}


def points(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per cell whose last run was analysed: label, device, intensity, GFLOP/s, bound, ceilings."""
    out = []
    for c in cells:
        a = (c.get("runs") or [{}])[-1].get("analysis") or {}
        if a.get("arithmetic_intensity") and a.get("achieved_gflops"):
            name = " ".join(x for x in (c["experiment"], c["variant"], c.get("label")) if x)
            out.append({"label": name, "device": c["device"], "intensity": a["arithmetic_intensity"],
                        "gflops": a["achieved_gflops"], "bound": a.get("bound"), "ceilings": a.get("ceilings") or {}})
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


def draw(pts: list[dict[str, Any]], path: Path, save) -> Path | None:
    """The roofline of `pts` (see points) written by `save(fig, path)`; None without points."""
    if not pts:
        return None
    import numpy as np

    from bpbench import plots
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    lo = min(p["intensity"] for p in pts) / 10
    hi = max(p["intensity"] for p in pts) * 10
    for dev, r in _roofs(pts).items():
        color, x = DEVICE_COLORS.get(dev, "C2"), np.logspace(np.log10(lo), np.log10(hi), 200)
        if r.get("gflops") and r.get("bandwidth_gbs"):
            ax.plot(x, np.minimum(r["gflops"], x * r["bandwidth_gbs"]), color=color, lw=2,
                    label=f"{dev.upper()} roof: {r['gflops']:.4g} GFLOP/s, {r['bandwidth_gbs']:.3g} GB/s")
        if r.get("gflops") and r.get("best_bandwidth_gbs"):
            ax.plot(x, np.minimum(r["gflops"], x * r["best_bandwidth_gbs"]), color=color, lw=1, ls=":",
                    label=f"{dev.upper()} in cache: {r['best_bandwidth_gbs']:.3g} GB/s")
    for p in pts:
        color = DEVICE_COLORS.get(p["device"], "C2")
        ax.scatter([p["intensity"]], [p["gflops"]], color=color, zorder=3, s=25)
        ax.annotate(f"{p['label']} ({p['bound'] or '?'})", (p["intensity"], p["gflops"]), fontsize=6,
                    xytext=(4, 3), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per byte moved, unfused count)",
           ylabel="achieved GFLOP/s (FLOPs per step / median step)", title="roofline: every cell under its device's ceilings")
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)
