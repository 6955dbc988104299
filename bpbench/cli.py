"""The bpbench command line: a thin Typer layer over `bpbench.run`, `gradcheck` and `compare`.

Keep torch out of this module's imports: `bpbench --help` and `bpbench list` must start fast.
Every error a user can cause ends in one line on stderr and exit code 2 (see errors.py).
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from bpbench import __version__
from bpbench.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, BadInput, RunFailed

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
    """Turns usage errors, BadInput and Ctrl-C into one line on stderr and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
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
        except (typer.Abort, KeyboardInterrupt):
            fail("interrupted", EXIT_INTERRUPTED)
        raise SystemExit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
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
        help_ = getattr(key, "help", f"config key {name} (see README).")
        panel = getattr(key, "panel", "Training")
        flag = key.flag(name) if hasattr(key, "flag") else f"--{name.replace('_', '-')}"
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                     default=typer.Option(None, *flag.split("/", 1)[:1],
                                                          *(flag.split("/", 1)[1:]),
                                                          help=help_, rich_help_panel=panel)
                                     if not getattr(key, "boolean", False) else
                                     typer.Option(None, flag, help=help_, rich_help_panel=panel),
                                     annotation=Optional[bool] if getattr(key, "boolean", False) else Optional[str]))
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
    ]
    return inspect.Signature(head + _config_params() + tail)


def run(*, experiment: str, config: Optional[Path], set_: List[str], trace: bool, as_json: bool,
        output: Optional[Path], profile_lines: bool, **flags: Any) -> None:
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
    flags.update(C.parse_set(set_))
    info, cfg = runner.resolve(experiment, str(config) if config else None, flags)
    runner.pick_device(cfg["device"])  # fail fast on --device cuda without CUDA
    if output:   # fail before training, not after it
        from bpbench import results
        results.ensure_writable_dir(output.parent, "--output")

    log = runner.Printer("stderr" if as_json else "stdout")
    progress = None if as_json or not sys.stdout.isatty() else _LazyProgress(f"{experiment} {cfg['variant']}")
    try:
        result = runner.execute(info, cfg, profile_lines=profile_lines,
                                on_log=log if cfg.get("log_every") else None,
                                on_epoch=progress.update if progress else None)
    finally:
        if progress:
            progress.close()
    if result is None:   # a rank other than 0 under torchrun: rank 0 reports
        return
    _emit(result, as_json, output, trace)   # a diverged run's partial result is shown and written too
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
    if output:
        try:
            results.write_json(output, result)
        except OSError as e:
            raise BadInput(f"cannot write --output {output}: {e.strerror or e}") from None
        if not as_json:
            print(f"result written to {output}")


class _LazyProgress:
    """A rich progress bar on stderr that appears only once a run has lasted about a second."""

    def __init__(self, label: str, after_s: float = 1.0):
        self.label, self.after_s = label, after_s
        self.t0 = time.perf_counter()
        self.bar = None
        self.last = 0.0

    def update(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        if self.bar is None:
            if now - self.t0 < self.after_s:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
            self.bar = Progress("[progress.description]{task.description}", BarColumn(),
                                MofNCompleteColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command()
def gradcheck(
    experiment: str = typer.Argument(..., help="Experiment with a manual variant."),
    data: Optional[str] = typer.Option(None, "--data", help="Data set (per experiment)."),
    digits: Optional[str] = typer.Option(None, "--digits", help="mnist01: '0,1' or '0-9'."),
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
    if not tol > 0:
        raise BadInput(f"--tol must be positive, got {tol}")
    if max_elements < 0:
        raise BadInput(f"--max-elements must be >= 0, got {max_elements}")
    flags = {"data": data, "digits": digits, "seed": seed, "lr": lr, "variant": "manual"}
    _check_applies(info, flags)
    info, cfg = runner.resolve(experiment, None, flags)
    report = gc.check(info.load().gradcheck_case(cfg), tol=tol, max_elements=max_elements, seed=cfg["seed"])
    report["experiment"] = experiment
    if as_json:
        typer.echo(json.dumps({"experiment": experiment, **report}, indent=2))
    else:
        from bpbench import report as rep
        rep.print_gradcheck(report)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command()
def compare(
    targets: Optional[List[str]] = typer.Argument(
        None, help="Experiments, or a study: width | gd-sgd | scaling (default: the preset's experiments)."),
    device: List[str] = typer.Option([], "--device", help="cpu | cuda | all (repeatable; default: every available one)."),
    variant: List[str] = typer.Option([], "--variant", help="Only these variants (repeatable)."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="quick (CI smoke run) or full (the sources' settings). Default: quick; "
                               "full when only studies are named (width, gd-sgd)."),
    repeat: int = typer.Option(1, "--repeat", help="Run every cell N times; figures are medians."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Write results.json, results.csv and plots here."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="A saved results.json to compare against."),
    widths: Optional[str] = typer.Option(None, "--widths", help="width study: comma-separated H values."),
    steps: Optional[int] = typer.Option(None, "--steps", help="width study: Adam steps per cell."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="gd-sgd: e.g. full,2048,256,32."),
    updates: Optional[int] = typer.Option(None, "--updates", help="gd-sgd, scaling: updates per cell."),
    nprocs: Optional[str] = typer.Option(None, "--nprocs", help="scaling: ranks per cell, e.g. 1,2 "
                                                                "(default: 1, 2, 4, ... up to the cores or GPUs)."),
    set_: List[str] = typer.Option([], "--set", help="Config override for every cell: --set key=value."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison document as JSON."),
) -> None:
    """Run the experiment matrix (experiment x variant x device x batching) and show one table."""
    from bpbench import compare as cmp, plots, report, results
    from bpbench import config as C

    if repeat <= 0:
        raise BadInput(f"--repeat must be a positive integer, got {repeat}")
    if steps is not None:
        C.positive_int("--steps", steps)
    if updates is not None:
        C.positive_int("--updates", updates)
    widths_list = C.int_list("--widths", widths) if widths else None
    sizes = [C.batch_size("--batch-sizes", b.strip()) for b in batch_sizes.split(",")] if batch_sizes else None
    base = cmp.load_comparison(baseline) if baseline else None
    if output_dir is not None:
        results.ensure_writable_dir(output_dir, "--output-dir")
    if preset is None:
        preset = cmp.default_preset(targets or [])
    preset_cfg = cmp.load_preset(preset)
    from bpbench import run as runner
    cuda_ok = runner.cuda_available()
    devices, unavailable, notes = cmp.resolve_devices(device, cuda_ok)
    cells = cmp.plan(targets or [], devices, variant, preset_cfg, widths_list, steps, sizes, updates,
                     C.parse_set(set_), C.int_list("--nprocs", nprocs) if nprocs else None)
    from bpbench import envinfo
    comparison = cmp.Comparison(preset, cells, notes, output_dir, base, envinfo.collect())

    def on_cell(i, n, cell, rec, seconds):
        if rec is None:
            sys.stderr.write(f"[{i}/{n}] {cell.key} ... ")
        else:
            sys.stderr.write(f"{rec['status']} ({seconds:.1f} s)" + (f": {rec['error']}" if rec["error"] else "") + "\n")
        sys.stderr.flush()

    interrupted = False
    try:
        cmp.execute(comparison, cells, set(unavailable), repeat, on_cell)
    except KeyboardInterrupt:
        interrupted = True
        sys.stderr.write("interrupted\n")
    doc = comparison.doc
    if as_json:
        sys.stdout.write(results.dumps(doc))
    else:
        report.print_comparison(doc)
    if output_dir is not None and not interrupted:
        if plots.available():
            for p in plots.write_all(doc, output_dir):
                sys.stderr.write(f"plot: {p}\n")
        else:
            sys.stderr.write(f"note: {plots.PLOT_HINT}\n")
    if output_dir is not None:
        sys.stderr.write(f"results: {output_dir / 'results.json'}, {output_dir / 'results.csv'}\n")
    if interrupted:
        fail(f"interrupted: kept {len(doc['cells'])} finished cell(s)"
             + (f" in {output_dir}" if output_dir else ""), EXIT_INTERRUPTED)


@app.command()
def report(
    results_file: Path = typer.Argument(..., help="A results.json written by `bpbench compare --output-dir`."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Add change columns against this comparison."),
    plot_dir: Optional[Path] = typer.Option(None, "--plot-dir", help="Also write the PNG plots here."),
    as_json: bool = typer.Option(False, "--json", help="Print the (re-derived) document as JSON."),
) -> None:
    """Render a saved comparison again (tables, optional baseline columns and plots)."""
    from bpbench import compare as cmp, plots, report as rep, results

    doc = cmp.load_comparison(results_file)
    if baseline:
        cmp.derive(doc["cells"], cmp.load_comparison(baseline))
    if as_json:
        sys.stdout.write(results.dumps(doc))
    else:
        rep.print_comparison(doc)
    if plot_dir is not None:
        results.ensure_writable_dir(plot_dir, "--plot-dir")
        if not plots.available():
            sys.stderr.write(f"note: {plots.PLOT_HINT}\n")
        else:
            for p in plots.write_all(doc, plot_dir):
                sys.stderr.write(f"plot: {p}\n")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
