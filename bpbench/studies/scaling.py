"""The scaling study, `bpbench compare scaling`: data-parallel training at N = 1, 2, 4, ... ranks.

Every cell is one `bpbench run EXPERIMENT --variant ddp --set nproc=N` (mnist01 unless the preset
says otherwise), in a fresh process like every compare cell, one thread per rank on CPU; N goes
up to the cores (CPU) or GPUs (CUDA) this machine has.

- strong scaling: the global batch is fixed (default: the whole training set, seed 004's gradient
  descent) and N ranks share it. Ideal: the step time falls as 1/N.
  speedup = T(1) / T(N), efficiency = speedup / N.
- weak scaling: each rank's batch is fixed (default 128 samples), so the global batch is N x 128.
  Ideal: the step time stays T(1). efficiency = T(1) / T(N), speedup = samples/s(N) / samples/s(1).

T is the step time of the slowest rank (the median of the steady steps); samples/s is the global
batch over T, every rank's samples together. Torch-free: it plans cells and reads finished ones.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bpbench import experiments
from bpbench import variants as V
from bpbench.errors import BadInput
from bpbench.processes import usable_cores
from bpbench.results.contention import NOT_COMPARABLE

STUDY = "scaling"
MODES = ("strong", "weak")
SET_PER_CELL = ("nproc", "batch_size")   # what the study itself varies


def default_nprocs(device: str) -> list[int]:
    """1, 2, 4, ... up to the cores (CPU) or GPUs (CUDA), and that count itself."""
    if device == "cuda":
        import torch
        most = torch.cuda.device_count()
    else:
        most = usable_cores()
    out = [1]
    while out[-1] * 2 <= most:
        out.append(out[-1] * 2)
    return out if out[-1] == most else out + [most]


def plan(devices: list[str], variants: list[str], entry: dict[str, Any], opts: dict[str, Any]) -> list:
    """The cells: per device, strong then weak scaling, N ascending. opts: nprocs, updates."""
    from bpbench.results.cells import make_cell

    name = entry.get("experiment", "mnist01")
    info = experiments.get(name)
    distributed = [v for v in info.variants if V.REGISTRY[v].distributed]
    if variants and not any(v in distributed for v in variants):
        raise BadInput(f"the scaling study trains with a distributed variant ({', '.join(distributed)}); "
                       f"got {', '.join(variants)}")
    variant = next((v for v in variants if v in distributed), distributed[0])
    steps_key = "updates" if "updates" in info.keys else "epochs"
    base = {steps_key: opts.get("updates") or entry.get("updates", 300), "warmup_steps": entry.get("warmup_steps", 10)}
    strong, weak = entry.get("strong_batch", "full"), int(entry.get("weak_batch", 128))
    cells = []
    for device in devices:
        for mode in MODES:
            for n in opts.get("nprocs") or default_nprocs(device):
                run = {**base, "nproc": n, "batch_size": strong if mode == "strong" else weak * n}
                cells.append(make_cell(STUDY, name, variant, device, run, tag=f"{mode} N={n}"))
    return cells


def _median(runs: list[dict], key: str) -> float | None:
    vals = [r["distributed"][key] for r in runs if (r.get("distributed") or {}).get(key) is not None]
    return statistics.median(vals) if vals else None


def derive(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Rows per device and mode with speedup and efficiency against N = 1 (None: no study cells)."""
    rows = []
    for c in cells:
        if c["study"] != STUDY or c["status"] != "ok" or not c["runs"] or "nproc" not in c["overrides"]:
            continue   # (a cell without nproc is a parity reference: one process, same batches)
        s, run = c.get("summary", {}), c["runs"][-1]
        d = run.get("distributed") or {}
        step, batch = s.get("step_s_median"), d.get("global_batch")
        rows.append({"device": c["device"], "mode": c["label"].split()[0], "nproc": c["overrides"]["nproc"],
                     "variant": c["variant"], "global_batch": batch, "per_rank_batch": d.get("per_rank_batch"),
                     # at the median step, like every figure here (the mean would let a shared
                     # machine's slowest steps decide)
                     "step_s": step, "samples_per_s": batch / step if batch and step else None,
                     "comm_s": _median(c["runs"], "comm_s_median"),
                     "comm_share": _median(c["runs"], "comm_share"),
                     "cpu_count": run["env"].get("cpu_count"), "threads": run["env"].get("threads"),
                     "contended": bool(s.get("contended"))})   # measured on a busy machine: no speedup
    if not rows:
        return None
    rows.sort(key=lambda r: (r["device"], MODES.index(r["mode"]), r["nproc"]))
    for r in rows:
        one = next((o for o in rows if (o["device"], o["mode"], o["nproc"]) == (r["device"], r["mode"], 1)), None)
        r["speedup"] = r["efficiency"] = None
        if not (one and one["step_s"] and r["step_s"]) or r["contended"] or one["contended"]:
            continue
        if r["mode"] == "strong":
            r["speedup"] = one["step_s"] / r["step_s"]
            r["efficiency"] = r["speedup"] / r["nproc"]
        else:
            r["efficiency"] = one["step_s"] / r["step_s"]
            r["speedup"] = r["efficiency"] * r["nproc"]   # N times the samples in 1/efficiency of the time
    return {"rows": rows,
            "note": "strong: fixed global batch, efficiency = T(1) / (N T(N)); weak: fixed per-rank batch, "
                    "efficiency = T(1) / T(N); T: the slowest rank's median step; samples/s: global batch / T"}


def render(t: dict[str, Any]) -> list:
    from bpbench.report.format import Tab, fmt_s

    rows = t["rows"]
    devices = list(dict.fromkeys(r["device"] for r in rows))
    one = len(devices) == 1     # one device: named once, in the heading, not on every row
    # two-line headers and spares keep it within 100 columns: per rank is global batch / N, and
    # samples/s is global batch / step, so a narrow terminal can do without them first
    tab = Tab("", ([] if one else ["device"]) + ["scaling", "N", "global\nbatch", "per\nrank", "step", "samples/s",
                                                  "comm\n(share)", "speedup", "efficiency"],
              text=1 if one else 2, spare=["per\nrank", "samples/s"])
    last = None
    for r in rows:
        if (r["device"], r["mode"]) != last:
            tab.sections.append(len(tab.rows))
            last = (r["device"], r["mode"])
        comm = "-" if r["comm_s"] is None else f"{fmt_s(r['comm_s'])} ({r['comm_share']:.0%})"
        tab.rows.append(([] if one else [r["device"]]) + [
            r["mode"], str(r["nproc"]), f"{r['global_batch']:,}" if isinstance(r["global_batch"], int) else str(r["global_batch"]),
            f"{r['per_rank_batch']:,}" if isinstance(r["per_rank_batch"], int) else str(r["per_rank_batch"]),
            fmt_s(r["step_s"]), "-" if r["samples_per_s"] is None else f"{r['samples_per_s']:,.0f}",
            comm, "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
            "-" if r["efficiency"] is None else f"{r['efficiency']:.0%}"])
    out = [f"[bold]scaling study[/]: {rows[0]['variant']}, data-parallel ranks" + (f" on {devices[0]}" if one else ""),
           tab, f"[dim]{t['note']}[/]"]
    busy = [f"{r['mode']} N = {r['nproc']}" for r in rows if r.get("contended")]
    if busy:
        out.append(f"[yellow]{', '.join(busy)}: {NOT_COMPARABLE} (no speedup drawn from it)[/]")
    cpu = [r for r in rows if r["device"] == "cpu"]
    if cpu and cpu[0]["cpu_count"]:
        most = max(r["nproc"] for r in cpu)
        out.append(f"[dim]cpu: {cpu[0]['threads']} thread(s) per rank on a {cpu[0]['cpu_count']}-core machine; "
                   f"at N = {most} the ranks {'fill' if most >= cpu[0]['cpu_count'] else 'use part of'} it, "
                   "and anything else running competes with them[/]")
    return out


def plot(t: dict[str, Any], out_dir: Path) -> list[Path]:
    """scaling.png: samples/s and efficiency against N, with the ideal lines."""
    from bpbench.report import plots
    plt = plots.pyplot()

    fig, (thr, eff) = plt.subplots(1, 2, figsize=(10, 4))
    groups: dict[tuple, list[dict]] = {}
    for r in t["rows"]:
        groups.setdefault((r["device"], r["mode"]), []).append(r)
    for (device, mode), rows in groups.items():
        ns = [r["nproc"] for r in rows]
        line, = thr.plot(ns, [r["samples_per_s"] for r in rows], marker="o", label=f"{mode} ({device})")
        one = rows[0]
        if one["nproc"] == 1 and one["samples_per_s"]:   # ideal, either way: N times the samples of N = 1
            thr.plot(ns, [one["samples_per_s"] * n for n in ns], ls=":", color=line.get_color())
        eff.plot(ns, [r["efficiency"] for r in rows], marker="o", color=line.get_color(), label=f"{mode} ({device})")
    eff.axhline(1.0, ls=":", color="gray", label="ideal")
    thr.set(xlabel="ranks N", ylabel="samples/s (all ranks)", title="throughput (dotted: ideal)")
    eff.set(xlabel="ranks N", ylabel="scaling efficiency", ylim=(0, 1.2), title="efficiency")
    for ax in (thr, eff):
        ax.set_xticks(sorted({r["nproc"] for r in t["rows"]}))
        ax.legend(fontsize=8)
    return [plots.save(fig, out_dir / "scaling.png")]
