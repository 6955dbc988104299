"""Tables for people: one run, a trace, a gradient check, a comparison. Knows nothing of training:
it reads result dicts (schema 1) and prints them with rich."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from rich.console import Console
from rich.table import Table

from bpbench.figures import fmt_gflops, fmt_percent, table_columns
from bpbench.harness.stats import NOISY_IQR_SHARE


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
        (f" ({r['env']['cuda_device']})" if r["env"].get("cuda_device") else "") + \
        (f" · [bold yellow]{r['status'].upper()}[/]" if r.get("status", "ok") != "ok" else "")
    tab = Table(title=title, show_header=False, title_justify="left")
    tab.add_column(style="bold")
    tab.add_column()
    d = r["data"]
    tab.add_row("data", f"{d['name']}: {d['n_train']} train" + (f", {d['n_test']} held out" if d.get("n_test") else ""))
    metrics = dict(f.get("metrics") or {})
    step = _before_after(r, metrics)
    if step:
        for row in step:
            tab.add_row(*row)
    else:
        tab.add_row("final loss", fmt_num(f["loss"]))
    for k, v in (f.get("params") or {}).items():
        tab.add_row(f"  {k}", fmt_nested(v))
    for k, v in metrics.items():
        tab.add_row(f"  {METRIC_NAMES.get(k, k)}", fmt_num(v))
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
    dd = r.get("distributed")
    if dd:   # a data-parallel run: step time above is the slowest rank's
        comm = "-" if dd["comm_s_median"] is None else f"{fmt_s(dd['comm_s_median'])} a step" + \
            (f" ({dd['comm_share']:.0%})" if dd.get("comm_share") is not None else "")
        tab.add_row("ranks", f"{dd['world_size']} ({dd['backend']}) · batch {dd['global_batch']}, "
                             f"{dd['per_rank_batch']} per rank · communication {comm} · step time is the "
                             f"slowest rank's" + (f" · launch {fmt_s(dd['launch_s'])}" if dd.get("launch_s") else ""))
    tab.add_row("env", f"torch {r['env']['torch']} · {r['env']['threads']} threads · {r['env']['cpu']}")
    console.print(tab)
    for w in r.get("warnings") or []:
        console.print(f"[yellow]warning: {w}[/]")
    if r.get("profile"):
        print_profile(r["profile"], console, timed_step_s=t["step_s_median"])
    if r.get("confusion"):
        console.print("confusion matrices (rows: true class, columns: predicted class)")
        for split, matrix in r["confusion"].items():
            console.print(confusion_table(split, matrix))
    if m.get("line_profile"):
        console.print(m["line_profile"], markup=False, highlight=False, soft_wrap=True)


# What a final metric is, where its bare name would mislead.
METRIC_NAMES = {"output": "output after training (first sample)", "train_loss": "loss after training",
                # seed 004 printed the accuracy of `yhat` from its loop's last forward pass
                "source_updates": "updates before the source's last forward pass",
                "source_train_accuracy": "train accuracy the source's way (that forward pass)"}


def _before_after(r: dict[str, Any], metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """bce on seed 002's sample: the output before and after training, each beside its own loss
    (the last epoch's loss is computed before that epoch's update). Pops what it shows."""
    tr = r.get("trace")
    if not tr or r["config"].get("data") != "source" or "output" not in metrics:
        return []
    when = "the step" if r["config"].get("epochs") == 1 else "training"
    after_loss = metrics.pop("train_loss", None)
    return [(f"before {when}", f"loss {fmt_num(tr['forward']['loss'])} · output {fmt_num(tr['forward']['sigma3'])}"),
            (f"after {when}", f"loss {fmt_num(after_loss)} · output {fmt_num(metrics.pop('output'))}")]


def confusion_table(split: str, matrix: list[list[int]]) -> Table:
    """A confusion matrix as a table: rows the true class, columns the predicted one."""
    tab = Table(title={"train": "training set", "test": "held-out set"}.get(split, split), title_justify="left")
    tab.add_column("true", justify="right", style="bold")
    for k in range(len(matrix)):
        tab.add_column(f"pred {k}", justify="right")
    for k, row in enumerate(matrix):
        tab.add_row(str(k), *(f"{n:,}" for n in row))
    return tab


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
    else:   # without --output there is no default place for it, and silence reads as "no trace exists"
        console.print("[dim]no trace written: --trace-file PATH (or --output, which puts it beside the "
                      "result) writes a Perfetto trace of these steps[/]")


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

TABLE_WIDTH = 100   # a comparison's tables fit this many columns (more with --wide)
FOLD = 16           # a text cell (a run's label) may fold to this width to make room for numbers


def wide_console(wide: bool = False) -> Console:
    """The terminal's width (or $COLUMNS); 100 columns when writing to a file or pipe; --wide:
    as wide as the tables need."""
    import os
    import sys
    if wide:
        return Console(width=max(200, Console().width))
    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=TABLE_WIDTH)


@dataclass
class Tab:
    """A table as data, so one comparison renders to the terminal (rich) and to markdown alike.
    Cells may hold rich markup; the first `text` columns are text, the rest numbers. `spare`
    names columns a narrow terminal may leave out, the first to go first (markdown keeps all)."""
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    text: int = 1
    sections: list[int] = field(default_factory=list)    # row indices that start a new section
    spare: list[str] = field(default_factory=list)

    def keep(self, used: list[int]) -> "Tab":
        return Tab(self.title, [self.columns[i] for i in used], [[r[i] for i in used] for r in self.rows],
                   sum(1 for i in used if i < self.text), self.sections, self.spare)

    def drop_empty(self, keep: int = 0) -> "Tab":
        """Without the columns (beyond the first `keep`) that hold nothing but "-" or ""."""
        return self.keep([i for i in range(len(self.columns))
                          if i < keep or any(r[i] not in ("-", "") for r in self.rows)])

    def width(self) -> int:
        """Columns a rich table of this needs: content (text folded to FOLD at most), one space of
        padding each side, borders."""
        widths = [max([len(line) for line in col.split("\n")] + [len(_plain(r[i])) for r in self.rows])
                  for i, col in enumerate(self.columns)]
        return sum(min(w, FOLD) if i < self.text else w for i, w in enumerate(widths)) + 3 * len(widths) + 1

    def floor(self, i: int) -> int:
        """The narrowest a text column may fold to: its longest word (header or cell), FOLD at most."""
        words = self.columns[i].split() + [w for r in self.rows for w in _plain(r[i]).split()]
        return min(max(map(len, words), default=1), FOLD)

    def fit(self, width: int) -> tuple["Tab", list[str]]:
        """Leave out spare columns until the table fits `width`; returns it and what was left out."""
        tab, left = self, []
        for name in self.spare:
            if tab.width() <= width:
                break
            if name in tab.columns:
                tab = tab.keep([i for i, c in enumerate(tab.columns) if c != name])
                left.append(name.replace("\n", " "))
        return tab, left


Block = Union[Tab, str]     # a table, or a line of text (rich markup allowed)


def show(blocks: list[Block], console: Console) -> None:
    hidden: list[str] = []
    for b in blocks:
        if isinstance(b, str):
            console.print(b)
            continue
        b, left = b.fit(console.width)
        hidden += [c for c in left if c not in hidden]
        tab = Table(title=b.title or None, title_justify="left")
        for i, col in enumerate(b.columns):
            # numbers never wrap or shrink (a cut number is worse than a wide table); text folds,
            # but between words: left alone, rich folds a short word to a letter a line for room
            tab.add_column(col, justify="left" if i < b.text else "right", no_wrap=i >= b.text,
                           overflow="fold", min_width=b.floor(i) if i < b.text else None)
        for j, row in enumerate(b.rows):
            if j in b.sections and j:
                tab.add_section()
            tab.add_row(*row)
        # a table the spares could not bring within the width: wider lines, never a cut-off edge
        console.print(tab, crop=b.width() <= console.width)
    if hidden:
        console.print(f"[dim]left out to fit {console.width} columns: {', '.join(hidden)} "
                      "(--wide, --format markdown and the files have them)[/]")


def _plain(text: str) -> str:
    from rich.text import Text
    return Text.from_markup(text).plain


def markdown(blocks: list[Block]) -> str:
    """The same blocks as GitHub-flavoured markdown, to paste into a pull request."""
    out: list[str] = []
    for i, b in enumerate(blocks):
        if isinstance(b, str):   # the first line is the heading; the others a list
            out.append(f"### {_plain(b)}" if i == 0 else f"- {_plain(b)}")
            continue
        cell = lambda t: _plain(t).replace("|", "\\|").replace("\n", " ")   # noqa: E731
        out += ["", f"**{_plain(b.title)}**", ""] if b.title else [""]
        out += ["| " + " | ".join(cell(c) for c in b.columns) + " |",
                "| " + " | ".join(":--" if i < b.text else "--:" for i in range(len(b.columns))) + " |"]
        out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows]
        out.append("")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def fmt_mem(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} MiB" if x >= 100 else f"{x:.1f} MiB"


def _change(s: dict[str, Any]) -> str:
    ch = s.get("baseline_change")
    if ch is None:
        return "-"
    text = f"{ch:+.1%}" if abs(ch) < 0.1 else f"{ch:+.0%}"
    if not s.get("baseline_significant"):
        return f"[dim]{text}[/]"
    return f"[red]{text} slower[/]" if ch > 0 else f"[green]{text} faster[/]"


def _break_even(s: dict[str, Any]) -> str:
    n = s.get("break_even_steps")
    return "-" if n is None else n if isinstance(n, str) else f"{n:,.0f}"


# The figures of a cell: (header, value, only with --wide). Columns empty in a group are dropped.
FIGURES: list[tuple[str, Callable[[dict[str, Any]], str], bool]] = [
    ("step", lambda s: fmt_s(s.get("step_s_median")), False),
    ("IQR", lambda s: fmt_s(s.get("step_s_iqr")), False),
    ("noise", lambda s: "-" if s.get("noise") is None else f"±{s['noise']:.1%}", True),
    ("vs\nmanual", lambda s: _ratio(s.get("speed_vs_manual")), False),
    ("CUDA x", lambda s: _ratio(s.get("cuda_speedup")), False),
    ("final\nloss", lambda s: fmt_loss(s.get("final_loss")), False),
    ("acc.", lambda s: fmt_acc(s.get("accuracy")), False),
    ("peak\nRSS", lambda s: fmt_mem(s.get("rss_peak_mib")), False),
    *((name, figure, False) for name, figure in table_columns()),
    ("setup", lambda s: fmt_s(s.get("setup_s")), True),
    ("train", lambda s: fmt_s(s.get("train_s")), True),
    ("samples/s", lambda s: "-" if s.get("samples_per_s") is None else f"{s['samples_per_s']:,.0f}", True),
    ("CUDA\npeak", lambda s: fmt_mem(s.get("cuda_peak_allocated_mib")), True),
    ("updates", lambda s: "-" if s.get("steps") is None else f"{s['steps']:,}", True),
    ("compile", lambda s: fmt_s(s.get("compile_s")), True),
    ("break-\neven", _break_even, True),
]


# What a narrow terminal leaves out first (wide extras are not shown there at all).
# The work done (GFLOP/s, % of peak) is what #12 asked the table to explain, so it goes last.
SPARE = ["IQR", "peak\nRSS", "acc.", "GFLOP/s\n(% peak)"]


def _groups(cells: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Cells per study and experiment, in the order they were planned."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["study"], c["experiment"]), []).append(c)
    return groups


def group_table(study: str, experiment: str, cells: list[dict[str, Any]], devices: int, wide: bool,
                baseline: bool) -> Tab:
    labels = list(dict.fromkeys(c["label"] for c in cells))
    title = experiment if study == "matrix" else f"{study} study" if study == experiment else \
        f"{experiment} ({study} study)"
    if len(labels) == 1 and labels[0]:
        title += f" · {labels[0]}"
    lead = (["run"] if len(labels) > 1 else []) + ["variant"] + (["device"] if devices > 1 else []) + ["status"]
    figures = [(h, get) for h, get, only_wide in FIGURES if wide or not only_wide]
    if baseline:
        figures.append(("vs\nbaseline", _change))
    tab = Tab(title, lead + [h for h, _ in figures], text=len(lead), spare=SPARE)
    ordered = sorted(cells, key=lambda c: labels.index(c["label"]))   # each run's variants together
    last = None
    for c in ordered:
        if c["label"] != last:
            tab.sections.append(len(tab.rows))
        row = ([f"[dim]{c['label']}[/]" if c["label"] != last else ""] if len(labels) > 1 else [])
        last = c["label"]
        row += [c["variant"]] + ([c["device"]] if devices > 1 else [])
        row.append("" if c["status"] == "ok" else f"[yellow]{c['status']}[/]")
        s = c.get("summary") or {}
        row += [get(s) for _, get in figures]
        tab.rows.append(row)
    return tab.drop_empty(keep=1 if len(labels) == 1 else 2)


def comparison_blocks(doc: dict[str, Any], wide: bool = False) -> list[Block]:
    """Everything `compare` and `report` show, as tables and lines: one table per experiment,
    the verdicts, compile break-evens, each study's own section, then failures and notes."""
    from bpbench import studies

    cells = doc["cells"]
    devices = list(dict.fromkeys(c["device"] for c in cells))
    baseline = doc.get("baseline") is not None
    title = f"[bold]bpbench compare · preset {doc['preset']}[/]" + (f" · {devices[0]}" if len(devices) == 1 else "") \
        + (" · [red]INTERRUPTED[/]" if doc.get("interrupted") else "")
    blocks: list[Block] = [title]
    blocks += [group_table(study, exp, group, len(devices), wide, baseline)
               for (study, exp), group in _groups(cells).items()]
    blocks += verdicts(cells) + compile_lines(cells)
    if baseline:
        b = doc["baseline"]
        blocks.append(f"[dim]vs baseline: change of the median step time against {b.get('source')}; "
                      f"'slower'/'faster' only where the median and the 10th percentile both moved beyond "
                      f"their 95% intervals and by more than {b['threshold']:.0%}[/]")
        blocks += [f"[dim]baseline: {n}[/]" for n in b.get("notes") or []]
    for study in studies.REGISTRY.values():
        if doc.get(study.section):
            blocks += study.load().render(doc[study.section])
    for c in cells:
        if c["status"] not in ("ok", "unavailable"):
            blocks.append(f"[yellow]{c['key']}: {c['status']}: {c.get('error')}[/]")
    blocks += noise_warning(cells)
    blocks += [f"[dim]note: {note}[/]" for note in doc.get("notes", [])]
    missing = len(doc.get("planned", [])) - len(cells)
    if doc.get("interrupted") and missing > 0:
        blocks.append(f"[yellow]interrupted: {missing} planned cell(s) did not run[/]")
    return blocks


def noise_warning(cells: list[dict[str, Any]], limit: float = NOISY_IQR_SHARE) -> list[str]:
    """One line naming the cells whose step IQR exceeds `limit` of the median (the rule `run`
    warns by, torch.utils.benchmark's): their step times and ratios are to be read with care."""
    ran = [c for c in cells if c["status"] == "ok" and (c.get("summary") or {}).get("step_s_median")]
    noisy = [c for c in ran if (c["summary"].get("step_s_iqr") or 0) > limit * c["summary"]["step_s_median"]]
    if not noisy:
        return []
    names = ", ".join(c["key"].split(":", 1)[1] for c in noisy[:4]) + (", ..." if len(noisy) > 4 else "")
    return [f"[yellow]warning: step times are noisy in {len(noisy)} of {len(ran)} cells (IQR over "
            f"{limit:.0%} of the median: {names}); rerun on a quieter machine or with --repeat[/]"]


def print_comparison(doc: dict[str, Any], console: Console | None = None, wide: bool = False) -> None:
    show(comparison_blocks(doc, wide), console or wide_console(wide))


def _clearly_slower(c: dict[str, Any], best: dict[str, Any]) -> bool:
    """Is `c` slower than `best` beyond the noise? From every recorded step where both cells have
    them (noise.py), else by the threshold alone."""
    from bpbench import compare, noise
    r = noise.ratio(compare.step_samples(c.get("runs") or []), compare.step_samples(best.get("runs") or []))
    if r is not None:
        return r.significant()
    return c["summary"]["step_s_median"] / best["summary"]["step_s_median"] - 1 > noise.MIN_CHANGE


def verdicts(cells: list[dict[str, Any]]) -> list[str]:
    """One line per experiment, run and device: the fastest variant and how the others compare."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if c["study"] == "matrix" and c["status"] == "ok" and (c.get("summary") or {}).get("step_s_median"):
            groups.setdefault((c["experiment"], c["label"], c["device"]), []).append(c)
    lines = []
    for (exp, label, device), group in groups.items():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda c: c["summary"]["step_s_median"])
        best = group[0]["summary"]["step_s_median"]
        where = f"[bold]{exp}{f' ({label})' if label else ''} on {device}[/]"
        slower = {c["variant"]: _clearly_slower(c, group[0]) for c in group[1:]}
        if not any(slower.values()):
            times = ", ".join(f"{c['variant']} {fmt_s(c['summary']['step_s_median'])}" for c in group)
            lines.append(f"{where}: no variant is clearly faster per step ({times}: within the measured noise)")
            continue
        others = ", ".join(f"{c['variant']} " + (f"{c['summary']['step_s_median'] / best:.1f}x slower"
                                                 if slower[c["variant"]] else "within noise") for c in group[1:])
        lines.append(f"{where}: fastest per step is {group[0]['variant']} ({fmt_s(best)}); {others}")
    return lines


def compile_lines(cells: list[dict[str, Any]]) -> list[str]:
    """For each compiling cell: compile time, its step against the reference's, the break-even."""
    by_key = {c["key"]: c for c in cells}
    lines = []
    for c in cells:
        s = c.get("summary") or {}
        if s.get("compile_s") is None or c["status"] != "ok":
            continue
        from bpbench.compare import cell_key
        ref_name = s.get("parity_reference")
        ref = by_key.get(cell_key(c["study"], c["experiment"], ref_name, c["device"], c["label"])) if ref_name else None
        ref_step = (ref.get("summary") or {}).get("step_s_median") if ref else None
        n = s.get("break_even_steps")
        pays = "it never pays off (not faster per step)" if n == "never" else \
            f"it pays off after {n:,.0f} steps" if n is not None else "no reference step time to weigh it against"
        where = c["experiment"] + (f" ({c['label']})" if c["label"] else "")
        lines.append(f"[bold]{where} on {c['device']}[/]: {c['variant']} compiles in {fmt_s(s['compile_s'])}, then {fmt_s(s.get('step_s_median'))} a step"
                     + (f" against {ref_name}'s {fmt_s(ref_step)}" if ref_step else "") + f": {pays}")
    return lines


class CellProgress:
    """Per-cell progress of a comparison on stderr, with the elapsed time and an estimate of what
    is left: a live line in a terminal, one plain line per finished cell elsewhere (CI logs)."""

    def __init__(self, stream=None):
        import sys
        import time
        self.stream = stream or sys.stderr
        self.clock = time.perf_counter
        self.t0 = self.clock()
        self.done: list[float] = []
        self.live = None
        if self.stream.isatty():
            from rich.console import Console as _Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 console=_Console(file=self.stream), transient=True)
            self.live.start()
            self.task = self.live.add_task("", total=None, eta="")

    def eta(self, remaining: int) -> str:
        """What is left, from the mean time of the finished cells (cells differ: a rough guide)."""
        if not self.done:
            return ""
        return f"about {fmt_s(remaining * sum(self.done) / len(self.done))} left"

    def __call__(self, i: int, n: int, cell, rec, seconds: float) -> None:
        if rec is None:
            if self.live:
                self.live.update(self.task, description=f"[{i}/{n}] {cell.key}", total=n, completed=i - 1,
                                 eta=self.eta(n - i + 1))
            return
        self.done.append(seconds)
        elapsed = self.clock() - self.t0
        line = f"[{i}/{n}] {cell.key}: {rec['status']} in {seconds:.1f} s" + (f" ({rec['error']})" if rec["error"] else "") \
            + f" · {fmt_s(elapsed)} elapsed" + (f" · {self.eta(n - i)}" if i < n else "")
        if self.live:
            self.live.console.print(line, markup=False, highlight=False)
            self.live.update(self.task, completed=i)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.live.stop()
