"""`bpbench graph`: the computational graph of one training step, with values and gradients."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from bpbench.cli.common import app
from bpbench.errors import BadInput

FORMATS = ("text", "json", "dot", "svg", "png")
ENGINES = ("auto", "graphviz", "matplotlib")


@app.command()
def graph(
    experiment: str = typer.Argument(..., help="Experiment name (see `bpbench list`)."),
    variant: Optional[str] = typer.Option(
        None, "--variant", metavar="manual|autograd",
        help="manual: the hand-written layers' step; autograd: the graph of grad_fn nodes autograd builds "
             "(default: the experiment's default variant)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data set (per experiment; see `bpbench list`)."),
    set_: List[str] = typer.Option([], "--set", help="Any other config key: --set key=value (repeatable)."),
    fmt: str = typer.Option("text", "--format", metavar="|".join(FORMATS),
                            help="text (fits 100 columns), json, dot (Graphviz source), svg or png (pictures)."),
    engine: str = typer.Option("auto", "--engine", metavar="|".join(ENGINES),
                               help="Who draws svg and png: graphviz (its dot program), matplotlib (no Graphviz "
                                    "needed), or auto: png by Graphviz when its dot is installed, else by "
                                    "matplotlib; svg by Graphviz."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write it to FILE (atomically) instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Let --output replace a file that is not bpbench's."),
) -> None:
    """Draw one training step: every node's operation and forward value (on the edges), the gradient
    flowing back (beneath them) and the bytes it saves for backward."""
    from bpbench import config as C
    from bpbench.graph import render_dot
    from bpbench.results import files

    if fmt not in FORMATS:
        raise BadInput(f"unknown --format {fmt!r} (choose from: {', '.join(FORMATS)})")
    if engine not in ENGINES:
        raise BadInput(f"unknown --engine {engine!r} (choose from: {', '.join(ENGINES)})")
    engine = _engine(fmt, engine)
    if engine == "graphviz" and not render_dot.has_dot():
        raise BadInput(render_dot.NO_DOT.format(fmt=fmt))
    if output is not None:
        files.check_output_file(output, "--output", [data], force, streams=True)
    elif fmt == "png" and sys.stdout.isatty():
        raise BadInput("--format png is an image: give --output FILE (or redirect stdout)")
    from bpbench import api
    settings = {k: v for k, v in {"data": data, **C.parse_set(set_, {"data": data})}.items() if v is not None}
    g = api.graph(experiment, variant, **settings)
    content = _render(g, fmt, engine)
    if output is None:       # a picture goes out as bytes, the rest as text
        sys.stdout.buffer.write(content) if isinstance(content, bytes) else sys.stdout.write(content)
        sys.stdout.flush()
        return
    write = files.write_bytes if isinstance(content, bytes) else files.write_text
    write(output, content, "--output", streams=True, force=force)
    sys.stderr.write(f"graph written to {output}\n")


def _engine(fmt: str, engine: str) -> str | None:
    """Who draws the picture (None: not a picture); auto: a PNG by matplotlib where Graphviz is missing."""
    from bpbench.graph import render_dot
    if fmt not in ("svg", "png"):
        return None
    if engine == "auto":
        engine = "graphviz" if fmt == "svg" or render_dot.has_dot() else "matplotlib"
        if engine == "matplotlib":
            sys.stderr.write("note: Graphviz's dot is not installed: matplotlib draws the graph\n")
    return engine


def _render(g, fmt: str, engine: str | None) -> str | bytes:
    from bpbench.graph import render_dot, render_png, render_text
    if fmt == "text":
        return render_text.render(g) + "\n" + render_text.saved_table(g.saved_for_backward)
    if fmt == "json":
        from bpbench.results import files
        return files.dumps(g.to_dict())
    if fmt == "dot":
        return render_dot.source(g)
    return render_dot.render(g, fmt) if engine == "graphviz" else render_png.render(g, fmt)
