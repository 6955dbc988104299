"""The bpbench command line: a thin Typer layer over `bpbench.run`, `gradcheck` and `compare`.

Keep torch out of this module's imports: `bpbench --help` and `bpbench list` must start fast.
Every error a user can cause ends in one line on stderr and exit code 2 (see errors.py).
"""

from __future__ import annotations

import inspect
import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from bpbench import __version__, studies
from bpbench.errors import (EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REGRESSION, BadInput,
                            RunFailed)

try:  # Typer >= 0.20 vendors click; older releases depend on it.
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click


# click < 8.2 has no NoArgsIsHelpError (it prints help itself).
_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    sys.stderr.write(f"bpbench: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    raise SystemExit(code)


class OneLineErrors(typer.core.TyperGroup):
    """Turns usage errors, BadInput, OS errors and Ctrl-C/SIGTERM into one line on stderr and an
    exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _usable_streams()
        try:
            os.getcwd()
        except FileNotFoundError:    # torch's own libraries abort the process from a deleted cwd
            fail("the current directory no longer exists: cd to one that does")
        previous = _terminate_like_interrupt()
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except _NoArgsIsHelp:  # Typer has already printed the help
            raise SystemExit(0)
        except click.exceptions.UsageError as e:
            fail(e.format_message())
        except BadInput as e:
            fail(str(e))
        except RunFailed as e:
            fail(str(e), EXIT_FAILED)
        except OSError as e:   # a file the user named that the system refuses, a full stdout, ...
            fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else e.strerror or str(e))
        except (typer.Abort, KeyboardInterrupt):
            fail("interrupted", EXIT_INTERRUPTED)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        raise SystemExit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:   # before Typer turns it into a silent exit 130
            fail("interrupted", EXIT_INTERRUPTED)


def _usable_streams() -> None:
    """Printing never fails on the streams themselves: a closed stdout/stderr (`>&-`) becomes
    os.devnull (an --output file is still written), and a character the stream's encoding lacks
    (PYTHONIOENCODING=ascii; the tables draw with box characters) is escaped, not an error."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        elif isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _terminate_like_interrupt():
    """SIGTERM (kill, a scheduler, compare stopping a cell) takes the Ctrl-C path: one line, exit
    130, finished work kept, child processes stopped. Returns the handler it replaced (None
    when signals cannot be set here: not the main thread)."""
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:   # started to ignore it (nohup-like)
            return None
        return signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:
        return None


app = typer.Typer(cls=OneLineErrors, add_completion=True, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  pretty_exceptions_enable=False,
                  help="A command-line lab for backpropagation: the same small models trained with "
                       "hand-written gradients, autograd and nn modules, on CPU and GPU, timed and "
                       "memory-profiled by one harness.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bpbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """bpbench: backpropagation, by hand and by autograd, measured."""


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON.")) -> None:
    """List experiments, their variants (from the variants registry), defaults and sources."""
    from bpbench import variants
    from bpbench.experiments import REGISTRY

    rows = [{"name": i.name, "variants": list(i.variants), "default_variant": i.default_variant,
             "defaults": i.defaults(), "source": i.source, "summary": i.summary}
            for i in REGISTRY.values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="bpbench experiments", show_lines=True)
    for col in ("experiment", "variants", "defaults", "source"):
        t.add_column(col, overflow="fold")
    for r in rows:
        d = r["defaults"]
        t.add_row(f"[bold]{r['name']}[/]\n{r['summary']}",
                  "\n".join(f"{v} (default)" if v == r["default_variant"] else v for v in r["variants"]),
                  "\n".join(f"{k} = {d[k]}" for k in ("data", "epochs", "lr", "batch_size", "seed") if k in d),
                  r["source"])
    console.print(t)
    v = Table(title="variants", title_justify="left")
    for col in ("variant", "how it trains", "must match", "runs on"):
        v.add_column(col, overflow="fold")
    for info in variants.REGISTRY.values():
        v.add_row(info.name, info.summary, info.reference or "-", info.device or "any")
    console.print(v)


SHORTHANDS = ("manual", "autograd", "nn")   # --manual etc.: `bpbench run linreg --manual` as typed


def _config_params() -> list[inspect.Parameter]:
    """One `run` option per config key: the common keys, then every experiment's and variant's
    own keys, from the registries (torch-free). Each key declares its validator, help and panel;
    the validators convert the text, so one layer checks flags, config files and --set alike."""
    from bpbench import config as C
    from bpbench import variants
    from bpbench.experiments import REGISTRY

    keys: dict[str, Any] = dict(C.COMMON_KEYS)
    for info in REGISTRY.values():
        for k, key in info.options.items():
            keys.setdefault(k, key)
    keys.update({k: key for k, key in variants.option_keys().items() if k not in keys})
    out = []
    for name, key in keys.items():
        if not isinstance(key, C.Key):     # a bare validator: still a flag, with generic help
            key = C.Key(key, f"config key {name} (see README).")
        option = typer.Option(None, key.flag(name), help=key.help, rich_help_panel=key.panel,
                              metavar=None if key.boolean else key.metavar)
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                     annotation=Optional[bool] if key.boolean else Optional[str]))
    return out


def _opt(flag: str, help: str, panel: str, default: Any = None):
    """A `run` option in its help panel (Typer groups them under that heading)."""
    return typer.Option(default, flag, help=help, rich_help_panel=panel)


def _run_signature() -> inspect.Signature:
    P = inspect.Parameter
    head = [P("experiment", P.KEYWORD_ONLY, annotation=str,
              default=typer.Argument(..., help="Experiment name (see `bpbench list`)."))]
    head += [P(v, P.KEYWORD_ONLY, annotation=bool, default=_opt(f"--{v}", f"Shorthand for --variant {v}.",
                                                                "Variant", False)) for v in SHORTHANDS]
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
        P("trace_file", P.KEYWORD_ONLY, annotation=Optional[Path],
          default=_opt("--trace-file", "Write --profile-ops' Chrome/Perfetto trace here (implies "
                                       "--profile-ops; default with --output: beside it, NAME.trace.json).",
                       "Output")),
    ]
    return inspect.Signature(head + _config_params() + tail)


def run(*, experiment: str, config: Optional[Path], set_: List[str], trace: bool, as_json: bool,
        output: Optional[Path], profile_lines: bool, profile_ops: bool, trace_file: Optional[Path],
        **flags: Any) -> None:
    """Train one experiment under the harness and report loss, parameters, time and memory."""
    from bpbench import config as C
    from bpbench import experiments, run as runner

    shorthands = [v for v in SHORTHANDS if flags.pop(v)]
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
    flags.update(C.parse_set(set_, flags))
    info, cfg = runner.resolve(experiment, str(config) if config else None, flags)
    runner.pick_device(cfg["device"])  # fail fast on --device cuda without CUDA
    from bpbench import results
    data_file = cfg["data"] if cfg["data"].endswith((".csv", ".npz")) else None   # else a built-in set
    if output is not None:   # fail before training, not after it
        results.check_output_file(output, "--output", inputs=[config, data_file])
    profile_ops = profile_ops or trace_file is not None
    if profile_ops:
        from bpbench import opprofile
        trace_file = trace_file or opprofile.default_trace_file(output)
        if trace_file is not None:
            opprofile.check_trace_target(trace_file)
            if output is not None and results.same_file(trace_file, output):
                raise BadInput(f"--trace-file {trace_file} is also --output: one would overwrite the other")
            results.check_output_file(trace_file, "--trace-file", inputs=[config, data_file])

    log = runner.Printer("stderr" if as_json else "stdout")
    progress = None if as_json or not sys.stdout.isatty() else _LazyProgress(f"{experiment} {cfg['variant']}")
    try:
        result = runner.execute(info, cfg, profile_lines=profile_lines, profile_ops=profile_ops,
                                trace_file=trace_file,
                                on_log=log if cfg.get("log_every") else None,
                                on_epoch=progress.update if progress else None)
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


run.__signature__ = _run_signature()
app.command()(run)


def _check_applies(info, flags: dict[str, Any]) -> None:
    """An experiment-specific flag given to an experiment that does not take it is bad input."""
    unknown = sorted(k for k, v in flags.items() if v is not None and k not in info.keys)
    if unknown:
        raise BadInput(f"--{unknown[0].replace('_', '-')} does not apply to {info.name}")


def _emit(result: dict[str, Any], as_json: bool, output: Optional[Path], trace: bool = False) -> None:
    """Show the result first, then write --output: a failed write never hides what was computed."""
    from bpbench import results
    if as_json:
        sys.stdout.write(results.dumps(result))
        sys.stdout.flush()
    else:
        from bpbench import report
        report.print_run(result)
        if trace and "trace" in result:
            report.print_trace(result["trace"])
    if output is not None and as_json and _is_stdout(output):
        return   # --json --output /dev/stdout: one JSON object on stdout, not the same one twice
    if output is not None:
        try:
            results.write_json(output, result)
        except OSError as e:
            raise BadInput(f"cannot write --output {output}: {e.strerror or e}") from None
        if not as_json:
            print(f"result written to {output}")


def _is_stdout(path: Path) -> bool:
    try:
        a, b = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):   # no real stdout (a test runner)
        return str(path) in ("/dev/stdout", "/proc/self/fd/1")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


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
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
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
    experiment: str = typer.Argument(..., help="Experiment with a manual variant."),
    data: Optional[str] = typer.Option(None, "--data", help="Data set (per experiment)."),
    digits: Optional[str] = typer.Option(None, "--digits", help="mnist01: '0,1' or '0-9'."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="mnist01: torchvision MNIST root."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for init, data and the sampled elements."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Accepted for symmetry with run; must be > 0."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Must name the manual variant if given."),
    tol: float = typer.Option(1e-6, "--tol", help="Largest allowed relative error of any pair."),
    max_elements: int = typer.Option(256, "--max-elements",
                                     help="Per parameter, check at most N seeded random elements numerically (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Check the hand-written backward against autograd and float64 central differences."""
    from bpbench import experiments, gradcheck as gc, run as runner

    info = experiments.get(experiment)
    if "manual" not in info.variants:
        raise BadInput(f"{experiment} has no manual variant to check")
    if variant is not None and variant != "manual":
        experiments.check_variant(info, variant)
        raise BadInput(f"gradcheck checks the manual variant; {variant!r} has no hand-written backward")
    if not 0 < tol < float("inf"):     # an infinite tolerance would pass every check
        raise BadInput(f"--tol must be a positive finite number, got {tol}")
    if max_elements < 0:
        raise BadInput(f"--max-elements must be >= 0, got {max_elements}")
    flags = {"data": data, "digits": digits, "data_dir": data_dir, "seed": seed, "lr": lr, "variant": "manual"}
    _check_applies(info, flags)
    info, cfg = runner.resolve(experiment, None, flags)
    report = gc.check(info.load().gradcheck_case(cfg), tol=tol, max_elements=max_elements, seed=cfg["seed"])
    report["experiment"] = experiment
    if as_json:   # strict JSON: a NaN difference is written as null ("finite": false says why)
        from bpbench import results
        sys.stdout.write(results.dumps({"experiment": experiment, **report}))
    else:
        from bpbench import report as rep
        rep.print_gradcheck(report)
        broken = [c["param"] for c in report["checks"] if not c["finite"]]
        if broken:
            print(f"cannot check {', '.join(broken)}: a gradient or difference is NaN/inf "
                  "(values overflow float64?)")
    raise typer.Exit(0 if report["ok"] else 1)


FORMATS = ("table", "markdown", "json")


def _format(fmt: Optional[str], as_json: bool) -> str:
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"unknown --format {fmt!r} (choose from: {', '.join(FORMATS)})")
    if as_json and fmt not in (None, "json"):
        raise BadInput(f"--json and --format {fmt} contradict each other")
    return "json" if as_json else fmt or "table"


def _threshold(pct: Optional[float]) -> Optional[float]:
    """--fail-on-regression PCT as a fraction (None: no gate)."""
    if pct is None:
        return None
    if not (pct > 0 and pct < float("inf")):
        raise BadInput(f"--fail-on-regression must be a positive percentage, got {pct}")
    return pct / 100


def _baseline(spec: Optional[str], runs_dir: Path) -> Optional[dict[str, Any]]:
    if spec is None:
        return None
    from bpbench import document, saved
    path = saved.resolve(spec, runs_dir)
    doc = document.load(path)
    doc["source"] = f"last ({path.stem})" if spec == "last" else spec
    return doc


def _show(doc: dict[str, Any], fmt: str, wide: bool) -> None:
    from bpbench import report as rep, results
    if fmt == "json":
        sys.stdout.write(results.dumps(doc))
    elif fmt == "markdown":
        sys.stdout.write(rep.markdown(rep.comparison_blocks(doc, wide)))
    else:
        rep.print_comparison(doc, wide=wide)


def _plots(doc: dict[str, Any], out_dir: Path) -> None:
    from bpbench import plots
    if not plots.available():
        sys.stderr.write(f"note: {plots.PLOT_HINT}\n")
        return
    try:
        for p in plots.write_all(doc, out_dir):
            sys.stderr.write(f"plot: {p}\n")
    except OSError as e:
        raise BadInput(f"cannot write plots to {out_dir}: {e.strerror or e}") from None


def _verdict(doc: dict[str, Any], keep_going: bool, gate: bool) -> None:
    """The exit code: 1 when a cell failed, diverged or mismatched (unless --keep-going), 4 when a
    cell is slower than its baseline beyond the threshold and the noise (with --fail-on-regression)."""
    from bpbench import compare as cmp
    slow = cmp.regressions(doc) if gate else []
    for line in slow:
        sys.stderr.write(f"bpbench: regression: {line}\n")
    bad = cmp.failures(doc)
    if bad and not keep_going:
        fail(f"{len(bad)} of {len(doc['cells'])} cell(s) failed, diverged or mismatched: "
             f"{', '.join(c['key'] for c in bad[:3])}{' ...' if len(bad) > 3 else ''} "
             "(--keep-going exits 0 anyway)", EXIT_FAILED)
    if slow:
        sys.stderr.flush()
        raise SystemExit(EXIT_REGRESSION)


STUDIES = list(studies.REGISTRY)   # the help names every study the registry has, none by hand
RUNS_DIR = typer.Option(Path(".bpbench/runs"), "--runs-dir", envvar="BPBENCH_RUNS_DIR",
                        help="Where --save keeps comparisons and --baseline NAME|last finds them.")
FAIL_ON = typer.Option(None, "--fail-on-regression", metavar="PCT",
                       help="Exit 4 when a cell is slower than its baseline by more than PCT % and beyond the noise.")


@app.command()
def compare(
    targets: Optional[List[str]] = typer.Argument(
        None, help=f"Experiments, or a study: {' | '.join(STUDIES)} (default: the preset's experiments)."),
    device: List[str] = typer.Option([], "--device", help="cpu | cuda | all (repeatable; default: every available one)."),
    variant: List[str] = typer.Option([], "--variant", help="Only these variants (repeatable)."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="quick (CI smoke run) or full (the sources' settings). Default: quick; "
                               f"full when only studies are named ({', '.join(STUDIES)})."),
    repeat: int = typer.Option(1, "--repeat", help="Run every cell N times; every step of every run feeds the noise estimate."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Write results.json, results.csv and plots here."),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", help="Compare against a results.json, a name saved with --save, or 'last'."),
    fail_on_regression: Optional[float] = FAIL_ON,
    keep_going: bool = typer.Option(False, "--keep-going",
                                    help="Exit 0 even when cells failed, diverged or mismatched (they are still listed)."),
    save: Optional[str] = typer.Option(None, "--save", metavar="NAME",
                                       help="Keep this comparison under --runs-dir as NAME (with commit, time, machine)."),
    runs_dir: Path = RUNS_DIR,
    widths: Optional[str] = typer.Option(None, "--widths", help="width study: comma-separated H values."),
    steps: Optional[int] = typer.Option(None, "--steps", help="width study: Adam steps per cell."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="gd-sgd: e.g. full,2048,256,32."),
    updates: Optional[int] = typer.Option(None, "--updates", help="gd-sgd, scaling: updates per cell."),
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU cells once per thread count, e.g. 1,2."),
    nprocs: Optional[str] = typer.Option(None, "--nprocs", help="scaling: ranks per cell, e.g. 1,2 "
                                                                "(default: 1, 2, 4, ... up to the cores or GPUs)."),
    set_: List[str] = typer.Option([], "--set", help="Config override for every cell: --set key=value."),
    wide: bool = typer.Option(False, "--wide", help="All columns (setup, train time, throughput, ...), however wide."),
    fmt: Optional[str] = typer.Option(None, "--format", help="table (default), markdown or json."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison document as JSON (--format json)."),
) -> None:
    """Run the experiment matrix (experiment x variant x device x batching) and show one table per experiment."""
    import signal

    from bpbench import compare as cmp, report, results, saved
    from bpbench import config as C

    fmt = _format(fmt, as_json)
    if repeat <= 0:
        raise BadInput(f"--repeat must be a positive integer, got {repeat}")
    if steps is not None:
        C.positive_int("--steps", steps)
    if updates is not None:
        C.positive_int("--updates", updates)
    widths_list = C.int_list("--widths", widths) if widths else None
    sizes = [C.batch_size("--batch-sizes", b.strip()) for b in batch_sizes.split(",")] if batch_sizes else None
    if save is not None:
        saved.check_name(save)
        results.ensure_writable_dir(runs_dir, "--save")
    threshold = _threshold(fail_on_regression)
    if threshold is not None and baseline is None:
        raise BadInput("--fail-on-regression needs --baseline (what would be a regression?)")
    base = _baseline(baseline, runs_dir)
    if output_dir is not None:
        results.ensure_writable_dir(output_dir, "--output-dir")
    if preset is None:
        preset = cmp.default_preset(targets or [])
    preset_cfg = cmp.load_preset(preset)
    opts = {"widths": widths_list, "steps": steps, "batch_sizes": sizes, "updates": updates,
            "nprocs": C.int_list("--nprocs", nprocs) if nprocs else None}
    from bpbench import run as runner
    cuda_ok = runner.cuda_available()
    devices, unavailable, notes = cmp.resolve_devices(device, cuda_ok)
    cells = cmp.plan(targets or [], devices, variant, preset_cfg, opts, C.parse_set(set_),
                     [C.thread_count("--threads", n) for n in C.int_list("--threads", threads)] if threads else None)
    from bpbench import envinfo
    comparison = cmp.Comparison(preset, cells, notes, output_dir, base, envinfo.collect(),
                                threshold or cmp.noise.MIN_CHANGE)

    def on_sigterm(signum, frame):   # SIGTERM stops a comparison exactly like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    progress = report.CellProgress()
    interrupted = False
    try:
        cmp.execute(comparison, set(unavailable), repeat, progress)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous)
    doc = comparison.doc
    _show(doc, fmt, wide)
    if output_dir is not None and not interrupted:
        _plots(doc, output_dir)
    if output_dir is not None:
        sys.stderr.write(f"results: {output_dir / 'results.json'}, {output_dir / 'results.csv'}\n")
    if interrupted:
        fail(f"interrupted: kept {len(doc['cells'])} finished cell(s)"
             + (f" in {output_dir}" if output_dir else ""), EXIT_INTERRUPTED)
    if save is not None:
        sys.stderr.write(f"saved as {save}: {saved.save(doc, save, runs_dir)}\n")
    _verdict(doc, keep_going, threshold is not None)


@app.command()
def peak(
    device: str = typer.Option("cpu", "--device", help="cpu | cuda."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, float64, bfloat16, float16."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: torch's)."),
    remeasure: bool = typer.Option(False, "--remeasure", help="Measure again; the cache keeps the higher figure."),
    as_json: bool = typer.Option(False, "--json", help="Print the entry as JSON."),
) -> None:
    """The machine's measured matrix-product peak (GFLOP/s), the denominator of "% of peak"."""
    from bpbench import config as C, peak as pk, run as runner

    if device not in ("cpu", "cuda"):
        raise BadInput(f"unknown device {device!r} (choose from: cpu, cuda)")
    if threads is not None:
        C.thread_count("--threads", threads)
    dev = runner.pick_device(device)
    entry = pk.get(dev, pk.dtype_of(dtype), threads, remeasure=remeasure)
    if as_json:
        typer.echo(json.dumps(entry, indent=2))
        return
    from bpbench import report as rep
    rep.print_peak(entry)


@app.command()
def report(
    results_file: Path = typer.Argument(
        ..., help="A results.json written by `bpbench compare`, a saved comparison, or one `bpbench run --output` file."),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", help="Add change columns against a results.json, a saved name, or 'last'."),
    fail_on_regression: Optional[float] = FAIL_ON,
    runs_dir: Path = RUNS_DIR,
    plot_dir: Optional[Path] = typer.Option(None, "--plot-dir", help="Also write the PNG plots here."),
    wide: bool = typer.Option(False, "--wide", help="All columns, however wide."),
    fmt: Optional[str] = typer.Option(None, "--format", help="table (default), markdown (to paste in a PR) or json."),
    as_json: bool = typer.Option(False, "--json", help="Print the (re-derived) document as JSON (--format json)."),
) -> None:
    """Render a saved comparison again (tables, optional baseline columns and plots)."""
    from bpbench import compare as cmp, document, results

    fmt = _format(fmt, as_json)
    threshold = _threshold(fail_on_regression)
    if threshold is not None and baseline is None:
        raise BadInput("--fail-on-regression needs --baseline (what would be a regression?)")
    doc = document.load(results_file)
    base = _baseline(baseline, runs_dir)
    if plot_dir is not None:
        results.ensure_writable_dir(plot_dir, "--plot-dir")
    was = doc.pop("baseline", None)
    cmp.refresh(doc, base, threshold or cmp.noise.MIN_CHANGE)
    if base is None and was and was.get("source"):
        doc["notes"].append(f"compared with baseline {was['source']} when it ran: --baseline shows the changes again")
    _show(doc, fmt, wide)
    if plot_dir is not None:
        _plots(doc, plot_dir)
    _verdict(doc, keep_going=True, gate=threshold is not None)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
