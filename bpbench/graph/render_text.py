"""The graph for the terminal: node by node in forward order, each with the edges coming in.

Every incoming edge is one row: where it comes from, the forward value it carries (→) and the
gradient that flows back along it (◀), the way seed 001 writes values above its arrows and
gradients beneath them. Fits `width` columns (100): a long value wraps inside its column.
"""

from __future__ import annotations

import textwrap

from bpbench.graph import fmt
from bpbench.graph.model import Graph

WIDTH = 100


def _columns(width: int) -> tuple[int, int, int]:
    """(source, value, gradient) widths; the row is "  SRC → VALUE ◀ GRAD"."""
    src = 22
    rest = width - 2 - src - 3 - 3
    return src, rest // 2, rest - rest // 2


def _wrap(cell: str | list[str], width: int) -> list[str]:
    """A cell's lines (a matrix: one row a line), each wrapped to the column."""
    lines = [cell] if isinstance(cell, str) else cell
    return [w for line in lines for w in textwrap.wrap(line, width, break_on_hyphens=False)] or [""]


def _row(cells: list, widths: tuple[int, ...], marks: tuple[str, ...]) -> list[str]:
    if len(cells[0]) > widths[0]:       # a long source name gets a line of its own
        return ["  " + cells[0]] + _row(["", *cells[1:]], widths, marks)
    wrapped = [_wrap(c, w) for c, w in zip(cells, widths)]
    lines = []
    for i in range(max(len(w) for w in wrapped)):
        parts = [(w[i] if i < len(w) else "").ljust(width) for w, width in zip(wrapped, widths)]
        sep = marks if i == 0 else tuple(" " * len(m) for m in marks)
        lines.append(("  " + parts[0] + sep[0] + parts[1] + sep[1] + parts[2]).rstrip())
    return lines


def _heading(text: str, right: str, width: int) -> list[str]:
    if not right:
        return [text[:width]]
    if len(text) + 2 + len(right) <= width:
        return [text + " " * (width - len(text) - len(right)) + right]
    return [text[:width]] + textwrap.wrap(right, width, initial_indent="    ", subsequent_indent="    ")


def render(g: Graph, width: int = WIDTH) -> str:
    widths = _columns(width)
    lines = textwrap.wrap(fmt.headline(g), width)
    lines += ["", *_row(["from", "forward value", "gradient back"], widths, ("   ", "   "))]
    labels = {n.id: n.label for n in g.nodes}
    for node in g.nodes:
        incoming = g.inputs_of(node.id)
        if not incoming:
            continue
        lines.append("")
        lines += _heading(fmt.op_label(node) + (f"  [{node.detail}]" if node.detail and node.kind == "op" else ""),
                          fmt.saves(node), width)
        for e in incoming:
            src = g.node(e.src)
            name = labels[e.src] + (f" ({e.label})" if e.label and not labels[e.src].endswith(e.label) else "")
            lines += _row([name, fmt.lines(src.output), fmt.lines(e.grad, "(none: needs no gradient)", grad=True)],
                          widths, (" → ", " ◀ "))
    lines += _footer(g, width)
    return "\n".join(lines) + "\n"


def _footer(g: Graph, width: int) -> list[str]:
    out = ["", f"saved for backward by this graph's nodes: {fmt.size(g.saved_bytes)} (each storage once)"]
    sfb = g.saved_for_backward
    if sfb:
        out.append("  " + fmt.totals(sfb) + " (the table below says which tensors)")
    out += [line for n in g.notes for line in textwrap.wrap(n, width, initial_indent="note: ", subsequent_indent="      ")]
    return out


SAVED_COLUMNS = (("tensor", 24), ("layer", 16), ("shape", 11), ("dtype", 7), ("autograd", 9), ("manual", 9),
                 ("analytic", 9))


def _saved_line(cells) -> str:
    return " ".join(str(c)[:w].ljust(w) if i < 4 else str(c).rjust(w)
                    for i, (c, (_, w)) in enumerate(zip(cells, SAVED_COLUMNS))).rstrip()


def saved_table(sfb: dict, width: int = WIDTH) -> str:
    """The saved-for-backward table: per tensor who keeps it (and how much), per layer, the totals,
    and a sentence for every tensor autograd and the hand-written layers do not keep alike."""
    worlds = fmt.WAYS
    out = [_saved_line([c for c, _ in SAVED_COLUMNS])]
    for t in sfb["tensors"]:
        out.append(_saved_line([t["tensor"], t["layer"], "×".join(map(str, t["shape"])) or "scalar", t["dtype"],
                                *(fmt.size(t[w]) if t[w] is not None else "-" for w in worlds)]))
    out.append("per layer")
    for layer in sfb["layers"]:
        out.append(_saved_line(["  " + layer["layer"], layer["op"], "", "", *(fmt.size(layer[w]) for w in worlds)]))
    out.append(_saved_line(["total", "", "", "", *(fmt.size(sfb[w]) for w in worlds)]))
    for d in sfb.get("differences", []):
        out += textwrap.wrap(d, width, initial_indent="- ", subsequent_indent="  ")
    return "\n".join(out) + "\n"
