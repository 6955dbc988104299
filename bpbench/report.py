"""Tables for people: one run, a trace, a gradient check, a comparison. Knows nothing of training:
it reads result dicts (schema 1) and prints them with rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def fmt_s(x: float | None) -> str:
    """Seconds with a unit that keeps three significant digits."""
    if x is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(x) >= scale or unit == "µs":
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} s"


def fmt_num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.7g}"
    return str(x)


def fmt_acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def fmt_nested(v: Any) -> str:
    """Nested lists of floats with 7 significant digits: [[0.4513601, 0.3706601], ...]."""
    if isinstance(v, list):
        return "[" + ", ".join(fmt_nested(i) for i in v) + "]"
    return f"{v:.7g}" if isinstance(v, float) else str(v)


def fmt_mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} MiB"


def print_run(r: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    t, m, f = r["timing"], r["memory"], r["final"]
    title = f"{r['experiment']} · {r['variant']} · {r['device']}" + \
        (f" ({r['env']['cuda_device']})" if r["env"].get("cuda_device") else "")
    tab = Table(title=title, show_header=False, title_justify="left")
    tab.add_column(style="bold")
    tab.add_column()
    d = r["data"]
    tab.add_row("data", f"{d['name']}: {d['n_train']} train" + (f", {d['n_test']} held out" if d.get("n_test") else ""))
    tab.add_row("final loss", fmt_num(f["loss"]))
    for k, v in (f.get("params") or {}).items():
        tab.add_row(f"  {k}", fmt_nested(v))
    for k, v in (f.get("metrics") or {}).items():
        tab.add_row(f"  {k}", fmt_num(v))
    tab.add_row("updates", f"{t['steps']} ({t['warmup_steps']} warm-up)")
    tab.add_row("step time", f"{fmt_s(t['step_s_median'])} median, IQR {fmt_s(t['step_s_iqr'])}")
    tab.add_row("throughput", "-" if t["samples_per_s"] is None else f"{t['samples_per_s']:,.0f} samples/s")
    if r.get("flops"):
        tab.add_row("FLOPs/step", fmt_flops(r["flops"]))
        tab.add_row("compute", fmt_throughput(r.get("throughput")))
    tab.add_row("time", f"setup {fmt_s(t['setup_s'])} · warm-up {fmt_s(t['warmup_s'])} · "
                        f"train {fmt_s(t['train_s'])} · eval {fmt_s(t['eval_s'])} · total {fmt_s(t['total_s'])}")
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
    tab.add_row("memory", mem)
    tab.add_row("env", f"torch {r['env']['torch']} · {r['env']['threads']} threads · {r['env']['cpu']}")
    console.print(tab)
    for w in r.get("warnings") or []:
        console.print(f"[yellow]warning: {w}[/]")
    if r.get("profile"):
        print_profile(r["profile"], console, timed_step_s=t["step_s_median"])
    if r.get("confusion"):
        console.print(f"confusion (rows: true, columns: predicted): {r['confusion']}")
    if m.get("line_profile"):
        console.print(m["line_profile"], markup=False, highlight=False, soft_wrap=True)


def fmt_count(n: float | None) -> str:
    """FLOP counts with an SI prefix: 170.1 M, 1.273 G."""
    if n is None:
        return "-"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n:.4g}"


def fmt_flops(f: dict[str, Any]) -> str:
    """'170.1 M (forward 85.01 M · backward 85.11 M · update 0) matrix products only'."""
    parts = " · ".join(f"{p} {fmt_count(f.get(p))}" for p in ("forward", "backward", "update"))
    return f"{fmt_count(f.get('per_step'))} ({parts}; matrix products only)"


def fmt_throughput(t: dict[str, Any] | None) -> str:
    if not t or t.get("achieved_gflops") is None:
        return "-"
    text = f"{t['achieved_gflops']:.3g} GFLOP/s"
    if t.get("percent_of_peak") is not None:
        text += f" = {t['percent_of_peak']:.2g}% of the measured peak {t['peak_gflops']:.4g} GFLOP/s"
    return text


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
                  + (f"; {fmt_s(timed_step_s)} in the timed loop: the rest is the profiler's own cost"
                     if timed_step_s else "") + "): " + (phases or "no phases marked"))
    console.print(f"{sp.get('aten_calls_per_step', 0):g} ATen op calls a step; "
                  f"inside ATen ops {share(sp['in_aten_ops_s'])} · outside them (Python, modules, autograd "
                  f"engine, optimizer loop) {share(sp['outside_ops_s'])}"
                  + (f" · host {fmt_s(sp['host_s'])} vs kernels {fmt_s(sp['kernel_s'])}" if "kernel_s" in sp else ""))
    if p.get("trace_file"):
        console.print(f"trace: {p['trace_file']} (open in ui.perfetto.dev or chrome://tracing)")


def print_peak(e: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    lines = [f"peak: {e['gflops']:.4g} GFLOP/s ({e['dtype']}, {e['threads']} threads, best of square matrix "
             f"products n = {', '.join(map(str, e['sizes']))}; best at n = {e['size']})",
             f"source: {e['source']}"]
    if e.get("measured_now_gflops") is not None and e["source"] != "measured now":
        lines.append(f"this measurement: {e['measured_now_gflops']:.4g} GFLOP/s")
    lines += [f"key: {e['key']}", f"cache: {e['cache'] or 'not writable (figure not kept)'}"]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def print_trace(tr: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    fw = Table(title="forward pass (seed 002's hand-computed values beside ours)", title_justify="left")
    for c in ("value", "bpbench", "seed 002", "difference"):
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
    tab = Table(title=f"gradcheck {rep['experiment']} ({rep['note']}; tol {rep['tol']:g})", title_justify="left")
    for c in ("parameter", "elements", "manual vs autograd", "manual vs numerical",
              "autograd vs numerical", "rel. error", "ok"):
        tab.add_column(c, justify="left" if c == "parameter" else "right", no_wrap=c == "parameter")
    for c in rep["checks"]:
        tab.add_row(c["param"], f"{c['checked']}/{c['numel']}", f"{c['manual_vs_autograd']:.2e}",
                    f"{c['manual_vs_numerical']:.2e}", f"{c['autograd_vs_numerical']:.2e}",
                    f"{c['rel_error']:.2e}", "[green]yes[/]" if c["ok"] else "[red]NO[/]")
    console.print(tab)
    console.print("[green]all gradients agree[/]" if rep["ok"] else "[red]gradient check FAILED[/]")


# ---------------------------------------------------------------- comparisons

def wide_console() -> Console:
    """Tables of many columns: use the terminal's width, or 200 columns when writing to a file/pipe."""
    import sys
    return Console() if sys.stdout.isatty() else Console(width=200)


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _change(s: dict[str, Any]) -> str:
    ch = s.get("baseline_change")
    if ch is None:
        return "-"
    text = f"{ch:+.1%}"
    if not s.get("baseline_significant"):
        return f"[dim]{text}[/]"
    return f"[red]{text} slower[/]" if ch > 0 else f"[green]{text} faster[/]"


def print_comparison(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or wide_console()
    cells = doc["cells"]   # in plan order: grouped by experiment and run, variants together
    has_base = any("baseline_change" in c.get("summary", {}) for c in cells)
    title = f"bpbench compare · preset {doc['preset']}" + (" · INTERRUPTED" if doc.get("interrupted") else "")
    tab = Table(title=title, title_justify="left")
    from bpbench import figures
    extra_cols = figures.table_columns()
    cols = ["experiment", "variant", "device", "setup", "step", "IQR", "train", "peak RSS",
            "CUDA peak", "final loss", "acc.", "vs manual", "CUDA x"] + [h for h, _ in extra_cols]
    if has_base:
        cols.append("vs baseline")
    for c in cols:
        tab.add_column(c, justify="left" if c in ("experiment", "variant", "device") else "right")
    last_group = None
    for c in cells:
        group = (c["study"], c["experiment"], c["label"])
        if last_group is not None and group != last_group:
            tab.add_section()
        name = f"{c['experiment']} [dim]{c['label']}[/]" if group != last_group else ""
        last_group = group
        s = c.get("summary", {})
        if c["status"] != "ok" and not s.get("step_s_median"):
            tab.add_row(name, c["variant"], c["device"], f"[yellow]{c['status']}[/]: {c.get('error') or ''}",
                        *[""] * (len(cols) - 4))
            continue
        row = [name, c["variant"], c["device"], fmt_s(s.get("setup_s")), fmt_s(s.get("step_s_median")),
               fmt_s(s.get("step_s_iqr")), fmt_s(s.get("train_s")), fmt_mib(s.get("rss_peak_mib")),
               fmt_mib(s.get("cuda_peak_allocated_mib")), fmt_num(s.get("final_loss")),
               fmt_acc(s.get("accuracy")),
               _ratio(s.get("speed_vs_manual")), _ratio(s.get("cuda_speedup"))] + [f(s) for _, f in extra_cols]
        if c["status"] != "ok":
            row[3] = f"[yellow]{c['status']}[/]"
        if has_base:
            row.append(_change(s))
        tab.add_row(*row)
    console.print(tab)
    for line in verdicts(cells):
        console.print(line)
    if doc.get("width"):
        print_width(doc["width"], console)
    if doc.get("gd_sgd"):
        print_gd_sgd(doc["gd_sgd"], console)
    for c in cells:
        if c["status"] not in ("ok", "unavailable"):
            console.print(f"[yellow]{c['key']}: {c['status']}: {c.get('error')}[/]")
    for note in doc.get("notes", []):
        console.print(f"[dim]note: {note}[/]")
    missing = len(doc.get("planned", [])) - len(doc["cells"])
    if doc.get("interrupted") and missing > 0:
        console.print(f"[yellow]interrupted: {missing} planned cell(s) did not run[/]")


def verdicts(cells: list[dict[str, Any]]) -> list[str]:
    """One line per experiment and device: the fastest variant and how the others compare."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if c["study"] == "matrix" and c["status"] == "ok" and c.get("summary", {}).get("step_s_median"):
            groups.setdefault((c["experiment"], c["label"], c["device"]), []).append(c)
    lines = []
    for (exp, label, device), group in groups.items():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda c: c["summary"]["step_s_median"])
        first = group[0]["summary"]
        best = first["step_s_median"]

        def within_noise(c) -> bool:   # a gap smaller than both cells' spread is no verdict
            s = c["summary"]
            return s["step_s_median"] / best - 1 <= max(first.get("noise", 0) + s.get("noise", 0), 0.05)

        where = f"[bold]{exp}{f' ({label})' if label else ''} on {device}[/]"
        if all(within_noise(c) for c in group[1:]):
            times = ", ".join(f"{c['variant']} {fmt_s(c['summary']['step_s_median'])}" for c in group)
            lines.append(f"{where}: no variant is clearly faster per step ({times}: within the measured noise)")
            continue
        others = ", ".join(f"{c['variant']} " + ("within noise" if within_noise(c) else
                                                 f"{c['summary']['step_s_median'] / best:.1f}x slower")
                           for c in group[1:])
        lines.append(f"{where}: fastest per step is {group[0]['variant']} ({fmt_s(best)}); {others}")
    return lines


def print_width(w: dict[str, Any], console: Console) -> None:
    tab = Table(title="width study: 1-H-1 MLP, Adam (seed 004)", title_justify="left")
    from bpbench.figures import fmt_percent
    for c in ("H", "CPU step", "CUDA step", "CUDA speedup", "CPU % peak", "CUDA % peak"):
        tab.add_column(c, justify="right")
    for r in w["rows"]:
        tab.add_row(f"{r['width']:,}", fmt_s(r.get("cpu_step_s")), fmt_s(r.get("cuda_step_s")),
                    _ratio(r.get("cuda_speedup")), fmt_percent(r.get("cpu_percent_of_peak")),
                    fmt_percent(r.get("cuda_percent_of_peak")))
    console.print(tab)
    cross = w.get("crossover_width")
    has_cuda = any(r.get("cuda_step_s") for r in w["rows"])
    console.print(f"crossover: GPU faster from H = {cross:,}"
                  + (" (already at the smallest width measured: the crossover is at or below it)"
                     if w.get("crossover_at_or_below") else "") if cross else
                  "crossover: the GPU was not faster at any width measured" if has_cuda else
                  "crossover: n/a (no CUDA cells ran)")


def print_gd_sgd(g: dict[str, Any], console: Console) -> None:
    tab = Table(title=f"GD vs SGD at equal updates (seed 004 section F); target held-out accuracy "
                      f"{g['target_accuracy']}", title_justify="left")
    for c in ("device", "batch", "updates", "epochs", "final loss", "held-out acc", "train time",
              "updates to target", "time to target"):
        tab.add_column(c, justify="right")
    # mini-batch sizes that hold the whole training set: gradient descent under another name
    whole = [r for r in g["rows"] if r.get("covers_train_set") and r["batch_size"] != "full"]
    for r in g["rows"]:
        batch = str(r["batch_size"]) + (" (= full)" if r in whole else "")
        tab.add_row(r["device"], batch, str(r["updates"]), str(r["epochs"]), fmt_num(r["final_loss"]),
                    fmt_acc(r["final_test_accuracy"]), fmt_s(r["train_s"]),
                    fmt_num(r["updates_to_target"]), fmt_s(r["seconds_to_target"]))
    console.print(tab)
    if whole:
        console.print(f"(= full): a batch of {whole[0]['batch_size']} holds all {whole[0]['n_train']:,} training "
                      "images, so its updates are gradient descent too; seed 004's sizes assume its "
                      "12,665-image training split (--data-dir)")
