"""`bpbench list` (the registries) and `bpbench peak` (the machine's measured ceilings).
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from bpbench.cli.common import app
from bpbench.errors import BadInput


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
    from rich.table import Table

    from bpbench.report.tables import wide_console
    console = wide_console()
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


@app.command()
def peak(
    device: str = typer.Option("cpu", "--device", help="cpu | cuda."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, float64, bfloat16, float16."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: torch's)."),
    remeasure: bool = typer.Option(False, "--remeasure", help="Measure again; the cache keeps the better figure of each "
                                                             "(higher peak and bandwidth, lower op cost)."),
    as_json: bool = typer.Option(False, "--json", help="Print the entry as JSON."),
) -> None:
    """The machine's measured ceilings: matrix-product peak (GFLOP/s), memory bandwidth (GB/s) and
    the cost of one eager ATen call (µs), against which each run's floors are set."""
    from bpbench import config as C
    from bpbench.measure import peak as pk
    from bpbench.measure import run as runner

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
