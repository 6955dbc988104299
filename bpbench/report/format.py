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
