"""The common nouns of every report: numbers formatted with their units, and a table as data (`Tab`).

Every other report module, and the studies' own sections, import only this; it imports nothing of bpbench.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


def measured(x: Any) -> bool:
    """A figure a report may print as a number: finite and not negative. Times, sizes and ratios
    in a file that is damaged or edited can be NaN, infinite or negative: printed as "invalid",
    never as "nan µs" or "infx"."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf") and x >= 0


def fmt_s(x: float | None) -> str:
    """Seconds with a unit that keeps three significant digits."""
    if x is None:
        return "-"
    if not measured(x):
        return "invalid"
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


def fmt_count(n: float | None) -> str:
    """FLOP counts with an SI prefix: 170.1 M, 1.273 G."""
    if n is None:
        return "-"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n:.4g}"


def fmt_si(n: float | None, unit: str) -> str:
    """A count with its unit and an SI prefix: 52 FLOP, 1.273 GFLOP, 936 MB."""
    text = fmt_count(n)
    return text if n is None else f"{text}{unit}" if text[-1].isalpha() else f"{text} {unit}"


def fmt_rate(x: float | None) -> str:
    """A rate's figure, GB/s or GFLOP/s: 3 significant digits, whole numbers with separators from 1,000."""
    return "-" if x is None else f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def fmt_bytes(n: float | None) -> str:
    """Bytes with a binary prefix: 256 KiB, 1.5 MiB, 768 MiB (what cache sizes are quoted in)."""
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n:.0f} B"


def fmt_bound(a: dict[str, Any]) -> str:
    """'overhead · 41 ATen ops x 1.6 µs = 65.6 µs · step 71 µs = 1.1x the floor': the largest
    floor of a result's analysis (results.bounds), what makes it up, and the step's multiple."""
    bound, c = a.get("bound"), a.get("ceilings") or {}
    if bound is None:
        return "-"
    why = {"overhead": lambda: f"{a['aten_ops_per_step']} ATen ops x {c.get('op_overhead_us', 0):.3g} µs",
           "memory": lambda: f"{fmt_si(a['bytes_per_step'], 'B')} at {fmt_rate(a.get('effective_bandwidth_gbs'))} GB/s",
           "compute": lambda: f"{fmt_si(a['flops_per_step'], 'FLOP')} at {fmt_rate(c.get('gflops'))} GFLOP/s"}[bound]()
    text = f"{bound} · {why} = {fmt_s(a['floors_s'][bound])}"
    if a.get("step_over_bound") is not None:
        text += f" · step {fmt_s(a['step_s'])} = {fmt_multiple(a['step_over_bound'])} the floor"
    if a.get("counted_step") == "eager":
        text += " (of the eager step this variant compiles or replays: it may run below it)"
    return text


def fmt_multiple(x: float | None) -> str:
    """A step's multiple of its floor: 1.1x, 12x, 3400x."""
    return "-" if x is None else f"{x:.2g}x" if x < 10 else f"{x:.0f}x"


def fmt_cell_bound(s: dict[str, Any]) -> str:
    """A comparison cell's bound and its step's multiple of it: 'memory 12x' ('eager': the floor
    of the eager step a compiled variant stands for)."""
    if not s.get("bound"):
        return "-"
    times = f" {fmt_multiple(s['step_over_bound'])}" if s.get("step_over_bound") is not None else ""
    return f"{s['bound']}{times}" + (" eager" if s.get("bound_of_eager_step") else "")


def fmt_step_counts(a: dict[str, Any]) -> str:
    """What one step does: FLOPs (matrix products and element-wise apart), bytes read and written,
    ATen ops; then the same per phase."""
    head = (f"{fmt_si(a['flops_per_step'], 'FLOP')} ({fmt_count(a.get('matmul_flops'))} matrix products, "
            f"{fmt_count(a.get('elementwise_flops'))} element-wise) · {fmt_si(a['bytes_per_step'], 'B')} read "
            f"and written · {a['aten_ops_per_step']} ATen ops")
    phases = " · ".join(f"{p} {c['aten_ops_per_step']}, {fmt_si(c['bytes_per_step'], 'B')}, "
                        f"{fmt_count(c['flops_per_step'])}" for p, c in (a.get("phases") or {}).items())
    return head + (f"\nper phase (ops, bytes, FLOP): {phases}" if phases else "")


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


TABLE_WIDTH = 100   # a comparison's tables fit this many columns (more with --wide)


FOLD = 16           # a text cell (a run's label) may fold to this width to make room for numbers


@dataclass
class Tab:
    """A table as data, so one comparison renders to the terminal (rich) and to markdown alike.
    Cells may hold rich markup; the first `text` columns are text, the rest numbers. `spare`
    names columns a narrow terminal may leave out, the first to go first (markdown keeps all);
    `narrow`, the same table written more tightly, for a terminal it does not fit."""
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    text: int = 1
    sections: list[int] = field(default_factory=list)    # row indices that start a new section
    spare: list[str] = field(default_factory=list)
    narrow: "Tab | None" = None

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
        """Its narrow form if it does not fit `width`, then without spare columns until it does;
        returns it and what was left out."""
        tab, left = self.narrow if self.narrow and self.width() > width else self, []
        for name in self.spare:
            if tab.width() <= width:
                break
            if name in tab.columns:
                tab = tab.keep([i for i, c in enumerate(tab.columns) if c != name])
                left.append(name.replace("\n", " "))
        return tab, left


Block = Union[Tab, str]     # a table, or a line of text (rich markup allowed)


def _plain(text: str) -> str:
    from rich.text import Text
    return Text.from_markup(text).plain


def fmt_ratio(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}x" if measured(x) and x > 0 else "invalid"


def fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def fmt_mem(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} MiB" if x >= 100 else f"{x:.1f} MiB"
