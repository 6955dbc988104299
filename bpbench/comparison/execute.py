"""Running a comparison, cell by cell, each in a fresh process.

Isolation: every cell runs in a fresh `python -m bpbench run ... --json` process. Imports, the
first optimizer construction (which imports torch._dynamo) and the CUDA context are then paid by
every cell alike, inside its own setup_s / device_init_s, instead of being charged to whichever
cell happens to run first; memory peaks cannot leak from one cell into the next; a cell that
crashes or runs out of memory takes only itself down. Cells run one at a time, so they never
compete for cores. Each cell runs in its own process group, so Ctrl-C or SIGTERM stops the whole
cell (its memory monitor included): no child outlives the comparison.

After every finished cell, results.json and results.csv are rewritten atomically, so an
interrupted comparison keeps every finished cell.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from bpbench import config, processes
from bpbench import variants as V
from bpbench.comparison.derive import CSV_COLUMNS, csv_rows, refresh, summarize
from bpbench.errors import BadInput
from bpbench.results import files as results
from bpbench.results import noise
from bpbench.results.cells import Cell

ISOLATION = ("fresh process per cell (python -m bpbench run --json): one-time costs (imports, "
             "first optimizer construction, CUDA context) are paid by every cell alike and reported "
             "in its setup_s / device_init_s")


def why_unavailable(cell: Cell, missing_devices: set[str], metric: str = "time") -> str | None:
    """Why this cell cannot run here (None: it can): its device is missing, its variant runs on
    another device only (graphed: CUDA graphs), or --metric instructions cannot count it (the
    GPU's work, several processes)."""
    info = V.get(cell.variant)
    if info.device and info.device != cell.device:
        return f"the {cell.variant} variant runs on {info.device} only"
    if cell.device in missing_devices:
        return f"{cell.device} is not available on this machine"
    if metric == "instructions" and (cell.device != "cpu" or info.distributed):
        return "--metric instructions counts one CPU process"
    return None


def run_cell(cell: Cell, repeat: int, unavailable: str | None, metric: str = "time") -> dict[str, Any]:
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
        proc = processes.start_child(cell.argv(metric), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        try:
            out, err = proc.communicate()
        except BaseException:
            processes.stop_group(proc)
            raise
        last = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        if proc.returncode in (0, 3) and out.strip():
            try:
                rec["runs"].append(config.parse_json(out, "the cell's result"))
            except BadInput:
                rec.update(status="failed", error="the cell printed no valid JSON result")
                break
        if proc.returncode != 0:
            rec["status"] = "diverged" if proc.returncode == 3 else "failed"
            rec["error"] = last.removeprefix("bpbench: error: ") if proc.returncode > 0 else \
                f"killed by signal {-proc.returncode} (out of memory?)"
            break
    rec["summary"] = summarize(rec["runs"])
    return rec


class Comparison:
    """The comparison document, rewritten atomically to DIR after every cell."""

    def __init__(self, preset: str, cells: list[Cell], notes: list[str], output_dir: Path | None,
                 baseline: dict[str, Any] | None, env: dict[str, Any], threshold: float = noise.MIN_CHANGE,
                 metric: str = "time"):
        self.output_dir = output_dir
        self.baseline = baseline
        self.threshold = threshold
        self.cells = list(cells)
        self.doc: dict[str, Any] = {
            "schema": results.SCHEMA_VERSION, "kind": "comparison", "preset": preset,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": sys.argv, "isolation": ISOLATION, "notes": notes, "env": env,
            "planned": [c.key for c in cells], "interrupted": False, "metric": metric, "cells": [],
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
        for name, write in (("results.json", lambda p: results.write_json(p, self.doc, "--output-dir file")),
                            ("results.csv", lambda p: results.write_csv(p, csv_rows(self.doc), CSV_COLUMNS,
                                                                         "--output-dir file"))):
            try:
                write(self.output_dir / name)
            except OSError as e:       # a full disk, say: name the file
                raise BadInput(f"cannot write {self.output_dir / name}: {e.strerror or e}") from None


LOCK = ".bpbench.lock"   # in --output-dir while a comparison writes there


@contextmanager
def output_lock(output_dir: Path | None):
    """Hold `output_dir`'s lock (flock on LOCK, released by the kernel however this process ends)
    while a comparison writes there. Yields None, or the warning that another comparison holds it:
    each rewrites results.json and results.csv with its own cells after every cell."""
    if output_dir is None:
        yield None
        return
    try:
        import fcntl
    except ImportError:     # not POSIX: no lock to take
        yield None
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(output_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError:      # a folder or link by that name, a read-only folder: no lock, no warning
        yield None
        return
    try:
        yield _take(fd, fcntl, output_dir)
    finally:
        os.close(fd)     # releases the lock


def _take(fd: int, fcntl, output_dir: Path) -> str | None:
    """Lock `fd` and write this pid into it; or the warning naming the compare that holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        return (f"another compare (pid {holder}) is writing into {output_dir} too: each rewrites results.json "
                "and results.csv with its own cells, so they will hold one comparison's cells, not both")
    except OSError:      # a file system without locks (some network ones): nothing to tell
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return None


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
            metric = cmp.doc["metric"]
            rec = run_cell(cell, repeat, why_unavailable(cell, unavailable, metric), metric)
            cmp.add(rec)
            if on_cell:
                on_cell(i + 1, len(cmp.cells), cell, rec, time.perf_counter() - t0)
            i += 1
    except KeyboardInterrupt:
        cmp.doc["interrupted"] = True
        cmp.refresh()
        cmp.save()
        raise
