"""The public Python surface: `bpbench.run(...)` and `bpbench.compare(...)`, for notebooks and
scripts. The command line is a thin layer over exactly these two.

    import bpbench
    r = bpbench.run("linreg", "manual", epochs=200)
    r.final_loss, r.step_s            # figures
    r                                 # renders as bpbench's table in Jupyter (and with rich.print)
    c = bpbench.compare("linreg", variants=["manual", "autograd"], preset="quick")
    c.plot("plots/")                  # the PNGs `compare --output-dir` writes

Both return objects over the schema's dicts (bpbench.results.schema): `.to_dict()` is exactly what
`run --json` / results.json hold. Torch is imported only when something trains.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Iterable

from bpbench.errors import BadInput

__all__ = ["Run", "Comparison", "ComparisonInterrupted", "run", "compare", "resolve", "plan", "execute",
           "print_run", "run_view", "graph"]


class ComparisonInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a comparison; `.comparison` holds the cells that finished."""

    def __init__(self, comparison: "Comparison"):
        super().__init__("interrupted")
        self.comparison = comparison


class _Rendered:
    """Shows itself as bpbench's terminal table: in Jupyter (HTML), with rich.print, and as text."""

    def _print(self, console) -> None:
        raise NotImplementedError

    def __rich_console__(self, console, options):
        from rich.console import Console
        capture = Console(width=options.max_width, record=True, file=io.StringIO(), force_terminal=False)
        self._print(capture)
        from rich.text import Text
        yield Text.from_ansi(capture.export_text(styles=True))

    def _repr_html_(self) -> str:
        from rich.console import Console
        console = Console(width=110, record=True, file=io.StringIO())
        self._print(console)
        return console.export_html(inline_styles=True, code_format="<pre style='font-size:12px'>{code}</pre>")

    def __str__(self) -> str:
        from rich.console import Console
        console = Console(width=100, file=io.StringIO(), force_terminal=False, color_system=None)
        self._print(console)
        return console.file.getvalue()


class Run(_Rendered):
    """One run's result (schema: results.schema.RunResult), with its table and its plots."""

    def __init__(self, result: dict[str, Any]):
        self.result = result

    def to_dict(self) -> dict[str, Any]:
        return self.result

    def __getitem__(self, key: str) -> Any:
        return self.result[key]

    @property
    def status(self) -> str:
        return self.result["status"]

    @property
    def final_loss(self) -> float | None:
        return self.result["final"]["loss"]

    @property
    def params(self) -> dict[str, Any] | None:
        return self.result["final"]["params"]

    @property
    def step_s(self) -> float | None:
        """The steady-state step time's median, in seconds."""
        return self.result["timing"]["step_s_median"]

    def _print(self, console) -> None:
        print_run(self.result, console)

    def plot(self, out_dir: str | Path) -> list[Path]:
        """The loss curve (and step-time bars) as PNGs in `out_dir`; needs matplotlib."""
        from bpbench.results.saved import as_comparison
        return Comparison(as_comparison(self.result)).plot(out_dir)

    def __repr__(self) -> str:
        r = self.result
        return (f"<bpbench.Run {r['experiment']}/{r['variant']}/{r['device']} {r['status']}: "
                f"loss {self.final_loss}, step {self.step_s} s>")


class Comparison(_Rendered):
    """A comparison document (schema: results.schema.Comparison), derived, with tables and plots."""

    def __init__(self, doc: dict[str, Any]):
        self.doc = doc

    def to_dict(self) -> dict[str, Any]:
        return self.doc

    @property
    def cells(self) -> list[dict[str, Any]]:
        return self.doc["cells"]

    def _print(self, console) -> None:
        from bpbench.comparison import sections
        from bpbench.report import print_comparison
        print_comparison(self.doc, console, sections=sections.blocks(self.doc))

    def markdown(self) -> str:
        from bpbench.comparison import sections
        from bpbench.report import comparison_blocks, markdown
        return markdown(comparison_blocks(self.doc, sections=sections.blocks(self.doc)))

    def plot(self, out_dir: str | Path) -> list[Path]:
        """Every PNG the comparison has data for, written into `out_dir`; needs matplotlib."""
        from bpbench.comparison import sections
        from bpbench.report import plots
        if not plots.available():
            raise BadInput(plots.PLOT_HINT)
        return plots.write_all(self.doc, Path(out_dir), sections.plots(self.doc))

    def __repr__(self) -> str:
        return f"<bpbench.Comparison preset {self.doc['preset']}: {len(self.cells)} cells>"


def run_view(result: dict[str, Any]):
    """What the run's experiment adds to the report of `result` (its rows, tables, metric names)."""
    from bpbench import experiments
    from bpbench.report.run import RunView
    exp = experiments.get(result["experiment"]).load()
    return RunView(rows=lambda metrics: exp.run_rows(result, metrics), tables=exp.run_tables(result),
                   metric_names=exp.metric_names)


def print_run(result: dict[str, Any], console=None) -> None:
    """The run's table, with its experiment's own rows and tables."""
    from bpbench import report
    report.print_run(result, console, run_view(result))


METRICS = ("time", "instructions")


def execute(info, cfg: dict[str, Any], *, profile_lines: bool = False, profile_ops: bool = False,
            trace_file=None, on_log: Callable[[str], None] | None = None,
            on_epoch: Callable[[int, int, dict | None], None] | None = None,
            metric: str = "time") -> dict[str, Any] | None:
    """Train once and return the result dict (status "ok", "diverged" or "interrupted").

    A distributed variant (ddp, allreduce) trains with N ranks (measure.distributed): rank 0's
    merged result comes back here; under torchrun, ranks other than 0 return None. With
    metric="instructions" the run trains again under callgrind (measure.instructions), which
    counts the instructions of its steady steps.
    """
    from bpbench import variants
    if check_metric(metric, cfg, profile_lines or profile_ops) == "instructions":
        from bpbench.measure import instructions
        return instructions.execute(info.name, instructions.counted_config(cfg), on_log)
    if variants.get(cfg["variant"]).distributed:
        _check_loglevel()
        from bpbench.measure import distributed
        return distributed.execute(info, cfg, profile_lines=profile_lines, profile_ops=profile_ops, on_log=on_log)
    from bpbench.measure.run import execute_in_process
    return execute_in_process(info, cfg, profile_lines=profile_lines, profile_ops=profile_ops,
                              trace_file=trace_file, on_log=on_log, on_epoch=on_epoch)


def check_metric(metric: str, cfg: dict[str, Any] | None = None, profiling: bool = False) -> str:
    """`metric`, once known and measurable for this run (cfg); raises BadInput."""
    if metric not in METRICS:
        raise BadInput(f"unknown --metric {metric!r} (choose from: {', '.join(METRICS)})")
    if metric == "instructions":
        from bpbench import variants
        from bpbench.measure import instructions
        if profiling:
            raise BadInput("--metric instructions runs under callgrind: profile with --metric time")
        instructions.check_available()
        if cfg is not None:
            instructions.check_run(cfg, variants.get(cfg["variant"]).distributed)
    return metric


def _check_loglevel() -> None:
    """torch elastic hands $LOGLEVEL to logging as it is, on import: a level logging does not know
    ("info", "verbose") would end a data-parallel run in a traceback."""
    import logging
    import os
    level = os.environ.get("LOGLEVEL")
    if level is not None and level not in logging.getLevelNamesMapping():
        raise BadInput(f"LOGLEVEL={level[:40]!r} is not a logging level (torch elastic reads it): use one of "
                       f"{', '.join(logging.getLevelNamesMapping())}, or unset it")


def resolve(experiment: str, config: str | Path | None = None, **flags: Any):
    """(experiment's registry entry, the validated config) of a run; raises BadInput, also for
    --device cuda where CUDA is missing (before anything trains)."""
    from bpbench.measure import run as runner
    info, cfg = runner.resolve(experiment, str(config) if config else None, flags)
    runner.pick_device(cfg["device"])
    return info, cfg


def run(experiment: str, variant: str | None = None, *, config: str | Path | None = None,
        profile_lines: bool = False, profile_ops: bool = False, trace_file: str | Path | None = None,
        on_log: Callable[[str], None] | None = None, on_epoch: Callable | None = None,
        metric: str = "time", **settings: Any) -> Run | None:
    """Train `experiment` once under the harness; `settings` are config keys (epochs=200, lr=0.01,
    device="cuda", seed=1, ...), checked as `bpbench run`'s flags are; metric="instructions"
    counts instructions under callgrind. Raises BadInput on bad input."""
    info, cfg = resolve(experiment, config, **settings, **({"variant": variant} if variant else {}))
    result = execute(info, cfg, profile_lines=profile_lines, profile_ops=profile_ops or trace_file is not None,
                     trace_file=Path(trace_file) if trace_file else None,
                     on_log=on_log if cfg.get("log_every") else None, on_epoch=on_epoch, metric=metric)
    return None if result is None else Run(result)


def _counted_devices(devices: list[str]) -> list[str]:
    """--metric instructions counts CPU instructions: CPU cells unless --device says otherwise
    (CUDA cells are then listed as unavailable)."""
    if devices == ["cuda"]:
        raise BadInput("--metric instructions counts CPU instructions: use --device cpu "
                       "(callgrind does not see the GPU's work)")
    return devices or ["cpu"]


def graph(experiment: str, variant: str | None = None, *, config: str | Path | None = None, **settings: Any):
    """The computational graph of one training step of `experiment` (a bpbench.graph.model.Graph):
    the hand-written layers' step, or the graph autograd builds, by `variant` (the experiment's
    default when None); `settings` are config keys, as for run (data="apple-orange", ...)."""
    from bpbench import variants
    info, cfg = resolve(experiment, config, **settings, **({"variant": variant} if variant else {}))
    if variants.get(cfg["variant"]).world != cfg["variant"]:
        raise BadInput(f"graph draws the step of the variants {', '.join(variants.worlds())}; "
                       f"{cfg['variant']} runs the {variants.get(cfg['variant']).world} graph: "
                       f"--variant {variants.get(cfg['variant']).world} draws it")
    from bpbench.graph import step
    from bpbench.measure.run import pick_device
    return step.experiment_graph(info, cfg, pick_device(cfg["device"]))


def plan(targets: Iterable[str] = (), *, devices: Iterable[str] = (), variants: Iterable[str] = (),
         preset: str | None = None, study_options: dict[str, Any] | None = None,
         overrides: dict[str, Any] | None = None, threads: list[int] | None = None):
    """(preset name, cells, devices that cannot run here, notes): what `compare` would run."""
    from bpbench import comparison as cmp
    from bpbench.measure.run import cuda_available
    targets = list(targets)
    preset = preset or cmp.default_preset(targets)
    devices_planned, unavailable, notes = cmp.resolve_devices(list(devices), cuda_available())
    cells = cmp.plan(targets, devices_planned, list(variants), cmp.load_preset(preset),
                     study_options or {}, overrides or {}, threads)
    return preset, cells, unavailable, notes


def compare(*targets: str, devices: Iterable[str] = (), variants: Iterable[str] = (), preset: str | None = None,
            repeat: int = 1, output_dir: str | Path | None = None, baseline: dict[str, Any] | None = None,
            threshold: float | None = None, overrides: dict[str, Any] | None = None,
            threads: list[int] | None = None, on_cell=None, metric: str = "time",
            on_warning: Callable[[str], None] | None = None, **study_options: Any) -> Comparison:
    """Run the experiment matrix or a study (`compare("width", widths=[500, 200000])`), each cell in
    a fresh process; returns the derived comparison, its cells measured by `metric` (time, or
    instructions under callgrind: CPU cells only). Ctrl-C raises KeyboardInterrupt after the
    finished cells are kept (in `output_dir`, when given). `on_warning` hears, before any cell
    runs, that another comparison is writing into `output_dir` (the document's notes say it too)."""
    from bpbench import comparison as cmp
    from bpbench.measure import env
    from bpbench.results.noise import MIN_CHANGE
    if repeat <= 0:
        raise BadInput(f"repeat must be a positive integer, got {repeat}")
    if check_metric(metric) == "instructions":
        devices = _counted_devices(list(devices))
    preset, cells, unavailable, notes = plan(targets, devices=devices, variants=variants, preset=preset,
                                             study_options=study_options, overrides=overrides, threads=threads)
    cmp.check_repeat(cells, repeat)
    out = Path(output_dir) if output_dir is not None else None
    with cmp.output_lock(out) as clash:
        if clash:
            notes.append(clash)
            if on_warning:
                on_warning(clash)
        comparison = cmp.Comparison(preset, cells, notes, out, baseline, env.collect(), threshold or MIN_CHANGE,
                                    metric)
        try:
            cmp.execute(comparison, set(unavailable), repeat, on_cell)
        except KeyboardInterrupt:
            raise ComparisonInterrupted(Comparison(comparison.doc)) from None
    return Comparison(comparison.doc)
