"""One run for people: its table, its trace, its profile, a gradient check, the machine's peak.

Knows nothing of training: it reads result dicts (see bpbench.results.schema) and prints them with rich.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from bpbench.report.format import (
    Block,
    Tab,
    fmt_bound,
    fmt_bytes,
    fmt_count,
    fmt_flops,
    fmt_mib,
    fmt_nested,
    fmt_num,
    fmt_s,
    fmt_step_counts,
    fmt_throughput,
    measured,
)
from bpbench.report.tables import show, wide_console
from bpbench.results.timing import timing_problem


@dataclass
class RunView:
    """What the run's experiment adds to its table (its hooks: experiments/base.py), gathered by
    the caller: reports know no experiment."""
    rows: Callable[[dict[str, Any]], list[tuple[str, str]]] = lambda metrics: []   # noqa: E731
    tables: list[Block] = field(default_factory=list)
    metric_names: dict[str, str] = field(default_factory=dict)


def print_run(r: dict[str, Any], console: Console | None = None, view: RunView | None = None) -> None:
    console = console or wide_console()
    view = view or RunView()
    tab = Table(title=_title(r), show_header=False, title_justify="left")
    tab.add_column(style="bold")
    tab.add_column()
    for row in _rows(r, view):
        tab.add_row(*row)
    console.print(tab)
    for w in r.get("warnings") or []:
        console.print(f"[yellow]warning: {w}[/]")
    if r.get("profile"):
        print_profile(r["profile"], console, timed_step_s=r["timing"]["step_s_median"])
    show(view.tables, console)
    if r["memory"].get("line_profile"):
        console.print(r["memory"]["line_profile"], markup=False, highlight=False, soft_wrap=True)


def _title(r: dict[str, Any]) -> str:
    return f"{r['experiment']} · {r['variant']} · {r['device']}" + \
        (f" ({r['env']['cuda_device']})" if r["env"].get("cuda_device") else "") + \
        (f" · [bold yellow]{r['status'].upper()}[/]" if r.get("status", "ok") != "ok" else "")


def _rows(r: dict[str, Any], view: RunView) -> list[tuple[str, str]]:
    t, f, d = r["timing"], r["final"], r["data"]
    rows = [("data", f"{d['name']}: {d['n_train']} train" + (f", {d['n_test']} held out" if d.get("n_test") else ""))]
    metrics = dict(f.get("metrics") or {})
    rows += view.rows(metrics) or [("final loss", fmt_num(f["loss"]))]
    rows += [(f"  {k}", fmt_nested(v)) for k, v in (f.get("params") or {}).items()]
    rows += [(f"  {view.metric_names.get(k, k)}", fmt_num(v)) for k, v in metrics.items()]
    problem = timing_problem(t)
    rows += [("updates", f"{t['steps']} ({t['warmup_steps']} warm-up)"),
             ("step time", f"invalid: {problem}" if problem else
              f"{fmt_s(t['step_s_median'])} median, IQR {fmt_s(t['step_s_iqr'])}"),
             ("throughput", "-" if t["samples_per_s"] is None else
              f"{t['samples_per_s']:,.0f} samples/s" if measured(t["samples_per_s"]) and not problem else "invalid")]
    if t.get("metric") == "instructions":
        rows.append(("instructions", _instructions_text(t)))
    if r.get("flops"):
        rows += [("FLOPs/step", fmt_flops(r["flops"])), ("compute", fmt_throughput(r.get("throughput")))]
    if r.get("analysis"):
        rows += [("step does", fmt_step_counts(r["analysis"])), ("bound", fmt_bound(r["analysis"]))]
    rows.append(("time", f"setup {fmt_s(t['setup_s'])} · warm-up {fmt_s(t['warmup_s'])} · "
                         f"train {fmt_s(t['train_s'])} · eval {fmt_s(t['eval_s'])} · total {fmt_s(t['total_s'])}"))
    rows.append(("memory", _memory_text(r["memory"])))
    if r["memory"].get("saved_for_backward"):
        rows.append(("saved for\nbackward", _saved_text(r["memory"]["saved_for_backward"])))
    if r.get("distributed"):
        rows.append(("ranks", _ranks_text(r["distributed"])))
    rows.append(("env", f"torch {r['env']['torch']} · {r['env']['threads']} threads · {r['env']['cpu']}"))
    return rows


def _instructions_text(t: dict[str, Any]) -> str:
    """--metric instructions: the median counted step, and its phases (they add up to it)."""
    if t.get("instructions_per_step") is None:
        return "none counted (no steady step after the warm-up)"
    phases = " · ".join(f"{k} {fmt_count(v)}" for k, v in (t.get("instructions_per_phase") or {}).items())
    return (f"{fmt_count(t['instructions_per_step'])} per step (median of {t['instructions_steps']} counted "
            f"under callgrind)" + (f"\n{phases}" if phases else ""))


def _memory_text(m: dict[str, Any]) -> str:
    mem = f"RSS {fmt_mib(m['rss_start_mib'])} at start, {fmt_mib(m['rss_peak_mib'])} peak"
    if m.get("cuda_peak_allocated_mib") is not None:
        mem += f" · CUDA peak {fmt_mib(m['cuda_peak_allocated_mib'])} allocated, " \
               f"{fmt_mib(m['cuda_peak_reserved_mib'])} reserved"
    if m.get("rss_setup_mib") is not None:
        mem += f"\nafter setup {fmt_mib(m['rss_setup_mib'])}; training peak " \
               f"+{fmt_mib(m.get('rss_train_above_setup_mib'))} above it"
    if m.get("cuda_phase_peak_mib"):
        mem += "\nCUDA peak per phase: " + ", ".join(f"{k} +{fmt_mib(v)}" for k, v in m["cuda_phase_peak_mib"].items()) \
            + (f" (cuBLAS workspace {fmt_mib(m['cublas_workspace_mib'])} apart)"
               if m.get("cublas_workspace_mib") is not None else "")
    return mem


def _saved_text(sfb: dict[str, Any]) -> str:
    """One step's tensors kept for backward, each way it was counted (bpbench.graph.keeps), then
    every tensor the ways do not keep alike."""
    counts = [(k, v) for k, v in sfb.items() if v is None or isinstance(v, int)]
    text = " · ".join(f"{k} {fmt_bytes(v)}" for k, v in counts) + f" (this variant: {sfb.get('world', '-')})"
    return "\n".join([text] + [f"- {d}" for d in sfb.get("differences", [])])


def _ranks_text(dd: dict[str, Any]) -> str:
    """A data-parallel run: the step time above is the slowest rank's."""
    comm = "-" if dd["comm_s_median"] is None else f"{fmt_s(dd['comm_s_median'])} a step" + \
        (f" ({dd['comm_share']:.0%})" if dd.get("comm_share") is not None else "")
    return (f"{dd['world_size']} ({dd['backend']}) · batch {dd['global_batch']}, {dd['per_rank_batch']} per rank · "
            f"communication {comm} · step time is the slowest rank's"
            + (f" · launch {fmt_s(dd['launch_s'])}" if dd.get("launch_s") else ""))


def print_profile(p: dict[str, Any], console: Console, timed_step_s: float | None = None) -> None:
    """--profile-ops: the top ops by self time, and the step split by phase and by where it runs."""
    dev = any("self_device_s" in o for o in p["top_ops"])
    tab = Table(title=f"top ops by self {'GPU' if dev else 'CPU'} time per step", title_justify="left")
    for c in ("op", "calls", "self CPU", "CPU total") + (("self GPU",) if dev else ()):
        tab.add_column(c, justify="left" if c == "op" else "right")
    for o in p["top_ops"]:
        tab.add_row(o["name"], f"{o['calls_per_step']:g}", fmt_s(o["self_cpu_s"]), fmt_s(o["cpu_total_s"]),
                    *((fmt_s(o.get("self_device_s")),) if dev else ()))
    console.print(tab)
    sp = p["split"]
    step = sp["step_s"]
    share = lambda x: f"{fmt_s(x)} ({x / step:.0%})" if step else fmt_s(x)   # noqa: E731
    phases = " · ".join(f"{k} {share(v['cpu_s'])}" for k, v in p["phases"].items())
    console.print(f"step {fmt_s(step)} under torch.profiler ({p['steps']} steps"
                  + _against_the_timed_loop(step, timed_step_s) + "): " + (phases or "no phases marked"))
    console.print(f"{sp.get('aten_calls_per_step', 0):g} ATen op calls a step; "
                  f"inside ATen ops {share(sp['in_aten_ops_s'])} · outside them (Python, modules, autograd "
                  f"engine, optimizer loop) {share(sp['outside_ops_s'])}"
                  + (f" · host {fmt_s(sp['host_s'])} vs kernels {fmt_s(sp['kernel_s'])}" if "kernel_s" in sp else ""))
    if p.get("trace_file"):
        console.print(f"trace: {p['trace_file']} (open in ui.perfetto.dev or chrome://tracing)")
    elif p.get("trace_error"):
        console.print(f"no trace written: {p['trace_error']}", markup=False, highlight=False)
    else:   # without --output there is no default place for it, and silence reads as "no trace exists"
        console.print("[dim]no trace written: --trace-file PATH (or --output, which puts it beside the "
                      "result) writes a Perfetto trace of these steps[/]")


def _against_the_timed_loop(profiled: float | None, timed: float | None) -> str:
    """How the profiled step compares with the timed loop's median, and why they differ."""
    if not (measured(profiled) and measured(timed) and timed):
        return ""
    if profiled > timed:
        return f"; {fmt_s(timed)} in the timed loop: the difference is mostly the profiler's own cost"
    return (f"; {fmt_s(timed)} in the timed loop, longer: these steps repeat one batch, with warm caches, "
            "and a busy machine moves either figure")


def print_peak(e: dict[str, Any], console: Console | None = None) -> None:
    """The three ceilings of a cache entry (measure.peak.get)."""
    console = console or wide_console()
    lines = [f"peak: {e['gflops']:.4g} GFLOP/s ({e['dtype']}, {e['threads']} threads, best of square matrix "
             f"products n = {', '.join(map(str, e['sizes']))}; best at n = {e['size']})",
             f"source: {e['source']}"]
    if e.get("measured_now_gflops") is not None and e["source"] != "measured now":
        lines.append(f"this measurement: {e['measured_now_gflops']:.4g} GFLOP/s")
    lines += _ceiling_lines(e)
    lines += [f"key: {e['key']}", f"cache: {e['cache'] or 'not writable (figure not kept)'}"]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _ceiling_lines(e: dict[str, Any]) -> list[str]:
    """The bandwidth (with its curve over sizes) and the per-op cost, each with what ran now."""
    now, lines = e.get("measured_now") or {}, []
    if e.get("bandwidth_gbs") is not None:
        curve = " · ".join(f"{fmt_bytes(touched)} {gbs:.3g}" for touched, gbs in e.get("bandwidth_curve") or [])
        lines.append(f"bandwidth: {e['bandwidth_gbs']:.3g} GB/s (best of a copy and a triad beyond every cache"
                     + (f"; this measurement: {now['bandwidth_gbs']:.3g}" if "bandwidth_gbs" in now else "") + ")")
        lines.append(f"  by bytes touched, GB/s: {curve}")
    if e.get("op_overhead_us") is not None:
        lines.append(f"op overhead: {e['op_overhead_us']:.3g} µs per eager ATen call (torch.add on 1-element tensors"
                     + (f"; this measurement: {now['op_overhead_us']:.3g}" if "op_overhead_us" in now else "") + ")")
    return lines


def print_trace(tr: dict[str, Any], console: Console | None = None) -> None:
    console = console or wide_console()
    source = tr.get("source", "the source")
    fw = Table(title=f"forward pass ({source}'s hand-computed values beside ours)", title_justify="left")
    for c in ("value", "bpbench", source, "difference"):
        fw.add_column(c, justify="right" if c != "value" else "left")
    for name, v in tr["forward"].items():
        ref = tr["reference"].get(name)
        fw.add_row(name, f"{v:.6f}", "-" if ref is None else f"{ref:.4f}",
                   "-" if ref is None else f"{v - ref:+.1e}")
    console.print(fw)
    for title, key in (("gradients", "grads"), ("parameters after the step", "params_after")):
        tab = Table(title=title, title_justify="left")
        tab.add_column("parameter")
        tab.add_column("value")
        for name, v in tr[key].items():
            tab.add_row(name, fmt_nested(v))
        console.print(tab)


def print_gradcheck(rep: dict[str, Any], console: Console | None = None) -> None:
    console = console or wide_console()
    title = f"gradcheck {rep['experiment']} ({rep['note']}; tol {rep['tol']:g})"
    rows = [[c["param"], f"{c['checked']}/{c['numel']}", f"{c['manual_vs_autograd']:.2e}",
             f"{c['manual_vs_numerical']:.2e}", f"{c['autograd_vs_numerical']:.2e}", f"{c['rel_error']:.2e}",
             "[green]yes[/]" if c["ok"] else "[red]NO[/]"] for c in rep["checks"]]
    tab = Tab(title, ["parameter", "elements", "manual vs\nautograd", "manual vs\nnumerical",
                      "autograd vs\nnumerical", "rel. error", "ok"], rows)
    # 80 columns: the differences' headers written tighter (numbers are never cut)
    tab.narrow = Tab(title, ["parameter", "elements", "manual-\nautograd", "manual-\nnumeric",
                             "autograd-\nnumeric", "rel.\nerror", "ok"], rows)
    show([tab], console)
    console.print("[green]all gradients agree[/]" if rep["ok"] else "[red]gradient check FAILED[/]")
