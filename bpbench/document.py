"""Reading a saved comparison (or a single run's result) back, checked before anything uses it.

`report` and `compare --baseline` read files that people keep, edit and copy between machines.
The shape and the types of everything they use are checked here with pydantic (strict: a string
is not a number, null is not an object), so a damaged file ends in one line naming the first bad
field (exit 2) instead of a traceback deep in the rendering. Every derived figure (summaries,
ratios, study sections) is then computed again from the runs, never trusted from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

from bpbench import results
from bpbench.errors import BadInput

Num = Optional[float]   # strict mode still accepts an int where a float is due; null: not measured


def _models():
    """The pydantic models, built on first use (pydantic is imported only by commands that read files)."""
    from pydantic import BaseModel, ConfigDict

    class M(BaseModel):
        model_config = ConfigDict(strict=True, extra="allow")

    class Timing(M):
        setup_s: Num
        train_s: Num
        steps: int
        step_s_median: Num
        step_s_iqr: Num
        samples_per_s: Num
        step_s_all: Optional[list[float]] = None
        compile_s: Num = None

    class Memory(M):
        rss_peak_mib: Num
        cuda_peak_allocated_mib: Num

    class Digest(M):
        norm: Num
        sum: Num
        head: list[Num]

    class Final(M):
        loss: Num
        params: Optional[dict[str, Any]]
        metrics: Optional[dict[str, Union[Num, str, bool]]]
        param_digest: Optional[dict[str, Digest]] = None

    class Entry(M):
        epoch: int
        loss: Num
        updates: int
        time_s: Num = None
        batch_losses: Optional[list[Num]] = None

    class Evaluation(M):
        updates: int
        time_s: Num

    class Data(M):
        name: str
        n_train: int
        n_test: int

    class Run(M):
        experiment: str
        variant: str
        device: str
        config: dict[str, Any]
        data: Data
        final: Final
        history: list[Entry]
        evaluations: list[Evaluation] = []
        timing: Timing
        memory: Memory
        env: dict[str, Any]
        status: Literal["ok", "diverged", "interrupted"]
        reference_variant: Optional[str] = None

    class Summary(M):
        step_s_median: Num = None
        step_s_iqr: Num = None
        noise: Num = None

    class Cell(M):
        key: str
        study: str
        experiment: str
        variant: str
        device: str
        label: str
        overrides: dict[str, Any]
        status: Literal["ok", "diverged", "failed", "unavailable", "mismatch"]
        error: Optional[str]
        runs: list[Run]
        summary: Summary = Summary()

    class Comparison(M):
        kind: Literal["comparison"]
        preset: str
        notes: list[str]
        planned: list[str]
        interrupted: bool = False
        cells: list[Cell]

    return Run, Comparison


def _where(loc: tuple) -> str:
    """('cells', 0, 'runs', 1, 'timing') -> cells[0].runs[1].timing"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _check(model, doc: dict[str, Any], path: Path, what: str) -> None:
    from pydantic import ValidationError
    try:
        model.model_validate(doc)
    except ValidationError as e:
        errs = e.errors()
        first = errs[0]
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        if first["type"] == "missing":
            problem = f"missing {_where(first['loc'])}"
        else:
            msg = first["msg"].split(" or instance of")[0]
            problem = f"{_where(first['loc'])}: {msg[0].lower() + msg[1:]}, got {json.dumps(first.get('input'))[:40]}"
        raise BadInput(f"{path} is not a complete bpbench {what}: {problem}{more}") from None


def as_comparison(run: dict[str, Any]) -> dict[str, Any]:
    """A single `run --output` result as a one-cell comparison, so report/baselines treat both alike."""
    key = f"matrix:{run['experiment']}/{run['variant']}/{run['device']}"
    return {"schema": results.SCHEMA_VERSION, "kind": "comparison", "preset": "single run",
            "created": None, "notes": [], "planned": [key], "interrupted": False,
            "cells": [{"key": key, "study": "matrix", "experiment": run["experiment"],
                       "variant": run["variant"], "device": run["device"], "label": "", "overrides": {},
                       "status": run["status"], "error": run.get("error"), "runs": [run]}]}


def load(path: Path) -> dict[str, Any]:
    """A comparison from `path` (results.json of `compare`, a saved run, or one `run --output`
    file), checked, its summaries computed again from its runs; raises BadInput."""
    from bpbench import compare

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"comparison file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or ("kind" not in doc and "experiment" not in doc):
        raise BadInput(f"{path} is not a bpbench comparison (results.json from `bpbench compare`) "
                       "or run result (`bpbench run --output`)")
    if doc.get("schema") != results.SCHEMA_VERSION:
        raise BadInput(f"{path} has schema {doc.get('schema')!r}; this bpbench reads schema {results.SCHEMA_VERSION}")
    run_model, comparison_model = _models()
    if doc.get("kind") is None:
        _check(run_model, doc, path, "run result")
        doc = as_comparison(doc)
    else:
        _check(comparison_model, doc, path, "comparison")
    for c in doc["cells"]:
        c["summary"] = compare.summarize(c["runs"])
    return doc
