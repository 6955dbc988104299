"""Planning a comparison: presets, devices, the matrix and the studies' cells, each checked as `run` would check it,
and each fast variant's parity reference planned beside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bpbench import config as C
from bpbench import experiments, studies
from bpbench import variants as V
from bpbench.errors import BadInput
from bpbench.results import figures
from bpbench.results.cells import Cell, make_cell

# compare chooses variant and device per cell: a --set of either is bad input.
CELL_CHOSEN = {"variant": "--variant", "device": "--device"}


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


def _resolved(c: Cell):
    info = experiments.REGISTRY[c.experiment]
    return info, C.resolve(c.experiment, info.keys, None, {**dict(c.overrides), "variant": c.variant, "device": c.device})


def check_cell(c: Cell) -> None:
    """What `run` would refuse before training: bad values, a data file that is not there, more
    ranks than the machine or the batch holds, a run that cannot fit in this machine's memory
    (CPU cells; a CUDA cell's GPU is its own to check)."""
    from types import SimpleNamespace

    from bpbench.measure import run as runner
    info, cfg = _resolved(c)
    data = str(cfg.get("data", ""))
    if data.endswith((".csv", ".npz")) and not Path(data).is_file():
        raise BadInput(f"{c.key}: data file {data} is not a readable file")
    if V.get(c.variant).distributed:
        from bpbench.measure import distributed
        try:
            distributed.check_world(cfg, cfg.get("nproc") or 1, info.footprint(cfg).samples)
        except BadInput as e:
            raise BadInput(f"{c.key}: {e}") from None
    if c.device == "cpu":
        runner.check_memory(info, cfg, SimpleNamespace(type="cpu"))


# What a finished run's result holds in compare's memory beyond its history and step times:
# config, env, memory, digests (measured: 12.5 KB for linreg, 17.6 KB for mnist01, parsed). Its
# history entries and per-update losses take about what the run's own records do
# (run.history_bytes); its kept step times, parsed into a list, 32 bytes each instead of 8.
RESULT_BYTES = 20_000
PARSED_STEP_BYTES = 24


def check_repeat(cells: list[Cell], repeat: int) -> None:
    """Refuse, before any cell runs, a comparison whose results cannot be held: compare keeps every
    run of every cell (its kept step times) in memory, and in results.json."""
    from bpbench.measure import run as runner
    from bpbench.measure.records import KEEP_STEPS

    def run_bytes(c: Cell) -> int:
        steps, records = runner.history_bytes(*_resolved(c))
        return RESULT_BYTES + records + PARSED_STEP_BYTES * min(steps, KEEP_STEPS)
    need = sum(run_bytes(c) for c in cells) * repeat
    runner.refuse_beyond(f"compare --repeat {repeat}", [(f"{len(cells)} cells x {repeat:,} runs' results", need)],
                         *runner.host_memory(), fix="use a smaller --repeat")


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
