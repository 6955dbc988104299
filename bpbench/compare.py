"""bpbench compare: the experiment matrix and the studies, run cell by cell, and what is derived.

Isolation: every cell runs in a fresh `python -m bpbench run ... --json` process. Imports, the
first optimizer construction (which imports torch._dynamo) and the CUDA context are then paid by
every cell alike, inside its own setup_s / device_init_s, instead of being charged to whichever
cell happens to run first; memory peaks cannot leak from one cell into the next; a cell that
crashes or runs out of memory takes only itself down. Cells run one at a time, so they never
compete for cores. Each cell runs in its own process group, so Ctrl-C or SIGTERM stops the whole
cell (its memory monitor included): no child outlives the comparison.

After every finished cell, results.json and results.csv are rewritten atomically, so an
interrupted comparison keeps every finished cell.

Trust: a cell is named by its full overrides (`--set` included); a baseline cell matches on the
run's full resolved config, never on a label; a change is called only beyond the noise (noise.py)
and a threshold; a fast variant's speed counts only when it matches its reference (parity.py).
Studies live in bpbench.studies; nothing here names one.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bpbench import config as C
from bpbench import experiments, figures, noise, parity, processes, results, studies, variants as V
from bpbench.errors import BadInput

ISOLATION = ("fresh process per cell (python -m bpbench run --json): one-time costs (imports, "
             "first optimizer construction, CUDA context) are paid by every cell alike and reported "
             "in its setup_s / device_init_s")
CSV_COLUMNS = ["key", "study", "experiment", "variant", "device", "label", "status", "repeats",
               "setup_s", "step_s_median", "step_s_iqr", "noise", "train_s", "samples_per_s", "rss_peak_mib",
               "cuda_peak_allocated_mib", "final_loss", "accuracy", "steps", "speed_vs_manual",
               "cuda_speedup", "compile_s", "break_even_steps", "baseline_change", "baseline_fast_change",
               "baseline_significant", "baseline_regression", "error"] + figures.CSV_COLUMNS
# Statuses that make `compare` exit non-zero (unless --keep-going).
FAILED = ("failed", "diverged", "mismatch")
# The overrides that tell runs of one experiment apart, in label order, with their short names.
LABEL_KEYS = {"data": "data", "batch_size": "batch", "width": "H"}
# compare chooses variant and device per cell: a --set of either is bad input.
CELL_CHOSEN = {"variant": "--variant", "device": "--device"}


def cell_key(study: str, experiment: str, variant: str, device: str, label: str) -> str:
    """e.g. "matrix:mnist01/manual/cpu/batch=2048": unique within a comparison, stable across runs."""
    return f"{study}:{experiment}/{variant}/{device}" + (f"/{label}" if label else "")


@dataclass(frozen=True)
class Cell:
    study: str                  # "matrix" or a study's name
    experiment: str
    variant: str
    device: str
    overrides: tuple[tuple[str, Any], ...] = ()
    shown: tuple[str, ...] = ()  # further override keys the label names (those given by --set)
    tag: str = ""                # a study's own name for the run, first in the label ("strong N=2")
    reference: str | None = field(default=None, compare=False)   # key of its parity reference cell

    @property
    def label(self) -> str:
        """What tells this cell's run apart: "batch=32", "data=source, epochs=20", "H=500"."""
        o = dict(self.overrides)
        keys = [k for k in LABEL_KEYS if k in o] + [k for k in self.shown if k not in LABEL_KEYS]
        return ", ".join([self.tag] * bool(self.tag) + [f"{LABEL_KEYS.get(k, k)}={o[k]}" for k in keys])

    @property
    def key(self) -> str:
        return cell_key(self.study, self.experiment, self.variant, self.device, self.label)

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "bpbench", "run", self.experiment, "--variant", self.variant,
                "--device", self.device, "--json"]
        for k, v in self.overrides:
            args += ["--set", f"{k}={v}"]
        return args


def make_cell(study: str, experiment: str, variant: str, device: str, overrides: dict[str, Any],
              tag: str = "") -> Cell:
    return Cell(study, experiment, variant, device, tuple(sorted(overrides.items())), tag=tag)


# ---------------------------------------------------------------- planning

def default_preset(targets: list[str]) -> str:
    """`quick` for the matrix (a smoke run); `full` when only studies are named, so that
    `bpbench compare STUDY` runs the study as its source set it up (the full preset's settings)."""
    return "full" if targets and all(t in studies.REGISTRY for t in targets) else "quick"


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
    notes = ["CUDA is not available here: its cells are marked unavailable"] if missing else []
    return devices, missing, notes


def _runs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    if "runs" in entry:
        base = {k: v for k, v in entry.items() if k != "runs"}
        return [{**base, **r} for r in entry["runs"]]
    return [dict(entry)]


def plan(targets: list[str], devices: list[str], variants: list[str], preset: dict[str, Any],
         opts: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
         threads: list[int] | None = None) -> list[Cell]:
    """The cells to run, in order, every one checked as `run` would check it.

    `opts` holds the studies' options (widths, steps, batch_sizes, updates: None when not given);
    one that no planned study takes is bad input. `extra` (from --set) overrides config keys in
    every cell whose experiment takes them, and shows in the cells' labels and keys. `threads`
    (--threads) runs each CPU cell once per thread count; parity references are planned last, so
    each fast cell is checked against the reference run with its own thread count."""
    opts = {k: v for k, v in (opts or {}).items() if v is not None}
    names = list(dict.fromkeys(targets or preset.get("experiments", [])))   # in order, once each
    for n in names:
        if n not in studies.REGISTRY:
            experiments.get(n)
    for flag in opts:   # a study's flag without any study that takes it is bad input
        owners = [s.name for s in studies.REGISTRY.values() if flag in s.flags]
        if not set(owners) & set(names):
            raise BadInput(f"--{flag.replace('_', '-')} applies only to the {' and '.join(owners)} "
                           f"stud{'ies' if len(owners) > 1 else 'y'} (`bpbench compare {owners[0]}`), "
                           "which is not in this comparison")
    exp_of = {n: studies.REGISTRY[n].experiment if n in studies.REGISTRY else n for n in names}
    known = {v for n in names for v in experiments.REGISTRY[exp_of[n]].variants}
    for v in variants:
        if v not in known:
            raise BadInput(f"unknown variant {v!r} for {', '.join(names)} (choose from: {', '.join(sorted(known))})")
    cells: list[Cell] = []
    for name in names:
        if name in studies.REGISTRY:
            study = studies.REGISTRY[name]
            cells += study.load().plan(devices, variants, dict(preset.get(name, {})),
                                       {k: opts.get(k) for k in study.flags})
            continue
        info = experiments.get(name)
        for run in _runs(dict(preset.get(name, {}))):
            cells += [make_cell("matrix", name, v, d, run) for v in V.chosen(info.variants, variants)
                      for d in devices]
    if not cells:
        raise BadInput("nothing to compare: no experiment has the requested variants")
    cells = with_references(figures.plan_threads(_apply_set(cells, extra or {}), threads))
    for c in cells:   # bad input fails here, before any cell runs, as it does in `run`
        check_cell(c)
    return cells


def check_cell(c: Cell) -> None:
    """What `run` would refuse before training: bad values, a data file that is not there, a run
    that cannot fit in this machine's memory (CPU cells; a CUDA cell's GPU is its own to check)."""
    from types import SimpleNamespace

    from bpbench import run as runner
    info = experiments.REGISTRY[c.experiment]
    cfg = C.resolve(c.experiment, info.keys, None, {**dict(c.overrides), "variant": c.variant, "device": c.device})
    data = str(cfg.get("data", ""))
    if data.endswith((".csv", ".npz")) and not Path(data).is_file():
        raise BadInput(f"{c.key}: data file {data} is not a readable file")
    if c.device == "cpu":
        runner.check_memory(info, cfg, SimpleNamespace(type="cpu"))


def with_references(cells: list[Cell]) -> list[Cell]:
    """Each fast variant's cell names its parity reference cell (planned just before it if the
    comparison does not hold it already), so its check is made as soon as it finishes. The
    reference runs the same config less what only the fast variant takes (ddp's nproc, compiled's
    compile_mode) and less implementation choices (fused): one process, the same global batches."""
    out: list[Cell] = []
    for c in cells:
        ref, dropped = V.reference_of(c.variant, dict(c.overrides))
        if ref is None:
            out.append(c)
            continue
        overrides = tuple((k, v) for k, v in c.overrides if k not in dropped)
        same = lambda r: (r.study, r.experiment, r.variant, r.device, r.overrides) == \
            (c.study, c.experiment, ref, c.device, overrides)   # noqa: E731
        reference = next((r for r in out + cells if same(r)), None)
        if reference is None:   # one process: a study's tag for N ranks ("strong N=2") would mislabel it
            reference = dataclasses.replace(c, variant=ref, overrides=overrides,
                                            shown=tuple(k for k in c.shown if k not in dropped),
                                            tag="1 process" if V.get(c.variant).distributed else c.tag)
            out.append(reference)
        out.append(dataclasses.replace(c, reference=reference.key))
    return out


def _apply_set(cells: list[Cell], extra: dict[str, Any]) -> list[Cell]:
    for key in extra:
        if key in CELL_CHOSEN:
            raise BadInput(f"--set {key}: compare chooses the {key} of each cell; use {CELL_CHOSEN[key]}")

    def takes(c: Cell, key: str) -> bool:
        study = studies.REGISTRY.get(c.study)
        return key in experiments.REGISTRY[c.experiment].keys and not (study and key in study.owns)

    for key in extra:
        if not any(takes(c, key) for c in cells):
            owner = next((s for s in studies.REGISTRY.values()
                          if key in s.owns and any(c.study == s.name for c in cells)), None)
            if owner:
                raise BadInput(f"--set {key}: the {owner.name} study sets {key} itself"
                               + (f" (use {', '.join('--' + f.replace('_', '-') for f in owner.flags)})"))
            raise BadInput(f"--set {key}: no experiment in this comparison takes {key!r}")
    out = []
    for c in cells:   # each cell takes the overrides its experiment knows (e.g. init only reaches linreg)
        mine = {k: v for k, v in extra.items() if takes(c, k)}
        out.append(dataclasses.replace(c, overrides=tuple(sorted({**dict(c.overrides), **mine}.items())),
                                       shown=tuple(sorted(mine))) if mine else c)
    return out


# ---------------------------------------------------------------- running

def why_unavailable(cell: Cell, missing_devices: set[str]) -> str | None:
    """Why this cell cannot run here (None: it can): its device is missing, or its variant runs
    on another device only (graphed: CUDA graphs)."""
    only = V.get(cell.variant).device
    if only and only != cell.device:
        return f"the {cell.variant} variant runs on {only} only"
    if cell.device in missing_devices:
        return f"{cell.device} is not available on this machine"
    return None


def run_cell(cell: Cell, repeat: int, unavailable: str | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"key": cell.key, "study": cell.study, "experiment": cell.experiment,
                           "variant": cell.variant, "device": cell.device, "label": cell.label,
                           "overrides": dict(cell.overrides), "status": "ok", "error": None, "runs": []}
    if cell.reference:
        rec["reference_key"] = cell.reference
    if unavailable:
        rec.update(status="unavailable", error=unavailable)
        return rec
    for _ in range(repeat):
        # Its own session (process group): Ctrl-C in a terminal reaches compare only, and compare
        # then ends the cell's whole group; nothing trains on without a parent (the cell dies with
        # compare even when compare is SIGKILLed: processes.start_child).
        proc = processes.start_child(cell.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        try:
            out, err = proc.communicate()
        except BaseException:
            processes.stop_group(proc)
            raise
        last = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        if proc.returncode in (0, 3) and out.strip():
            try:
                rec["runs"].append(json.loads(out))
            except json.JSONDecodeError:
                rec.update(status="failed", error="the cell printed no valid JSON result")
                break
        if proc.returncode != 0:
            rec["status"] = "diverged" if proc.returncode == 3 else "failed"
            rec["error"] = last.removeprefix("bpbench: error: ") if proc.returncode > 0 else \
                f"killed by signal {-proc.returncode} (out of memory?)"
            break
    rec["summary"] = summarize(rec["runs"])
    return rec


def step_samples(runs: list[dict[str, Any]]) -> list[list[float]]:
    """Every steady step time of each run (runs written before step_s_all existed have none)."""
    return [r["timing"]["step_s_all"] for r in runs if r["timing"].get("step_s_all")]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The cell's figures: step time from every steady step of every repeat, the rest medians
    over repeats; `noise` is the relative half-width of the step median's 95 % interval."""
    if not runs:
        return {}

    def med(get: Callable[[dict], Any]):
        vals = [v for v in (get(r) for r in runs) if v is not None]
        return statistics.median(vals) if vals else None

    samples = step_samples(runs)
    metrics = runs[-1]["final"].get("metrics") or {}
    return {
        "repeats": len(runs),
        "setup_s": med(lambda r: r["timing"]["setup_s"]),
        "step_s_median": noise.pooled(samples) if noise.usable(samples) else med(lambda r: r["timing"]["step_s_median"]),
        "step_s_iqr": med(lambda r: r["timing"]["step_s_iqr"]),
        "noise": noise.relative_noise(samples),
        "train_s": med(lambda r: r["timing"]["train_s"]),
        "samples_per_s": med(lambda r: r["timing"]["samples_per_s"]),
        "rss_peak_mib": med(lambda r: r["memory"]["rss_peak_mib"]),
        "cuda_peak_allocated_mib": med(lambda r: r["memory"]["cuda_peak_allocated_mib"]),
        "compile_s": med(lambda r: r["timing"].get("compile_s")),
        "final_loss": runs[-1]["final"]["loss"],
        "accuracy": metrics.get("test_accuracy", metrics.get("accuracy")),
        "steps": runs[-1]["timing"]["steps"],
        **figures.cell_figures(runs),
    }


# ---------------------------------------------------------------- derived figures

def _config(cell: dict[str, Any]) -> str | None:
    """The run's full resolved config, canonical: what a baseline cell must match."""
    return json.dumps(cell["runs"][-1]["config"], sort_keys=True) if cell.get("runs") else None


def _parity(c: dict[str, Any], by_key: dict[str, dict]) -> list[str]:
    """Why this cell's runs do not match its reference variant's (empty: they match)."""
    ref_variant = c["runs"][0]["reference_variant"]
    ref = by_key.get(c.get("reference_key") or   # documents written before cells named it: same label
                     cell_key(c["study"], c["experiment"], ref_variant, c["device"], c["label"]))
    if ref is None or not ref.get("runs"):
        return [f"not checkable: no {ref_variant} cell " + ("finished" if ref else "ran") + " to compare with"]
    if ref["status"] not in ("ok", "mismatch"):
        return [f"not checkable: the reference {ref_variant} cell {ref['status']}"]
    return [r for run in c["runs"] for r in parity.check(run, ref["runs"][0])]


def derive(cells: list[dict[str, Any]], baseline: dict[str, Any] | None = None,
           threshold: float = noise.MIN_CHANGE) -> list[str]:
    """Fill every cell's derived figures in place: parity status, speed vs the manual variant,
    CUDA speedup, compile break-even, change vs a baseline. Returns notes about the baseline.
    Idempotent: `report` runs it again on a saved document."""
    by_key = {c["key"]: c for c in cells}
    for c in cells:   # parity first: a mismatching cell gets no ratio below
        if c["status"] in ("ok", "mismatch") and c.get("runs") and c["runs"][0].get("reference_variant"):
            reasons = _parity(c, by_key)
            c["status"], c["error"] = ("mismatch", "; ".join(dict.fromkeys(reasons))) if reasons else ("ok", None)
            c.setdefault("summary", {})["parity_reference"] = c["runs"][0]["reference_variant"]
    ok = {k: c for k, c in by_key.items() if c["status"] == "ok" and (c.get("summary") or {}).get("step_s_median")}
    base_cells = [b for b in (baseline or {}).get("cells", []) if b.get("runs") and b["status"] == "ok"]
    base = {(b["experiment"], b["variant"], b["device"], _config(b)): b for b in base_cells}
    notes: list[str] = []
    for c in cells:
        s = c.setdefault("summary", {})
        for k in [k for k in s if k.startswith("baseline_") or k in ("speed_vs_manual", "cuda_speedup", "break_even_steps")]:
            del s[k]
        step = s.get("step_s_median")
        if c["key"] not in ok:
            continue
        manual = ok.get(cell_key(c["study"], c["experiment"], "manual", c["device"], c["label"]))
        s["speed_vs_manual"] = manual["summary"]["step_s_median"] / step if manual else None
        cpu = ok.get(cell_key(c["study"], c["experiment"], c["variant"], "cpu", c["label"]))
        s["cuda_speedup"] = cpu["summary"]["step_s_median"] / step if c["device"] == "cuda" and cpu else None
        if s.get("compile_s") is not None and s.get("parity_reference"):
            ref = ok.get(cell_key(c["study"], c["experiment"], s["parity_reference"], c["device"], c["label"]))
            gain = ref["summary"]["step_s_median"] - step if ref else None
            s["break_even_steps"] = None if gain is None else ("never" if gain <= 0 else s["compile_s"] / gain)
        if baseline is not None:
            notes += _against_baseline(c, base, base_cells, threshold)
    return notes


def _against_baseline(c: dict[str, Any], base: dict, base_cells: list[dict], threshold: float) -> list[str]:
    s = c["summary"]
    b = base.get((c["experiment"], c["variant"], c["device"], _config(c)))
    if b is None:
        same = [x for x in base_cells if (x["experiment"], x["variant"], x["device"]) ==
                (c["experiment"], c["variant"], c["device"])]
        if not same:
            return []
        mine, theirs = c["runs"][-1]["config"], same[0]["runs"][-1]["config"]
        diff = ", ".join(f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in sorted(set(mine) | set(theirs))
                         if mine.get(k) != theirs.get(k))
        return [f"{c['key']}: not compared with the baseline, whose config differs ({diff})"]
    old = b["summary"].get("step_s_median") if b.get("summary") else None
    old = old or summarize(b["runs"]).get("step_s_median")
    r = noise.ratio(step_samples(c["runs"]), step_samples(b["runs"]))
    s.update(baseline_key=b["key"], baseline_step_s=old)
    if r is None:   # too few steps (or a baseline from before step times were kept): no verdict
        s.update(baseline_change=s["step_s_median"] / old - 1 if old else None, baseline_ci=None,
                 baseline_fast_change=None, baseline_significant=False, baseline_regression=False)
        return [f"{c['key']}: too few recorded step times to tell a change from noise"]
    s.update(baseline_change=r.change, baseline_ci=[r.median.low - 1, r.median.high - 1],
             baseline_fast_change=r.fast.value - 1, baseline_significant=r.significant(threshold),
             baseline_regression=r.slower_beyond(threshold))
    return []


def regressions(doc: dict[str, Any]) -> list[str]:
    """One line per cell slower than its baseline beyond the threshold and the noise."""
    out = []
    for c in doc["cells"]:
        s = c.get("summary") or {}
        if s.get("baseline_regression"):
            lo, hi = s["baseline_ci"]
            out.append(f"{c['key']} is {s['baseline_change']:+.1%} slower than its baseline "
                       f"(95% interval {lo:+.1%} to {hi:+.1%}; fast end {s['baseline_fast_change']:+.1%})")
    return out


def failures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in doc["cells"] if c["status"] in FAILED]


class Comparison:
    """The comparison document, rewritten atomically to DIR after every cell."""

    def __init__(self, preset: str, cells: list[Cell], notes: list[str], output_dir: Path | None,
                 baseline: dict[str, Any] | None, env: dict[str, Any], threshold: float = noise.MIN_CHANGE):
        self.output_dir = output_dir
        self.baseline = baseline
        self.threshold = threshold
        self.cells = list(cells)
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
        refresh(self.doc, self.baseline, self.threshold)

    def save(self) -> None:
        if self.output_dir is None:
            return
        results.write_json(self.output_dir / "results.json", self.doc)
        results.write_csv(self.output_dir / "results.csv", csv_rows(self.doc), CSV_COLUMNS)


def refresh(doc: dict[str, Any], baseline: dict[str, Any] | None, threshold: float = noise.MIN_CHANGE) -> None:
    """Every derived part of a comparison, from its cells: ratios, baseline changes, study sections."""
    notes = derive(doc["cells"], baseline, threshold)
    if baseline is not None:
        doc["baseline"] = {"source": baseline.get("source"), "created": baseline.get("created"),
                           "saved": baseline.get("saved"), "threshold": threshold, "notes": notes}
    for study in studies.REGISTRY.values():
        doc[study.section] = study.load().derive([c for c in doc["cells"] if c["study"] == study.name])


def csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**{k: c.get(k) for k in ("key", "study", "experiment", "variant", "device", "label",
                                      "status", "error")}, **c.get("summary", {})} for c in doc["cells"]]


def execute(cmp: Comparison, unavailable: set[str], repeat: int,
            on_cell: Callable[[int, int, Cell, dict | None, float], None] | None = None) -> None:
    """Run every cell in order; KeyboardInterrupt
    (Ctrl-C, or SIGTERM turned into it) marks the document interrupted and re-raises."""
    try:
        i = 0
        while i < len(cmp.cells):
            cell = cmp.cells[i]
            if on_cell:
                on_cell(i + 1, len(cmp.cells), cell, None, 0.0)
            t0 = time.perf_counter()
            rec = run_cell(cell, repeat, why_unavailable(cell, unavailable))
            cmp.add(rec)
            if on_cell:
                on_cell(i + 1, len(cmp.cells), cell, rec, time.perf_counter() - t0)
            i += 1
    except KeyboardInterrupt:
        cmp.doc["interrupted"] = True
        cmp.refresh()
        cmp.save()
        raise
