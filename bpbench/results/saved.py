"""Saved results, read back and kept, like pytest-benchmark's storage.

`load` reads any results file people keep, edit and copy between machines (results.json of
`compare`, a saved run, one `run --output` result), checked against the schema before anything
uses it, so a damaged file ends in one line naming the first bad field (exit 2) instead of a
traceback deep in the rendering; every derived figure is then computed again from the runs, never
trusted from the file. `compare --save NAME` stores a document with the commit, a timestamp and
the machine under a runs directory; `--baseline NAME` or `--baseline last` picks one again (a path
to a results.json works as well)."""

from __future__ import annotations

import datetime as _dt
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import bpbench
from bpbench import config
from bpbench.errors import BadInput, cut, quoted
from bpbench.results import files as results
from bpbench.results import schema
from bpbench.results.summary import summarize

DEFAULT_DIR = Path(".bpbench") / "runs"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def as_comparison(run: dict[str, Any]) -> dict[str, Any]:
    """A single `run --output` result as a one-cell comparison, so report/baselines treat both alike."""
    key = f"matrix:{run['experiment']}/{run['variant']}/{run['device']}"
    return {"schema": schema.SCHEMA_VERSION, "kind": "comparison", "preset": "single run",
            "created": None, "notes": [], "planned": [key], "interrupted": False,
            "metric": run["timing"].get("metric", "time"),
            "cells": [{"key": key, "study": "matrix", "experiment": run["experiment"],
                       "variant": run["variant"], "device": run["device"], "label": "", "overrides": {},
                       "status": run["status"], "error": run.get("error"), "runs": [run]}]}


def load(path: Path) -> dict[str, Any]:
    """A comparison from `path`, checked, its summaries computed again from its runs; raises BadInput."""
    # regular, bounded, strict JSON, nested at most config.MAX_DEPTH deep
    text = config.read_text_file(path, "comparison file", config.DOCUMENT_LIMIT)
    doc = config.parse_json(text, f"comparison file {path}")
    if not isinstance(doc, dict) or ("kind" not in doc and "experiment" not in doc):
        raise BadInput(f"{path} is not a bpbench comparison (results.json from `bpbench compare`) "
                       "or run result (`bpbench run --output`)")
    if doc.get("schema") != schema.SCHEMA_VERSION:
        raise BadInput(f"{path} has schema {quoted(doc.get('schema'))}; "
                       f"this bpbench reads schema {schema.SCHEMA_VERSION}")
    if doc.get("kind") is None:
        schema.check(text, schema.RunResult, str(path), "run result")
        doc = as_comparison(doc)
    else:
        schema.check(text, schema.Comparison, str(path), "comparison")
    for c in doc["cells"]:
        c["summary"] = summarize(c["runs"])
    return doc


def check_name(name: str) -> str:
    if not NAME.fullmatch(name) or name == "last" or name.endswith(".json"):
        raise BadInput(f"--save {quoted(name)}: a name is 1-100 letters, digits, '.', '_' or '-' "
                       "(not 'last', no '.json'), e.g. --save main")
    return name


def commit() -> dict[str, Any]:
    """The commit of bpbench's own source tree (null outside a git checkout), and whether it had
    uncommitted changes: what a saved measurement measured."""
    src = Path(bpbench.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if head else None
    return {"commit": head, "dirty": bool(status) if status is not None else None}


def machine(env: dict[str, Any]) -> dict[str, Any]:
    return {"node": platform.node(), **{k: env.get(k) for k in ("platform", "cpu", "cpu_count", "python", "torch",
                                                                "cuda_runtime")}}


def save(doc: dict[str, Any], name: str, runs_dir: Path) -> Path:
    doc["saved"] = {"name": name, **commit(), "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine(doc.get("env") or {})}
    path = runs_dir / f"{name}.json"
    results.write_json(path, doc, "--save")
    return path


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:     # a name too long for the file system, ...
        return False


def _saved(runs_dir: Path) -> list[Path]:
    """The saved comparisons: regular *.json files only (a FIFO or a directory so named is none)."""
    try:
        return [p for p in runs_dir.glob("*.json") if _is_file(p)] if runs_dir.is_dir() else []
    except OSError:
        return []


def names(runs_dir: Path) -> list[str]:
    return sorted(p.stem for p in _saved(runs_dir))


def resolve(spec: str, runs_dir: Path) -> Path:
    """`last` (the newest saved comparison), a saved NAME, or a path to a results.json."""
    if spec == "last":
        files = _saved(runs_dir)
        if not files:
            raise BadInput(f"--baseline last: no saved comparison in {runs_dir} (save one with --save NAME)")
        return max(files, key=lambda p: p.stat().st_mtime)
    if _is_file(Path(spec)) or spec.endswith(".json") or "/" in spec or not NAME.fullmatch(spec):
        return Path(spec)       # a path: reading it says what is wrong with it
    path = runs_dir / f"{spec}.json"
    if not _is_file(path):
        have = names(runs_dir)
        raise BadInput(f"--baseline {cut(spec)}: no such file, and no comparison saved as {quoted(spec)} in {runs_dir}"
                       + (f" (saved: {', '.join(have)})" if have else ""))
    return path
