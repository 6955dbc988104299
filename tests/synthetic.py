"""Result dicts and comparison documents built in-process, for the compare/report tests (no
subprocess): the shapes `bpbench run --json` and `bpbench compare` write, filled with chosen or
recorded numbers."""

import json
import statistics
from pathlib import Path

from bpbench import comparison as cmp

DATA = Path(__file__).parent / "data"
# The same command run twice in a row on the project's shared 2-core machine (see "about").
AA = json.loads((DATA / "aa_step_times.json").read_text())["commands"]


def run_result(experiment="linreg", variant="manual", device="cpu", steps=None, config=None,
               losses=(1.0, 0.5), metrics=None, **extra):
    steps = list(steps if steps is not None else [1e-4] * 20)
    final = {"loss": losses[-1], "params": None, "metrics": metrics or {}}
    if "param_digest" in extra:
        final["param_digest"] = extra.pop("param_digest")
    timing = {"setup_s": 0.01, "warmup_s": 0.0, "total_s": 0.02 + sum(steps), "train_s": sum(steps),
              "steps": len(steps), "warmup_steps": 0,
              "step_s_median": statistics.median(steps) if steps else None, "step_s_iqr": 0.0,
              "samples_per_s": 1.0, "step_s_all": steps}
    if "compile_s" in extra:
        timing["compile_s"] = extra.pop("compile_s")
    return {"schema": 1, "experiment": experiment, "variant": variant, "device": device,
            "config": {"epochs": len(losses), "lr": 0.01, "variant": variant, "device": device, **(config or {})},
            "data": {"name": "line4", "n_train": 4, "n_test": 0}, "final": final,
            "history": [{"epoch": i + 1, "loss": v, "updates": i + 1} for i, v in enumerate(losses)],
            "evaluations": [], "timing": timing,
            "memory": {"rss_start_mib": 500.0, "rss_peak_mib": 512.0, "cuda_peak_allocated_mib": 30.0 if device == "cuda" else None},
            "env": {"cpu": "test cpu", "cuda_device": "test gpu" if device == "cuda" else None},
            "status": "ok", **extra}


def cell(run, study="matrix", label="", status="ok", overrides=None):
    return {"key": cmp.cell_key(study, run["experiment"], run["variant"], run["device"], label),
            "study": study, "experiment": run["experiment"], "variant": run["variant"], "device": run["device"],
            "label": label, "overrides": overrides or {}, "status": status, "error": None, "runs": [run],
            "summary": cmp.summarize([run])}


def document(cells, preset="quick"):
    return {"schema": 1, "kind": "comparison", "preset": preset, "notes": [], "planned": [c["key"] for c in cells],
            "interrupted": False, "cells": cells}


def aa_doc(which: int, scale: float = 1.0):
    """A comparison of the three recorded commands from run `which` (0 or 1) of each A/A pair,
    every step time multiplied by `scale` (a doctored slowdown)."""
    cells = []
    for name, rec in AA.items():
        exp, variant = name.split("_")
        cells.append(cell(run_result(exp, variant, steps=[s * scale for s in rec["runs"][which]])))
    return document(cells)


def write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path
