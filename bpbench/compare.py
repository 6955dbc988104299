"""bpbench compare: the experiment matrix, the width study and GD vs SGD, run cell by cell.

Isolation: every cell runs in a fresh `python -m bpbench run ... --json` process. Imports, the
first optimizer construction (which imports torch._dynamo) and the CUDA context are then paid by
every cell alike, inside its own setup_s / device_init_s, instead of being charged to whichever
cell happens to run first; memory peaks cannot leak from one cell into the next; a cell that
crashes or runs out of memory takes only itself down. Cells run one at a time, so they never
compete for cores.

After every finished cell, results.json and results.csv are rewritten atomically, so an
interrupted comparison keeps every finished cell.
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bpbench import config as C
from bpbench import experiments, results
from bpbench import variants as V
from bpbench.errors import BadInput
from bpbench.studies import scaling

STUDIES = ("width", "gd-sgd", "scaling")
ISOLATION = ("fresh process per cell (python -m bpbench run --json): one-time costs (imports, "
             "first optimizer construction, CUDA context) are paid by every cell alike and reported "
             "in its setup_s / device_init_s")
CSV_COLUMNS = ["key", "study", "experiment", "variant", "device", "label", "status", "repeats",
               "setup_s", "step_s_median", "step_s_iqr", "train_s", "samples_per_s", "rss_peak_mib",
               "cuda_peak_allocated_mib", "final_loss", "accuracy", "steps", "speed_vs_manual",
               "cuda_speedup", "baseline_change", "baseline_significant", "error"]


# What every cell record of a comparison holds (see run_cell); `report` relies on these.
CELL_KEYS = ("key", "study", "experiment", "variant", "device", "label", "overrides", "status", "error", "runs")


def cell_key(study: str, experiment: str, variant: str, device: str, label: str) -> str:
    """e.g. "matrix:mnist01/manual/cpu/batch=2048": unique within a comparison, stable across runs."""
    return f"{study}:{experiment}/{variant}/{device}" + (f"/{label}" if label else "")


@dataclass(frozen=True)
class Cell:
    study: str                  # "matrix" | "width" | "gd-sgd"
    experiment: str
    variant: str
    device: str
    label: str                  # what tells runs of one experiment apart: "batch=full", "H=500"
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return cell_key(self.study, self.experiment, self.variant, self.device, self.label)

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "bpbench", "run", self.experiment, "--variant", self.variant,
                "--device", self.device, "--json"]
        for k, v in self.overrides:
            args += ["--set", f"{k}={v}"]
        return args


# ---------------------------------------------------------------- planning

def default_preset(targets: list[str]) -> str:
    """`quick` for the matrix (a smoke run); `full` when only studies are named, so that
    `bpbench compare width` runs the study as seed 004 set it up (H = 500 ... 200,000, 1000 steps)."""
    return "full" if targets and all(t in STUDIES for t in targets) else "quick"


def load_preset(name: str) -> dict[str, Any]:
    presets = C.builtin("compare")
    if name not in presets:
        raise BadInput(f"unknown preset {name!r} (choose from: {', '.join(presets)})")
    return presets[name]


def resolve_devices(asked: list[str], cuda_ok: bool) -> tuple[list[str], list[str], list[str]]:
    """(devices to plan, devices that cannot run here, notes)."""
    for d in asked:
        if d not in ("cpu", "cuda", "all"):
            raise BadInput(f"unknown device {d!r} (choose from: cpu, cuda, all)")
    if not asked:
        devices = ["cpu", "cuda"] if cuda_ok else ["cpu"]
        notes = [] if cuda_ok else ["CUDA is not available here: CPU cells only (--device all lists CUDA cells as unavailable)"]
        return devices, [], notes
    devices = ["cpu", "cuda"] if "all" in asked else list(dict.fromkeys(asked))
    if devices == ["cuda"] and not cuda_ok:
        raise BadInput("--device cuda was asked for, but CUDA is not available on this machine")
    missing = [] if cuda_ok else [d for d in devices if d == "cuda"]
    notes = [f"CUDA is not available here: its cells are marked unavailable"] if missing else []
    return devices, missing, notes


def _label(run: dict[str, Any]) -> str:
    parts = []
    if "data" in run:
        parts.append(f"data={run['data']}")
    if "batch_size" in run:
        parts.append(f"batch={run['batch_size']}")
    if "width" in run:
        parts.append(f"H={run['width']}")
    return ", ".join(parts)


def _runs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    if "runs" in entry:
        base = {k: v for k, v in entry.items() if k != "runs"}
        return [{**base, **r} for r in entry["runs"]]
    return [dict(entry)]


def plan(targets: list[str], devices: list[str], variants: list[str], preset: dict[str, Any],
         widths: list[int] | None = None, steps: int | None = None,
         batch_sizes: list[Any] | None = None, updates: int | None = None,
         extra: dict[str, Any] | None = None, nprocs: list[int] | None = None) -> list[Cell]:
    """The cells to run, in order. `extra` (from --set) overrides config keys in every cell whose
    experiment takes them; a key no planned experiment takes is bad input."""
    cells = _plan(targets, devices, variants, preset, widths, steps, batch_sizes, updates, nprocs)
    if extra and "scaling" in targets:
        scaling.check_overrides(extra)
    if extra:
        names = {c.experiment for c in cells}
        for key in extra:
            if not any(key in experiments.REGISTRY[n].keys for n in names):
                raise BadInput(f"--set {key}: no experiment in this comparison takes {key!r}")
        # Each cell takes the overrides its experiment knows (e.g. init only reaches linreg).
        cells = [Cell(c.study, c.experiment, c.variant, c.device, c.label,
                      tuple(sorted({**dict(c.overrides),
                                    **{k: v for k, v in extra.items()
                                       if k in experiments.REGISTRY[c.experiment].keys}}.items())))
                 for c in cells]
    return cells


def _plan(targets, devices, variants, preset, widths, steps, batch_sizes, updates, nprocs=None) -> list[Cell]:
    names = list(dict.fromkeys(targets or preset.get("experiments", [])))   # in order, once each
    for n in names:
        if n not in STUDIES:
            experiments.get(n)
    known = {v for n in names for v in experiments.REGISTRY["mnist01" if n in ("gd-sgd", "scaling") else n].variants}
    for v in variants:
        if v not in known:
            raise BadInput(f"unknown variant {v!r} for {', '.join(names)} (choose from: {', '.join(sorted(known))})")
    cells: list[Cell] = []
    for name in names:
        if name == "gd-sgd":
            cells += _plan_gd_sgd(devices, variants, preset.get("gd-sgd", {}), batch_sizes, updates)
            continue
        if name == "scaling":
            cells += scaling.plan(devices, variants, preset.get("scaling", {}), nprocs, updates)
            continue
        info = experiments.get(name)
        entry = dict(preset.get(name, {}))
        if name == "width":   # one cell per width; epochs are Adam steps (one full-batch step each)
            ws = widths or entry.get("widths", [500])
            n_steps = steps or entry.get("epochs", 1000)
            base = {k: v for k, v in entry.items() if k not in ("widths", "epochs")}
            runs = [{**base, "width": w, "epochs": n_steps} for w in ws]
            study = "width"
        else:
            runs = _runs(entry)
            study = "matrix"
        # Unasked, a comparison runs the reference variants; fast ones (compiled, graphed) on request.
        chosen = [v for v in info.variants if v in variants] if variants else \
            [v for v in info.variants if V.REGISTRY[v].reference is None]
        for run in runs:
            for variant in chosen:
                for device in devices:
                    cells.append(Cell(study, name, variant, device, _label(run), tuple(sorted(run.items()))))
    if not cells:
        raise BadInput("nothing to compare: no experiment has the requested variants")
    return cells


def _plan_gd_sgd(devices, variants, entry, batch_sizes, updates) -> list[Cell]:
    sizes = batch_sizes or entry.get("batch_sizes", ["full", 256])
    n_updates = updates or entry.get("updates", 700)
    # About 20 evaluation points per GD curve: the preset's interval fits the preset's updates only.
    every = entry.get("eval_every_updates") if updates is None else None
    every = every or max(1, n_updates // 20)
    # The study compares batchings, not variants: one variant (the first asked for, else autograd).
    variant = next((v for v in variants if v in experiments.REGISTRY["mnist01"].variants), "autograd")
    cells = []
    for bs in sizes:
        run = {"batch_size": bs, "updates": n_updates, "warmup_steps": 0,
               # GD makes one update per epoch; mini-batch runs are evaluated after every epoch.
               "eval_every": every if bs == "full" else 1}
        for device in devices:
            cells.append(Cell("gd-sgd", "mnist01", variant, device, f"batch={bs}", tuple(sorted(run.items()))))
    return cells


# ---------------------------------------------------------------- running

def run_cell(cell: Cell, repeat: int, unavailable: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"key": cell.key, "study": cell.study, "experiment": cell.experiment,
                           "variant": cell.variant, "device": cell.device, "label": cell.label,
                           "overrides": dict(cell.overrides), "status": "ok", "error": None, "runs": []}
    if unavailable:
        rec.update(status="unavailable", error=f"{cell.device} is not available on this machine")
        return rec
    for _ in range(repeat):
        proc = subprocess.Popen(cell.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate()
        except KeyboardInterrupt:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        last = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        if proc.returncode in (0, 3) and out.strip():
            rec["runs"].append(json.loads(out))
        if proc.returncode != 0:
            rec["status"] = "diverged" if proc.returncode == 3 else "failed"
            rec["error"] = last.removeprefix("bpbench: error: ") if proc.returncode > 0 else \
                f"killed by signal {-proc.returncode} (out of memory?)"
            break
    rec["summary"] = summarize(rec["runs"])
    return rec


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats of each figure; `noise` is the relative spread of the step time."""
    if not runs:
        return {}

    def med(get: Callable[[dict], Any]):
        vals = [v for v in (get(r) for r in runs) if v is not None]
        return statistics.median(vals) if vals else None

    step = med(lambda r: r["timing"]["step_s_median"])
    iqr = med(lambda r: r["timing"]["step_s_iqr"])
    steps_all = [r["timing"]["step_s_median"] for r in runs if r["timing"]["step_s_median"]]
    spread = (max(steps_all) - min(steps_all)) / step if step and len(steps_all) > 1 else 0.0
    metrics = runs[-1]["final"].get("metrics") or {}
    acc = metrics.get("test_accuracy", metrics.get("accuracy"))
    return {
        "repeats": len(runs),
        "setup_s": med(lambda r: r["timing"]["setup_s"]),
        "step_s_median": step,
        "step_s_iqr": iqr,
        "noise": max(spread, (iqr / step) if step and iqr is not None else 0.0),
        "train_s": med(lambda r: r["timing"]["train_s"]),
        "samples_per_s": med(lambda r: r["timing"]["samples_per_s"]),
        "rss_peak_mib": med(lambda r: r["memory"]["rss_peak_mib"]),
        "cuda_peak_allocated_mib": med(lambda r: r["memory"]["cuda_peak_allocated_mib"]),
        "final_loss": runs[-1]["final"]["loss"],
        "accuracy": acc,
        "steps": runs[-1]["timing"]["steps"],
    }


def derive(cells: list[dict[str, Any]], baseline: dict[str, Any] | None = None) -> None:
    """Ratio columns: speed vs the manual variant, CUDA speedup over CPU, change vs a baseline."""
    ok = {c["key"]: c for c in cells if c["status"] == "ok" and c.get("summary", {}).get("step_s_median")}
    base = {c["key"]: c for c in (baseline or {}).get("cells", []) if c.get("summary", {}).get("step_s_median")}
    for c in cells:
        s = c.setdefault("summary", {})
        step = s.get("step_s_median")
        if not step or c["status"] != "ok":
            continue
        manual = ok.get(cell_key(c["study"], c["experiment"], "manual", c["device"], c["label"]))
        s["speed_vs_manual"] = manual["summary"]["step_s_median"] / step if manual else None
        cpu = ok.get(cell_key(c["study"], c["experiment"], c["variant"], "cpu", c["label"]))
        s["cuda_speedup"] = cpu["summary"]["step_s_median"] / step if c["device"] == "cuda" and cpu else None
        b = base.get(c["key"])
        if b:
            old = b["summary"]["step_s_median"]
            change = step / old - 1.0
            noise = s.get("noise", 0.0) + b["summary"].get("noise", 0.0)
            s.update(baseline_step_s=old, baseline_change=change,
                     baseline_significant=abs(change) > max(noise, 0.02))


def width_table(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per width: step time per device, CUDA speedup, and the crossover width where the GPU wins."""
    rows: dict[int, dict[str, Any]] = {}
    for c in cells:
        if c["study"] != "width":
            continue
        w = c["overrides"]["width"]
        rows.setdefault(w, {"width": w})[f"{c['device']}_step_s"] = c.get("summary", {}).get("step_s_median")
    if not rows:
        return None
    out = []
    crossover = None
    for w in sorted(rows):
        r = rows[w]
        cpu, gpu = r.get("cpu_step_s"), r.get("cuda_step_s")
        r["cuda_speedup"] = cpu / gpu if cpu and gpu else None
        if crossover is None and r["cuda_speedup"] and r["cuda_speedup"] > 1:
            crossover = w
        out.append(r)
    return {"rows": out, "crossover_width": crossover,
            "note": "crossover: the smallest width at which CUDA's step is faster than the CPU's"}


def gd_sgd_table(cells: list[dict[str, Any]], target: float = 0.99) -> dict[str, Any] | None:
    rows = []
    for c in cells:
        if c["study"] != "gd-sgd" or not c["runs"]:
            continue
        run = c["runs"][-1]
        hist = [h for h in run["history"] if "test_accuracy" in h]
        hit = next((h for h in hist if h["test_accuracy"] >= target), None)
        bs, n_train = c["overrides"]["batch_size"], run["data"].get("n_train")
        rows.append({"device": c["device"], "batch_size": bs, "n_train": n_train,
                     "covers_train_set": bs == "full" or (n_train is not None and int(bs) >= n_train),
                     "updates": run["timing"]["steps"], "epochs": run["history"][-1]["epoch"],
                     "final_test_accuracy": hist[-1]["test_accuracy"] if hist else None,
                     "final_loss": run["final"]["loss"], "train_s": run["timing"]["train_s"],
                     "updates_to_target": hit["updates"] if hit else None,
                     "seconds_to_target": hit["time_s"] if hit else None,
                     "curve": [{k: h.get(k) for k in ("updates", "time_s", "test_accuracy", "loss")} for h in hist]})
    return {"target_accuracy": target, "rows": rows} if rows else None


class Comparison:
    """The comparison document, rewritten atomically to DIR after every cell."""

    def __init__(self, preset: str, cells: list[Cell], notes: list[str], output_dir: Path | None,
                 baseline: dict[str, Any] | None, env: dict[str, Any]):
        self.output_dir = output_dir
        self.baseline = baseline
        self.doc: dict[str, Any] = {
            "schema": results.SCHEMA_VERSION, "kind": "comparison", "preset": preset,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": sys.argv, "isolation": ISOLATION, "notes": notes, "env": env,
            "planned": [c.key for c in cells], "interrupted": False, "cells": [],
        }

    def add(self, record: dict[str, Any]) -> None:
        self.doc["cells"].append(record)
        self.refresh()
        self.save()

    def refresh(self) -> None:
        derive(self.doc["cells"], self.baseline)
        self.doc["width"] = width_table(self.doc["cells"])
        self.doc["gd_sgd"] = gd_sgd_table(self.doc["cells"])
        self.doc["scaling"] = scaling.table(self.doc["cells"])

    def save(self) -> None:
        if self.output_dir is None:
            return
        results.write_json(self.output_dir / "results.json", self.doc)
        results.write_csv(self.output_dir / "results.csv", csv_rows(self.doc), CSV_COLUMNS)


def csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**{k: c.get(k) for k in ("key", "study", "experiment", "variant", "device", "label",
                                      "status", "error")}, **c.get("summary", {})} for c in doc["cells"]]


def load_comparison(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"comparison file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "comparison" or not isinstance(doc.get("cells"), list):
        raise BadInput(f"{path} is not a bpbench comparison (results.json from `bpbench compare`)")
    if doc.get("schema") != results.SCHEMA_VERSION:
        raise BadInput(f"{path} has schema {doc.get('schema')!r}; this bpbench reads schema {results.SCHEMA_VERSION}")
    missing = [k for k in ("preset", "notes", "planned") if k not in doc]
    for i, cell in enumerate(doc["cells"]):
        if not isinstance(cell, dict):
            missing.append(f"cells[{i}]")
            break
        missing += [f"cells[{i}].{k}" for k in CELL_KEYS if k not in cell]
        runs = cell.get("runs", [])
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            missing.append(f"cells[{i}].runs (a list of run results)")
            continue
        for j, run in enumerate(runs):
            missing += [f"cells[{i}].runs[{j}].{k}" for k in results.missing_keys(run)]
    if missing:
        raise BadInput(f"{path} is not a complete bpbench comparison: missing {', '.join(missing[:3])}"
                       + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    return doc


def execute(cmp: Comparison, cells: list[Cell], unavailable: set[str], repeat: int,
            on_cell: Callable[[int, int, Cell, dict | None, float], None] | None = None) -> None:
    """Run every cell in order; KeyboardInterrupt marks the document interrupted and re-raises."""
    try:
        for i, cell in enumerate(cells, 1):
            if on_cell:
                on_cell(i, len(cells), cell, None, 0.0)
            t0 = time.perf_counter()
            rec = run_cell(cell, repeat, cell.device in unavailable)
            cmp.add(rec)
            if on_cell:
                on_cell(i, len(cells), cell, rec, time.perf_counter() - t0)
    except KeyboardInterrupt:
        cmp.doc["interrupted"] = True
        cmp.refresh()
        cmp.save()
        raise
