"""`bpbench graph`: the computational graph of one training step, with values and gradients."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from bpbench.cli.common import app
from bpbench.errors import BadInput

FORMATS = ("text", "json", "dot", "svg", "png")


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
                            help="text (fits 100 columns), json, dot (Graphviz source), svg (needs Graphviz's "
                                 "dot), png (Graphviz's dot when installed, else drawn by matplotlib)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write it to FILE (atomically) instead of stdout."),
) -> None:
    """Draw one training step: every node's operation and forward value (on the edges), the gradient
    flowing back (beneath them) and the bytes it saves for backward."""
    from bpbench import config as C
    from bpbench.graph import render_dot
    from bpbench.results import files

    if fmt not in FORMATS:
        raise BadInput(f"unknown --format {fmt!r} (choose from: {', '.join(FORMATS)})")
    if fmt == "svg" and not render_dot.has_dot():
        raise BadInput(render_dot.NO_DOT.format(fmt=fmt))
    if output is not None:
        files.check_output_file(output, "--output")
    elif fmt == "png" and sys.stdout.isatty():
        raise BadInput("--format png is an image: give --output FILE (or redirect stdout)")
    from bpbench import api
    settings = {k: v for k, v in {"data": data, **C.parse_set(set_, {"data": data})}.items() if v is not None}
    g = api.graph(experiment, variant, **settings)
    content = _render(g, fmt)
    if output is None:
        files.write_bytes("/dev/stdout", content) if isinstance(content, bytes) else sys.stdout.write(content)
        return
    (files.write_bytes if isinstance(content, bytes) else files.write_text)(output, content)
    sys.stderr.write(f"graph written to {output}\n")


def _render(g, fmt: str) -> str | bytes:
    from bpbench.graph import render_dot, render_text
    if fmt == "text":
        return render_text.render(g) + "\n" + render_text.saved_table(g.saved_for_backward)
    if fmt == "json":
        from bpbench.results import files
        return files.dumps(g.to_dict())
    if fmt == "dot":
        return render_dot.source(g)
    if fmt == "svg" or render_dot.has_dot():
        return render_dot.render(g, fmt)
    from bpbench.graph import render_png      # no Graphviz here: matplotlib draws it
    sys.stderr.write("note: Graphviz's dot is not installed: drawn with matplotlib\n")
    return render_png.render(g)
