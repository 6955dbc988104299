"""`bpbench compare` and `bpbench report`: many runs side by side, saved, gated against a baseline.
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from bpbench import studies
from bpbench.cli import completion as complete
from bpbench.cli.common import FORMATS, _format, app, fail
from bpbench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REGRESSION, BadInput


def _min_change() -> float:
    from bpbench.results.noise import MIN_CHANGE   # numpy: only once a comparison is read
    return MIN_CHANGE


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
    from bpbench.results import saved
    path = saved.resolve(spec, runs_dir)
    doc = saved.load(path)
    doc["source"] = f"last ({path.stem})" if spec == "last" else spec
    return doc


def _show(doc: dict[str, Any], fmt: str, wide: bool) -> None:
    from bpbench import report as rep
    from bpbench.comparison import sections
    from bpbench.results import files as results
    if fmt == "json":
        sys.stdout.write(results.dumps(doc))
    elif fmt == "markdown":
        sys.stdout.write(rep.markdown(rep.comparison_blocks(doc, wide, sections.blocks(doc))))
    else:
        rep.print_comparison(doc, wide=wide, sections=sections.blocks(doc))


def _plots(doc: dict[str, Any], out_dir: Path) -> None:
    from bpbench.comparison import sections
    from bpbench.report import plots
    if not plots.available():
        sys.stderr.write(f"note: {plots.PLOT_HINT}\n")
        return
    try:
        for p in plots.write_all(doc, out_dir, sections.plots(doc)):
            sys.stderr.write(f"plot: {p}\n")
    except OSError as e:
        raise BadInput(f"cannot write plots to {out_dir}: {e.strerror or e}") from None


def _verdict(doc: dict[str, Any], keep_going: bool, gate: bool) -> None:
    """The exit code: 1 when a cell failed, diverged or mismatched (unless --keep-going), 4 when a
    cell is slower than its baseline beyond the threshold and the noise (with --fail-on-regression)."""
    from bpbench import comparison as cmp
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
                       help="Exit 4 when a cell is slower than its baseline (with --metric instructions: executes "
                            "more instructions per step) by more than PCT % and beyond the noise.")


def compare(
    targets: Optional[List[str]] = typer.Argument(
        None, help=f"Experiments, or a study: {' | '.join(STUDIES)} (default: the preset's experiments).",
        autocompletion=complete.targets),
    device: List[str] = typer.Option([], "--device", help="cpu | cuda | all (repeatable; default: every available one)."),
    variant: List[str] = typer.Option([], "--variant", help="Only these variants (repeatable).",
                                      autocompletion=complete.variants),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="quick (CI smoke run) or full (the sources' settings). Default: quick; "
                               f"full when only studies are named ({', '.join(STUDIES)})."),
    repeat: int = typer.Option(1, "--repeat", help="Run every cell N times; every step of every run feeds the noise estimate."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Write results.json, results.csv and plots here."),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", help="Compare against a results.json, a name saved with --save, or 'last'."),
    fail_on_regression: Optional[float] = FAIL_ON,
    metric: str = typer.Option("time", "--metric", metavar="time|instructions",
                               help="time (default) or instructions: every cell under callgrind (needs valgrind; CPU "
                                    "cells), counted instructions per step, which the gate then compares."),
    keep_going: bool = typer.Option(False, "--keep-going",
                                    help="Exit 0 even when cells failed, diverged or mismatched (they are still listed)."),
    save: Optional[str] = typer.Option(None, "--save", metavar="NAME",
                                       help="Keep this comparison under --runs-dir as NAME (with commit, time, machine)."),
    runs_dir: Path = RUNS_DIR,
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU cells once per thread count, e.g. 1,2."),
    set_: List[str] = typer.Option([], "--set", help="Config override for every cell: --set key=value."),
    wide: bool = typer.Option(False, "--wide", help="All columns (setup, train time, throughput, ...), however wide."),
    fmt: Optional[str] = typer.Option(None, "--format", help="table (default), markdown or json."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison document as JSON (--format json)."),
    force: bool = typer.Option(
        False, "--force", help="Let --output-dir and --save replace files that are not bpbench's "
                               "(never bpbench's own files or the Python running it)."),
    **study_options: Any,
) -> None:
    """Run the experiment matrix (experiment x variant x device x batching) and show one table per experiment."""
    from bpbench import api
    from bpbench import config as C
    from bpbench.report import CellProgress

    fmt = _format(fmt, as_json)
    if repeat <= 0:
        raise BadInput(f"--repeat must be a positive integer, got {repeat}")
    opts = _study_values(study_options)
    threshold, base = _checked_baseline(fail_on_regression, baseline, runs_dir, save)
    _check_outputs(output_dir, save, runs_dir, force)
    progress = CellProgress()
    interrupted = None
    with _sigterm_as_interrupt():
        try:
            result = api.compare(*(targets or []), devices=device, variants=variant, preset=preset, repeat=repeat,
                                 output_dir=output_dir, baseline=base, threshold=threshold,
                                 overrides=C.parse_set(set_), threads=_thread_counts(threads), on_cell=progress,
                                 metric=metric, on_warning=lambda w: sys.stderr.write(f"bpbench: warning: {w}\n"),
                                 **opts)
        except api.ComparisonInterrupted as e:
            result, interrupted = e.comparison, True
        finally:
            progress.close()
    _finish(result.doc, fmt, wide, output_dir, interrupted, save, runs_dir)
    _verdict(result.doc, keep_going, threshold is not None)


def _study_parameters() -> list[inspect.Parameter]:
    """One option per study option the registry declares (--widths, --updates, ...)."""
    out = []
    for name, (key, owners) in studies.options().items():
        option = typer.Option(None, key.flag(name), help=f"{', '.join(owners)}: {key.help}",
                              rich_help_panel=key.panel, metavar=key.value_name)
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[str]))
    return out


def _study_values(given: dict[str, Any]) -> dict[str, Any]:
    """The study options given, each checked by its declared validator."""
    keys = studies.options()
    return {k: keys[k][0](f"--{k.replace('_', '-')}", v) for k, v in given.items() if v is not None}


def _thread_counts(threads: Optional[str]) -> Optional[list[int]]:
    from bpbench import config as C
    return [C.thread_count("--threads", n) for n in C.int_list("--threads", threads)] if threads else None


def _checked_baseline(fail_on_regression, baseline, runs_dir: Path, save):
    """(the regression threshold, the baseline document), both checked before any cell runs."""
    from bpbench.results import saved
    threshold = _threshold(fail_on_regression)
    if threshold is not None and baseline is None:
        raise BadInput("--fail-on-regression needs --baseline (what would be a regression?)")
    if save is not None:
        saved.check_name(save)
    return threshold, _baseline(baseline, runs_dir)


def _check_outputs(output_dir: Optional[Path], save: Optional[str], runs_dir: Path, force: bool) -> None:
    """Before any cell runs: every file compare will write can be written and replaces nothing
    bpbench did not write (a FIFO or a directory named results.csv, another program's width.png)
    unless --force."""
    from bpbench.results import files as results
    if save is not None:
        results.ensure_writable_dir(runs_dir, "--save")
        results.check_output_file(runs_dir / f"{save}.json", "--save", force=force)
    if output_dir is not None:
        results.ensure_writable_dir(output_dir, "--output-dir")
        plots = sorted(output_dir.glob("*.png")) if force else []   # which ones it draws depends on the cells
        for path in [output_dir / "results.json", output_dir / "results.csv", *plots]:
            results.check_output_file(path, "--output-dir file", force=force)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops a comparison exactly like Ctrl-C: the finished cells are kept."""
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _finish(doc: dict[str, Any], fmt: str, wide: bool, output_dir: Optional[Path], interrupted: bool,
            save: Optional[str], runs_dir: Path) -> None:
    """Show the comparison, draw its plots, say where its files are, and save it."""
    from bpbench.results import saved
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


compare.__signature__ = inspect.signature(compare).replace(parameters=[
    p for p in inspect.signature(compare).parameters.values() if p.kind != p.VAR_KEYWORD] + _study_parameters())
app.command()(compare)


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
    fmt: Optional[str] = typer.Option(None, "--format", help="table (default), markdown (to paste in a PR), json, "
                                      "or a dashboard's JSON: github-action-benchmark (customSmallerIsBetter), "
                                      "bencher (Bencher Metric Format)."),
    as_json: bool = typer.Option(False, "--json", help="Print the (re-derived) document as JSON (--format json)."),
) -> None:
    """Render a saved comparison again (tables, optional baseline columns and plots), or export it."""
    from bpbench import comparison as cmp
    from bpbench.report.export import EXPORTERS
    from bpbench.results import files as results
    from bpbench.results import saved

    fmt = _format(fmt, as_json, FORMATS + tuple(EXPORTERS))
    threshold = _threshold(fail_on_regression)
    if threshold is not None and baseline is None:
        raise BadInput("--fail-on-regression needs --baseline (what would be a regression?)")
    doc = saved.load(results_file)
    base = _baseline(baseline, runs_dir)
    if plot_dir is not None:
        results.ensure_writable_dir(plot_dir, "--plot-dir")
    was = doc.pop("baseline", None)
    cmp.refresh(doc, base, threshold or _min_change())
    if base is None and was and was.get("source"):
        doc["notes"].append(f"compared with baseline {was['source']} when it ran: --baseline shows the changes again")
    if fmt in EXPORTERS:
        sys.stdout.write(results.dumps(EXPORTERS[fmt](doc)))
    else:
        _show(doc, fmt, wide)
    if plot_dir is not None:
        _plots(doc, plot_dir)
    _verdict(doc, keep_going=True, gate=threshold is not None)

