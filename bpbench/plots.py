"""PNG plots of a comparison (optional extra `plot`: matplotlib). Reads result dicts only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LINESTYLES = ("-", "--", ":", "-.")
PLOT_HINT = "plots need matplotlib: pip install 'bpbench[plot]' (the comparison itself is complete)"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_all(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write every plot the comparison has data for; returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_exp: dict[str, list[dict]] = {}
    for c in doc["cells"]:
        if c["study"] == "matrix" and c["runs"]:
            by_exp.setdefault(c["experiment"], []).append(c)
    for exp, cells in by_exp.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, c in enumerate(cells):
            h = c["runs"][-1]["history"]
            # Variants that agree draw on top of each other: vary the dash so each stays visible.
            ax.plot([e["epoch"] for e in h], [e["loss"] for e in h], ls=LINESTYLES[i % len(LINESTYLES)],
                    label=f"{c['variant']} {c['device']} {c['label']}")
        ax.set(xlabel="epoch", ylabel="training loss", title=f"{exp}: loss per variant", yscale="log")
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / f"loss_{exp}.png"))
    w = doc.get("width")
    if w:
        fig, ax = plt.subplots(figsize=(6, 4))
        for dev in ("cpu", "cuda"):
            pts = [(r["width"], r[f"{dev}_step_s"]) for r in w["rows"] if r.get(f"{dev}_step_s")]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=dev.upper())
        if w.get("crossover_width"):
            ax.axvline(w["crossover_width"], ls="--", color="gray", label=f"crossover H={w['crossover_width']:,}")
        ax.set(xscale="log", yscale="log", xlabel="hidden width H", ylabel="seconds per Adam step",
               title="1-H-1 MLP: CPU vs GPU")
        ax.legend()
        written.append(_save(fig, out_dir / "width.png"))
    g = doc.get("gd_sgd")
    if g:
        fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
        for r in g["rows"]:
            lab = f"batch {r['batch_size']} ({r['device']})"
            for col, x in enumerate(("updates", "time_s")):
                pts = [(p[x], p["loss"], p["test_accuracy"]) for p in r["curve"] if p.get(x) is not None]
                if pts:
                    xs, loss, acc = zip(*pts)
                    axes[0][col].plot(xs, loss, label=lab)
                    axes[1][col].plot(xs, acc, label=lab)
        axes[0][0].set(ylabel="training loss", yscale="log", title="GD vs SGD at equal updates")
        axes[0][1].set(yscale="log", title="... against wall time")
        axes[1][0].set(xlabel="updates", ylabel="held-out accuracy")
        axes[1][1].set(xlabel="training seconds")
        for ax in axes[1]:
            ax.axhline(g["target_accuracy"], ls=":", color="gray")
        axes[0][0].legend(fontsize=7)
        written.append(_save(fig, out_dir / "gd_sgd.png"))
    if doc.get("scaling"):
        from bpbench.studies import scaling
        written.append(scaling.plot(doc["scaling"], out_dir, _save))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)   # atomic, like every other output file
    return path
