"""GD vs SGD, seed 004 section F: mnist01 by full-batch gradient descent and by mini-batch SGD at
several batch sizes, all for the same number of updates.

Every row is evaluated on one common grid of update counts (`eval_every_updates`, mid-epoch where
a batch size needs it), so "updates to reach 0.99" depends on the training, never on how often a
row happened to be evaluated. The curves are the loss and accuracy on whole sets (the training set
and the held-out set), the same quantities for every batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bpbench import experiments
from bpbench.results.cells import Cell, make_cell

TARGET = 0.99     # held-out accuracy whose first crossing the table reports
POINTS = 20       # grid points per curve when --updates overrides the preset's interval


def plan(devices: list[str], variants: list[str], entry: dict[str, Any], opts: dict[str, Any]) -> list[Cell]:
    sizes = opts.get("batch_sizes") or entry.get("batch_sizes", ["full", 256])
    n_updates = opts.get("updates") or entry.get("updates", 700)
    # The preset's interval fits the preset's updates only; other counts get ~POINTS points.
    every = entry.get("eval_every_updates") if opts.get("updates") is None else None
    every = every or max(1, n_updates // POINTS)
    # The study compares batchings, not variants: one variant (the first asked for, else autograd).
    variant = next((v for v in variants if v in experiments.REGISTRY["mnist01"].variants), "autograd")
    return [make_cell("gd-sgd", "mnist01", variant, d,
                      {"batch_size": bs, "updates": n_updates, "warmup_steps": 0, "eval_every_updates": every})
            for bs in sizes for d in devices]


def _points(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid's evaluations (runs saved before the grid existed: their epoch-end evaluations)."""
    return run.get("evaluations") or [h for h in run["history"] if "test_accuracy" in h]


def derive(cells: list[dict[str, Any]], target: float = TARGET) -> dict[str, Any] | None:
    rows = []
    grid = set()
    for c in cells:
        if not c.get("runs"):
            continue
        run = c["runs"][-1]
        pts = [p for p in _points(run) if p.get("test_accuracy") is not None]
        hit = next((p for p in pts if p["test_accuracy"] >= target), None)
        bs, n_train = c["overrides"]["batch_size"], run["data"].get("n_train")
        metrics = run["final"].get("metrics") or {}
        grid.add(c["overrides"].get("eval_every_updates"))
        rows.append({"device": c["device"], "batch_size": bs, "n_train": n_train,
                     "covers_train_set": bs == "full" or (n_train is not None and int(bs) >= n_train),
                     "updates": run["timing"]["steps"], "epochs": run["history"][-1]["epoch"] if run["history"] else 0,
                     "final_test_accuracy": metrics.get("test_accuracy"),
                     "final_loss": metrics.get("train_loss", run["final"]["loss"]),
                     "train_s": run["timing"]["train_s"],
                     "updates_to_target": hit["updates"] if hit else None,
                     "seconds_to_target": hit.get("time_s") if hit else None,
                     "curve": [{"updates": p["updates"], "time_s": p.get("time_s"), "test_accuracy": p["test_accuracy"],
                                "loss": p.get("train_loss", p.get("loss"))} for p in pts]})
    if not rows:
        return None
    return {"target_accuracy": target, "grid_updates": sorted(g for g in grid if g), "rows": rows}


def render(g: dict[str, Any]) -> list:
    from bpbench.report.format import Tab, fmt_acc, fmt_loss, fmt_s

    grid = ", ".join(str(x) for x in g.get("grid_updates") or []) or "epoch ends"
    title = f"[bold]GD vs SGD[/] at equal updates (seed 004 F), all evaluated every {grid} updates"
    tab = Tab("",
              ["device", "batch", "updates", "epochs", "train\nloss", "held-out\nacc.", "train\ntime",
               f"updates to\n{g['target_accuracy']}", f"time to\n{g['target_accuracy']}"], text=2)
    # mini-batch sizes that hold the whole training set: gradient descent under another name
    whole = [r for r in g["rows"] if r.get("covers_train_set") and r["batch_size"] != "full"]
    for r in g["rows"]:
        tab.rows.append([r["device"], str(r["batch_size"]) + (" (= full)" if r in whole else ""), f"{r['updates']:,}",
                         f"{r['epochs']:,}", fmt_loss(r["final_loss"]), fmt_acc(r["final_test_accuracy"]),
                         fmt_s(r["train_s"]), "-" if r["updates_to_target"] is None else f"{r['updates_to_target']:,}",
                         fmt_s(r["seconds_to_target"])])
    if len({r["device"] for r in g["rows"]}) == 1:    # one device: name it once, in the title
        title += f" on {g['rows'][0]['device']}"
        tab = Tab("", tab.columns[1:], [r[1:] for r in tab.rows], text=1)
    out: list = [title, tab]
    if whole:
        out.append(f"(= full): a batch of {whole[0]['batch_size']} holds all {whole[0]['n_train']:,} training "
                   "images, so its updates are gradient descent too; seed 004's sizes assume its "
                   "12,665-image training split (--data-dir)")
    return out


def plot(g: dict[str, Any], out_dir: Path) -> list[Path]:
    from bpbench.report import plots
    plt = plots.pyplot()

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    target = g["target_accuracy"]
    for i, r in enumerate(g["rows"]):
        lab = f"batch {r['batch_size']} ({r['device']})"
        color = f"C{i % 10}"
        for col, x in enumerate(("updates", "time_s")):
            pts = [(p[x], p["loss"], p["test_accuracy"]) for p in r["curve"] if p.get(x) is not None]
            if not pts:
                continue
            xs, loss, acc = zip(*pts)
            axes[0][col].plot(xs, loss, color=color, label=lab)
            axes[1][col].plot(xs, acc, color=color, label=lab)
            hit = r["updates_to_target"] if x == "updates" else r["seconds_to_target"]
            if hit is not None:   # where this row first reaches the target
                axes[1][col].plot([hit], [next(a for u, _, a in pts if u == hit)], marker="o", color=color)
                axes[1][col].axvline(hit, ls=":", lw=0.8, color=color)
    plots.loss_scale(axes[0][0], [p["loss"] for r in g["rows"] for p in r["curve"]])
    axes[0][0].set(ylabel="training-set loss", title="GD vs SGD at equal updates")
    axes[0][1].set(title="... against wall time")
    axes[1][0].set(xlabel="updates", ylabel="held-out accuracy")
    axes[1][1].set(xlabel="training seconds (evaluation excluded)")
    for ax in axes[1]:
        ax.axhline(target, ls="--", color="gray", lw=0.8, label=f"target {target}")
    axes[1][0].legend(fontsize=7)
    return [plots.save(fig, out_dir / "gd_sgd.png")]
