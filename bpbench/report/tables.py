"""A comparison for people: one table per experiment, the verdicts, compile break-evens, notes; rendered
to the terminal (rich) or to markdown from the same blocks.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from bpbench.report.format import (
    TABLE_WIDTH,
    Block,
    Tab,
    _plain,
    fmt_acc,
    fmt_bytes,
    fmt_count,
    fmt_cell_bound,
    fmt_loss,
    fmt_mem,
    fmt_ratio,
    fmt_s,
)
from bpbench.results.cells import cell_key
from bpbench.results.contention import NOT_COMPARABLE
from bpbench.results.figures import table_columns
from bpbench.results.timing import NOISY_IQR_SHARE, is_noisy


def wide_console(wide: bool = False) -> Console:
    """The terminal's width (or $COLUMNS); 100 columns when writing to a file or pipe; --wide:
    as wide as the tables need."""
    import os
    import sys
    if wide:
        return Console(width=max(200, Console().width))
    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=TABLE_WIDTH)


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
        # a table the spares could not bring within the width: printed at its own width (wider
        # lines), for rich would shrink even no_wrap columns to the console and cut digits off
        if b.width() <= console.width:
            console.print(tab)
        else:
            Console(file=console.file, width=b.width(), color_system=console.color_system,
                    force_terminal=console.is_terminal).print(tab, crop=False)
    if hidden:
        console.print(f"[dim]left out to fit {console.width} columns: {', '.join(hidden)} "
                      "(--wide, --format markdown and the files have them)[/]")


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


def _change(s: dict[str, Any]) -> str:
    if s.get("baseline_not_comparable"):
        return "[yellow]not comparable[/]"
    ch = s.get("baseline_change")
    if ch is None:
        return "-"
    text = f"{ch:+.1%}" if abs(ch) < 0.1 else f"{ch:+.0%}"
    if not s.get("baseline_significant"):
        return f"[dim]{text}[/]"
    more, less = ("more", "fewer") if "baseline_instructions_per_step" in s else ("slower", "faster")
    return f"[red]{text} {more}[/]" if ch > 0 else f"[green]{text} {less}[/]"


def _break_even(s: dict[str, Any]) -> str:
    n = s.get("break_even_steps")
    return "-" if n is None else n if isinstance(n, str) else f"{n:,.0f}"


# The figures of a cell: (header, value, only with --wide). Columns empty in a group are dropped.
FIGURES: list[tuple[str, Callable[[dict[str, Any]], str], bool]] = [
    ("step", lambda s: "invalid" if s.get("invalid_timing") else fmt_s(s.get("step_s_median")), False),
    ("instr.\n/step", lambda s: fmt_count(s.get("instructions_per_step")), False),
    ("IQR", lambda s: fmt_s(s.get("step_s_iqr")), False),
    ("noise", lambda s: "-" if s.get("noise") is None else f"±{s['noise']:.1%}", True),
    ("vs\nmanual", lambda s: fmt_ratio(s.get("speed_vs_manual")), False),
    ("CUDA x", lambda s: fmt_ratio(s.get("cuda_speedup")), False),
    ("final\nloss", lambda s: fmt_loss(s.get("final_loss")), False),
    ("acc.", lambda s: fmt_acc(s.get("accuracy")), False),
    ("peak\nRSS", lambda s: fmt_mem(s.get("rss_peak_mib")), False),
    ("saved\nfor bwd", lambda s: fmt_bytes(s.get("saved_for_backward_bytes")), False),
    *((name, figure, False) for name, figure in table_columns()),
    ("bound\n(x floor)", fmt_cell_bound, False),
    ("setup", lambda s: fmt_s(s.get("setup_s")), True),
    ("train", lambda s: fmt_s(s.get("train_s")), True),
    ("samples/s", lambda s: "-" if s.get("samples_per_s") is None else f"{s['samples_per_s']:,.0f}", True),
    ("CUDA\npeak", lambda s: fmt_mem(s.get("cuda_peak_allocated_mib")), True),
    ("updates", lambda s: "-" if s.get("steps") is None else f"{s['steps']:,}", True),
    ("compile", lambda s: fmt_s(s.get("compile_s")), True),
    ("break-\neven", _break_even, True),
]


# Figures of a cell measured under callgrind (--metric instructions) that are valgrind's, not its own.
UNDER_CALLGRIND = {"step", "IQR", "noise", "peak\nRSS", "setup", "train", "samples/s"}

# What a narrow terminal leaves out first (wide extras are not shown there at all).
# The work done (GFLOP/s, % of peak) and what bounds the step explain the step time, so they go last.
SPARE = ["IQR", "peak\nRSS", "saved\nfor bwd", "acc.", "GFLOP/s\n(% peak)", "bound\n(x floor)"]


def _groups(cells: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Cells per study and experiment, in the order they were planned."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["study"], c["experiment"]), []).append(c)
    return groups


def group_table(study: str, experiment: str, cells: list[dict[str, Any]], devices: int, wide: bool,
                baseline: bool, counted: bool = False) -> Tab:
    labels = list(dict.fromkeys(c["label"] for c in cells))
    title = experiment if study == "matrix" else f"{study} study" if study == experiment else \
        f"{experiment} ({study} study)"
    if len(labels) == 1 and labels[0]:
        title += f" · {labels[0]}"
    lead = (["run"] if len(labels) > 1 else []) + ["variant"] + (["device"] if devices > 1 else []) + ["status"]
    base = next((c["summary"].get("speed_baseline") for c in cells if (c.get("summary") or {}).get("speed_baseline")),
                "ref.")
    figures = [(f"vs\n{base}" if h == "vs\nmanual" else h, get) for h, get, only_wide in FIGURES
               if (wide or not only_wide) and not (counted and h in UNDER_CALLGRIND)]
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
        s = c.get("summary") or {}
        row.append(("[yellow]busy[/]" if s.get("contended") and not counted else "") if c["status"] == "ok"
                   else f"[yellow]{c['status']}[/]")
        row += [get(s) for _, get in figures]
        tab.rows.append(row)
    return tab.drop_empty(keep=1 if len(labels) == 1 else 2)


def comparison_blocks(doc: dict[str, Any], wide: bool = False, sections: list[Block] = ()) -> list[Block]:
    """Everything `compare` and `report` show, as tables and lines: one table per experiment,
    the verdicts, compile break-evens, the studies' own `sections` (rendered by the caller:
    reports know no study), then failures and notes."""
    cells = doc["cells"]
    devices = list(dict.fromkeys(c["device"] for c in cells))
    baseline = doc.get("baseline") is not None
    counted = doc.get("metric") == "instructions"
    title = f"[bold]bpbench compare · preset {doc['preset']}[/]" + (f" · {devices[0]}" if len(devices) == 1 else "") \
        + (" · instructions" if counted else "") + (" · [red]INTERRUPTED[/]" if doc.get("interrupted") else "")
    blocks: list[Block] = [title]
    blocks += [group_table(study, exp, group, len(devices), wide, baseline, counted)
               for (study, exp), group in _groups(cells).items()]
    if counted:   # verdicts, break-evens and the noise warning read step times: valgrind's here
        blocks.append("[dim]--metric instructions: every cell ran under callgrind; ratios and changes compare "
                      "instructions per step (the median counted step)[/]")
    else:
        blocks += verdicts(cells) + compile_lines(cells)
    if baseline:
        b = doc["baseline"]
        rule = ("instructions per step, step by step, against {}; 'more'/'fewer' only where the median "
                "step ratio is beyond its 95% interval and off by more than {:.0%}") if counted else \
            ("the median step time against {}; 'slower'/'faster' only where the median and the 10th "
             "percentile both moved beyond their 95% intervals and by more than {:.0%}")
        blocks.append("[dim]vs baseline: change of " + rule.format(b.get("source"), b["threshold"]) + "[/]")
        blocks += [f"[dim]baseline: {n}[/]" for n in b.get("notes") or []]
    blocks += list(sections)
    for c in cells:
        if c["status"] not in ("ok", "unavailable"):
            blocks.append(f"[yellow]{c['key']}: {c['status']}: {c.get('error')}[/]")
        if (c.get("summary") or {}).get("invalid_timing"):
            blocks.append(f"[yellow]{c['key']}: timing invalid ({c['summary']['invalid_timing']}): no step time, "
                          "ratio or verdict is drawn from it[/]")
    blocks += [] if counted else busy_warning(cells) + noise_warning(cells)   # of step times: valgrind's here
    blocks += [f"[dim]note: {note}[/]" for note in doc.get("notes", [])]
    missing = len(doc.get("planned", [])) - len(cells)
    if doc.get("interrupted") and missing > 0:
        blocks.append(f"[yellow]interrupted: {missing} planned cell(s) did not run[/]")
    return blocks


def noise_warning(cells: list[dict[str, Any]], limit: float = NOISY_IQR_SHARE) -> list[str]:
    """One line naming the cells whose step IQR exceeds `limit` of the median (the rule `run`
    warns by, torch.utils.benchmark's): their step times and ratios are to be read with care."""
    ran = [c for c in cells if c["status"] == "ok" and (c.get("summary") or {}).get("step_s_median")]
    noisy = [c for c in ran if is_noisy(c["summary"]["step_s_median"], c["summary"].get("step_s_iqr"), limit)]
    if not noisy:
        return []
    names = ", ".join(c["key"].split(":", 1)[1] for c in noisy[:4]) + (", ..." if len(noisy) > 4 else "")
    return [f"[yellow]warning: step times are noisy in {len(noisy)} of {len(ran)} cells (IQR over "
            f"{limit:.0%} of the median: {names}); rerun on a quieter machine or with --repeat[/]"]


def _busy(c: dict[str, Any]) -> bool:
    return c["status"] == "ok" and bool((c.get("summary") or {}).get("contended"))


def busy_warning(cells: list[dict[str, Any]]) -> list[str]:
    """One line naming the cells measured on a busy machine: no ratio, verdict or baseline change
    is drawn from them."""
    busy = [c for c in cells if _busy(c)]
    if not busy:
        return []
    names = ", ".join(c["key"].split(":", 1)[1] for c in busy[:4]) + (", ..." if len(busy) > 4 else "")
    ran = sum(c["status"] == "ok" for c in cells)
    return [f"[yellow]warning: {len(busy)} of {ran} cells {NOT_COMPARABLE} ({names}; "
            f"{busy[0]['summary']['contention']}): no ratio or verdict is drawn from them; rerun on a quieter machine[/]"]


def print_comparison(doc: dict[str, Any], console: Console | None = None, wide: bool = False,
                     sections: list[Block] = ()) -> None:
    show(comparison_blocks(doc, wide, sections), console or wide_console(wide))


def _clearly_slower(c: dict[str, Any], best: dict[str, Any]) -> bool:
    """Is `c` slower than `best` beyond the noise? From every recorded step where both cells have
    them (noise.py), else by the threshold alone."""
    from bpbench.results import noise
    r = noise.ratio(noise.step_samples(c.get("runs") or []), noise.step_samples(best.get("runs") or []))
    if r is not None:
        return r.significant()
    return c["summary"]["step_s_median"] / best["summary"]["step_s_median"] - 1 > noise.MIN_CHANGE


def _slower_by(step: float, best: float) -> str:
    """'3.1x slower'; a ratio beyond float64 (1e308 s against 1e-4 s) says the times instead."""
    ratio = step / best
    return f"{fmt_ratio(ratio, 1)} slower" if ratio < float("inf") else f"far slower ({fmt_s(step)} a step)"


def verdicts(cells: list[dict[str, Any]]) -> list[str]:
    """One line per experiment, run and device: the fastest variant and how the others compare."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if c["study"] == "matrix" and c["status"] == "ok" and (c.get("summary") or {}).get("step_s_median"):
            groups.setdefault((c["experiment"], c["label"], c["device"]), []).append(c)
    lines = []
    for (exp, label, device), group in groups.items():
        where = f"[bold]{exp}{f' ({label})' if label else ''} on {device}[/]"
        busy = [c["variant"] for c in group if _busy(c)]
        if busy and len(group) > 1:   # kept out of every verdict: its time measured the queue
            lines.append(f"{where}: {', '.join(busy)} {NOT_COMPARABLE}")
        group = [c for c in group if not _busy(c)]
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda c: c["summary"]["step_s_median"])
        best = group[0]["summary"]["step_s_median"]
        slower = {c["variant"]: _clearly_slower(c, group[0]) for c in group[1:]}
        if not any(slower.values()):
            times = ", ".join(f"{c['variant']} {fmt_s(c['summary']['step_s_median'])}" for c in group)
            lines.append(f"{where}: no variant is clearly faster per step ({times}: within the measured noise)")
            continue
        others = ", ".join(f"{c['variant']} " + (_slower_by(c["summary"]["step_s_median"], best)
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
        ref_name = s.get("parity_reference")
        ref = by_key.get(cell_key(c["study"], c["experiment"], ref_name, c["device"], c["label"])) if ref_name else None
        ref_step = (ref.get("summary") or {}).get("step_s_median") if ref else None
        n = s.get("break_even_steps")
        pays = "it never pays off (not faster per step)" if n == "never" else \
            f"it pays off after {n:,.0f} steps" if n is not None else \
            f"break-even {NOT_COMPARABLE}" if _busy(c) or (ref and _busy(ref)) else \
            "no reference step time to weigh it against"
        where = c["experiment"] + (f" ({c['label']})" if c["label"] else "")
        lines.append(f"[bold]{where} on {c['device']}[/]: {c['variant']} compiles in {fmt_s(s['compile_s'])}, then {fmt_s(s.get('step_s_median'))} a step"
                     + (f" against {ref_name}'s {fmt_s(ref_step)}" if ref_step else "") + f": {pays}")
    return lines
