"""`bpbench run` and `bpbench gradcheck`: one experiment, its flags generated from the registries' config keys.
"""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from bpbench import variants
from bpbench.cli import completion as complete
from bpbench.cli.common import _is_stdout, app, fail
from bpbench.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, BadInput


def _config_params() -> list[inspect.Parameter]:
    """One `run` option per config key: the common keys, then every experiment's and variant's
    own keys, from the registries (torch-free). Each key declares its validator, help and panel;
    the validators convert the text, so one layer checks flags, config files and --set alike."""
    from bpbench import config as C
    from bpbench.experiments import REGISTRY

    keys: dict[str, Any] = dict(C.COMMON_KEYS)
    for info in REGISTRY.values():
        for k, key in info.options.items():
            keys.setdefault(k, key)
    keys.update({k: key for k, key in variants.option_keys().items() if k not in keys})
    out = []
    for name, key in keys.items():
        if not isinstance(key, C.Key):     # a bare validator: still a flag, with generic help
            key = C.Key(key, f"config key {name} (see docs/commands.md).")
        option = typer.Option(None, key.flag(name), help=key.help, rich_help_panel=key.panel,
                              metavar=None if key.boolean else key.value_name,
                              autocompletion=complete.BY_KEY.get(name))
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                     annotation=Optional[bool] if key.boolean else Optional[str]))
    return out


def _opt(flag: str, help: str, panel: str, default: Any = None):
    """A `run` option in its help panel (Typer groups them under that heading)."""
    return typer.Option(default, flag, help=help, rich_help_panel=panel)


def _run_signature() -> inspect.Signature:
    P = inspect.Parameter
    head = [P("experiment", P.KEYWORD_ONLY, annotation=str,
              default=typer.Argument(..., help="Experiment name (see `bpbench list`).",
                                     autocompletion=complete.experiments))]
    head += [P(v, P.KEYWORD_ONLY, annotation=bool, default=_opt(f"--{v}", f"Shorthand for --variant {v}.",
                                                                "Variant", False)) for v in variants.shorthands()]
    tail = [
        P("config", P.KEYWORD_ONLY, annotation=Optional[Path],
          default=_opt("--config", "TOML file of config values (below flags, above built-ins).", "Configuration")),
        P("set_", P.KEYWORD_ONLY, annotation=List[str],
          default=_opt("--set", "Any config key: --set key=value (repeatable).", "Configuration", [])),
        P("trace", P.KEYWORD_ONLY, annotation=bool,
          default=_opt("--trace", "bce: print every forward value and gradient.", "Output", False)),
        P("as_json", P.KEYWORD_ONLY, annotation=bool,
          default=_opt("--json", "Print exactly one JSON object on stdout.", "Output", False)),
        P("output", P.KEYWORD_ONLY, annotation=Optional[Path],
          default=_opt("--output", "Write the JSON result to FILE (atomically).", "Output")),
        P("profile_lines", P.KEYWORD_ONLY, annotation=bool,
          default=_opt("--profile-lines", "Add memory_profiler's line-by-line table (slow).", "Output", False)),
        P("profile_ops", P.KEYWORD_ONLY, annotation=bool,
          default=_opt("--profile-ops", "After training, profile a few steps with torch.profiler: top ops, "
                                        "phases, host vs kernel time.", "Output", False)),
        P("metric", P.KEYWORD_ONLY, annotation=str,
          default=typer.Option("time", "--metric", metavar="time|instructions", rich_help_panel="Output",
                               help="time: wall time per step; instructions: each steady step's instructions, "
                                    "counted under callgrind (needs valgrind; CPU, one process; slow but "
                                    "unmoved by the machine's load).")),
        P("trace_file", P.KEYWORD_ONLY, annotation=Optional[Path],
          default=_opt("--trace-file", "Write --profile-ops' Chrome/Perfetto trace here (implies "
                                       "--profile-ops; default with --output: beside it, NAME.trace.json).",
                       "Output")),
        P("force", P.KEYWORD_ONLY, annotation=bool,
          default=_opt("--force", "Let --output and --trace-file replace a file that is not a bpbench result "
                                  "(never an input of the run, bpbench's own files or the Python running it).",
                       "Output", False)),
    ]
    return inspect.Signature(head + _config_params() + tail)


def run(*, experiment: str, config: Optional[Path], set_: List[str], trace: bool, as_json: bool,
        output: Optional[Path], profile_lines: bool, profile_ops: bool, trace_file: Optional[Path],
        force: bool, metric: str, **flags: Any) -> None:
    """Train one experiment under the harness and report loss, parameters, time and memory."""
    from bpbench import api
    from bpbench import config as C
    from bpbench.measure.run import Printer

    info = _chosen(experiment, flags, trace)
    flags.update(C.parse_set(set_, flags))
    info, cfg = api.resolve(experiment, config, **flags)   # fails fast on --device cuda without CUDA
    profile_ops = profile_ops or trace_file is not None
    inputs = [config, *info.inputs(cfg)]     # what the run reads: no output may replace it
    trace_file = _check_outputs(inputs, output, trace_file if profile_ops else None, profile_ops, force)
    counted = api.check_metric(metric, cfg, profile_lines or profile_ops) == "instructions"
    log = Printer("stderr" if as_json else "stdout")
    progress = None if as_json or counted or not sys.stdout.isatty() else \
        _LazyProgress(f"{experiment} {cfg['variant']}")
    try:
        result = api.execute(info, cfg, profile_lines=profile_lines, profile_ops=profile_ops,
                             trace_file=trace_file, on_log=log if cfg.get("log_every") else None,
                             on_epoch=progress.update if progress else None, metric=metric)
    finally:
        if progress:
            progress.close()
    if result is None:   # a rank other than 0 under torchrun: rank 0 reports
        return
    _emit(result, as_json, output, trace)   # a diverged or interrupted run's partial result too
    if result["status"] == "interrupted":
        fail(result["error"], EXIT_INTERRUPTED)
    if result["status"] == "diverged":
        fail(result["error"], EXIT_DIVERGED)
    if (result.get("profile") or {}).get("trace_error"):   # the result is kept: shown and written first
        fail(result["profile"]["trace_error"])


def _chosen(experiment: str, flags: dict[str, Any], trace: bool):
    """The experiment's registry entry, once the shorthand (--manual ...) is folded into --variant
    and every flag given is known to apply to it."""
    from bpbench import experiments
    shorthands = [v for v in variants.shorthands() if flags.pop(v)]
    variant = flags.get("variant")
    if len(shorthands) > 1 or (shorthands and variant and variant != shorthands[0]):
        raise BadInput("choose one variant: " + ", ".join(shorthands + ([variant] if variant else [])))
    if shorthands:
        flags["variant"] = shorthands[0]
    info = experiments.get(experiment)
    if trace and not info.has_trace:
        raise BadInput(f"--trace is not available for {experiment} (only: "
                       f"{', '.join(i.name for i in experiments.REGISTRY.values() if i.has_trace)})")
    _check_applies(info, flags)
    return info


def _check_outputs(inputs: list, output: Optional[Path], trace_file: Optional[Path], profile_ops: bool,
                   force: bool) -> Optional[Path]:
    """Refuse, before training, outputs that cannot be written or would replace an input (one
    rule for both: results.check_output_file); returns where the profile's trace goes (None:
    nowhere). --output may also be a stream (/dev/stdout, a pipe); the trace is a file."""
    from bpbench.results import files as results
    if output is not None:
        results.check_output_file(output, "--output", inputs, force, streams=True)
    if not profile_ops:
        return None
    from bpbench.measure import profile as opprofile
    if trace_file is None and output is not None and results.names_a_file(output):   # not /dev/stdout
        trace_file = opprofile.default_trace_file(output)
    if trace_file is not None:
        if output is not None and results.same_file(trace_file, output):
            raise BadInput(f"--trace-file {trace_file} is also --output: one would overwrite the other")
        results.check_output_file(trace_file, "--trace-file", inputs, force)
    return trace_file


run.__signature__ = _run_signature()
app.command()(run)


def _check_applies(info, flags: dict[str, Any]) -> None:
    """An experiment-specific flag given to an experiment that does not take it is bad input."""
    unknown = sorted(k for k, v in flags.items() if v is not None and k not in info.keys)
    if unknown:
        raise BadInput(f"--{unknown[0].replace('_', '-')} does not apply to {info.name}")


def _emit(result: dict[str, Any], as_json: bool, output: Optional[Path], trace: bool = False) -> None:
    """Show the result first, then write --output: a failed write never hides what was computed."""
    from bpbench.results import files as results
    if as_json:
        sys.stdout.write(results.dumps(result))
        sys.stdout.flush()
    else:
        from bpbench import api, report
        api.print_run(result)
        if trace and "trace" in result:
            report.print_trace(result["trace"])
    if output is not None and as_json and _is_stdout(output):
        return   # --json --output /dev/stdout: one JSON object on stdout, not the same one twice
    if output is not None:
        try:
            results.write_json(output, result, "--output", streams=True)
        except OSError as e:
            raise BadInput(f"cannot write --output {output}: {e.strerror or e}") from None
        if not as_json:
            print(f"result written to {output}")


class _LazyProgress:
    """A rich progress bar on stderr that appears only once a run has lasted about a second; it
    shows the latest epoch's loss and the wall time per update between refreshes (the loop's own
    work included: evaluation, logging, reading the loss back; not the harness's step timing)."""

    def __init__(self, label: str, after_s: float = 1.0):
        self.label, self.after_s = label, after_s
        self.clock = time.perf_counter
        self.t0 = self.clock()
        self.bar = None
        self.last = 0.0
        self.mark: tuple[float, int] | None = None    # (time, updates) where the next figure begins

    def update(self, done: int, total: int, entry: Optional[dict] = None) -> None:
        now = self.clock()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        if self.bar is None:
            if now - self.t0 < self.after_s:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
            self.bar = Progress("[progress.description]{task.description}", BarColumn(),
                                MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[now]}"),
                                console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, now="")
        self.bar.update(self.task, completed=done, now=self._now(now, entry))
        # the next figure begins here, after the imports and the bar's start: it times training
        self.mark = (self.clock(), entry["updates"]) if entry else None

    def _now(self, now: float, entry: Optional[dict]) -> str:
        """"loss 0.0076 · 63 µs/update wall": the latest loss, and the wall time per update since
        the mark (none on the bar's first refresh: the mark is set once the bar has started)."""
        if not entry or entry.get("loss") is None:
            return ""
        from bpbench.report import fmt_s
        text = f"loss {entry['loss']:.4g}"
        if self.mark and entry["updates"] > self.mark[1]:
            text += f" · {fmt_s((now - self.mark[0]) / (entry['updates'] - self.mark[1]))}/update wall"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command()
def gradcheck(
    experiment: str = typer.Argument(..., help="Experiment with a manual variant.", autocompletion=complete.experiments),
    data: Optional[str] = typer.Option(None, "--data", help="Data set (per experiment).", autocompletion=complete.data),
    digits: Optional[str] = typer.Option(None, "--digits", help="mnist01: '0,1' or '0-9'."),
    data_dir: Optional[str] = typer.Option(
        None, "--data-dir", help="mnist01: a folder of MNIST's four files, or a torchvision MNIST root."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for init, data and the sampled elements."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Accepted for symmetry with run; must be > 0."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Must name the manual variant if given."),
    tol: float = typer.Option(1e-6, "--tol", help="Largest allowed relative error of any pair."),
    max_elements: int = typer.Option(256, "--max-elements",
                                     help="Per parameter, check at most N seeded random elements numerically (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Check the hand-written backward against autograd and float64 central differences."""
    from bpbench import experiments
    from bpbench.measure import gradcheck as gc
    from bpbench.measure import run as runner

    info = experiments.get(experiment)
    if variants.HAND_WRITTEN not in info.variants:
        raise BadInput(f"{experiment} has no manual variant to check")
    if variant is not None and variant != variants.HAND_WRITTEN:
        experiments.check_variant(info, variant)
        raise BadInput(f"gradcheck checks the manual variant; {variant!r} has no hand-written backward")
    if not 0 < tol < float("inf"):     # an infinite tolerance would pass every check
        raise BadInput(f"--tol must be a positive finite number, got {tol}")
    if max_elements < 0:
        raise BadInput(f"--max-elements must be >= 0, got {max_elements}")
    flags = {"data": data, "digits": digits, "data_dir": data_dir, "seed": seed, "lr": lr, "variant": variants.HAND_WRITTEN}
    _check_applies(info, flags)
    info, cfg = runner.resolve(experiment, None, flags)
    report = gc.check(info.load().gradcheck_case(cfg), tol=tol, max_elements=max_elements, seed=cfg["seed"])
    report["experiment"] = experiment
    if as_json:   # strict JSON: a NaN difference is written as null ("finite": false says why)
        from bpbench.results import files as results
        sys.stdout.write(results.dumps({"experiment": experiment, **report}))
    else:
        from bpbench import report as rep
        rep.print_gradcheck(report)
        broken = [c["param"] for c in report["checks"] if not c["finite"]]
        if broken:
            print(f"cannot check {', '.join(broken)}: a gradient or difference is NaN/inf "
                  "(values overflow float64?)")
    raise typer.Exit(0 if report["ok"] else 1)
