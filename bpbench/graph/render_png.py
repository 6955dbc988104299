"""The graph as a PNG (or SVG) drawn with matplotlib: no Graphviz needed.

The layout is the book's: the result on the right, each node's inputs to its left, leaves (data,
parameters) beside the node that reads them, a chain of operations on one line. Every arrow has
the forward value above it and the gradient flowing back beneath it (red); under every operation,
what it saves for backward (blue).
"""

from __future__ import annotations

import io
import math

from bpbench.graph import fmt
from bpbench.graph.model import Graph, Node
from bpbench.graph.render_dot import FORWARD, GRADIENT, SAVED, _short
from bpbench.results.files import GRAPH_NAME

DY = 1.05                 # inches between leaf rows
CHAR = 0.072              # inches per character of an 8-point edge label


class _Layout:
    """x: columns from the result leftwards; y: a chain of operations on one line (a node sits on
    the line of its first input that is an operation), the leaves it reads on the rows next to
    it, and nothing in a column closer than a row to anything else."""

    def __init__(self, g: Graph, gap: float):
        self.g, self.gap = g, gap
        self.inputs: dict[str, list[str]] = {n.id: [] for n in g.nodes}
        for e in g.edges:
            self.inputs[e.dst].append(e.src)
        self.depth: dict[str, int] = {}
        self.y: dict[str, float] = {}
        top = 0.0
        for root in [n.id for n in g.nodes if not any(e.src == n.id for e in g.edges)]:
            top = self._place(root, 0, top)
        self._separate()
        low = min(self.y.values())
        self.y = {k: v - low + 0.5 for k, v in self.y.items()}

    def _place(self, nid: str, depth: int, top: float) -> float:
        """Place nid's unplaced inputs, then nid; returns the lowest row used + 1."""
        self.depth[nid] = depth
        fresh = [s for s in self.inputs[nid] if s not in self.y]     # a shared one stays where it is
        ops = [s for s in fresh if self.inputs[s]]
        leaves = [s for s in fresh if not self.inputs[s]]
        bottom = top
        for src in ops:
            bottom = self._place(src, depth + 1, bottom)
        if ops:
            y = self.y[ops[0]]
            above = leaves[:len(leaves) // 2]
            rows = [y - 1 - i for i in range(len(above))][::-1] + [y + 1 + i for i in range(len(leaves) - len(above))]
        else:
            y = top + (len(leaves) - 1) / 2 if leaves else top
            rows = [top + i for i in range(len(leaves))]
        for leaf, row in zip(leaves, rows):
            self.depth[leaf], self.y[leaf] = depth + 1, row
        self.y[nid] = y
        return max([bottom, y + 1] + [r + 1 for r in rows])

    def _separate(self) -> None:
        """Push apart nodes of one column that landed closer than a row."""
        columns: dict[int, list[str]] = {}
        for nid, d in self.depth.items():
            columns.setdefault(d, []).append(nid)
        for nodes in columns.values():
            nodes.sort(key=lambda n: self.y[n])
            for a, b in zip(nodes, nodes[1:]):
                if self.y[b] - self.y[a] < 1:
                    self.y[b] = self.y[a] + 1

    def columns(self, half: dict[str, float]) -> None:
        """x of every column, left to right: as far apart as the widest nodes and the labels need."""
        deepest = max(self.depth.values())
        widths = [max(half[n] for n, d in self.depth.items() if d == deepest - c) for c in range(deepest + 1)]
        self.x = [0.3 + widths[0]]
        for c in range(1, deepest + 1):
            self.x.append(self.x[-1] + widths[c - 1] + self.gap + widths[c])
        self.width = self.x[-1] + widths[-1] + 0.3

    def xy(self, nid: str) -> tuple[float, float]:
        return self.x[max(self.depth.values()) - self.depth[nid]], -self.y[nid] * DY

    def height(self) -> float:
        return (max(self.y.values()) + 0.5) * DY + 1.0


def _box_text(node: Node) -> str:
    return fmt.op_label(node).replace(" (", "\n(")


def half_width(node: Node) -> float:
    """Half the node's width in inches: where its arrows start and end."""
    if node.kind != "op":
        return 0.1 + 0.04 * len(node.label)
    if fmt.SYMBOLS.get(node.op):
        return 0.24
    return (0.075 * max(len(t) for t in _box_text(node).split("\n")) + 0.2) / 2


def _draw_node(ax, node: Node, x: float, y: float, half: float) -> None:
    from matplotlib.patches import Circle, FancyBboxPatch

    if node.kind != "op":
        ax.text(x, y, node.label, ha="center", va="center", fontsize=10, color=FORWARD)
        return
    sym = fmt.SYMBOLS.get(node.op)
    if sym:
        ax.add_patch(Circle((x, y), half, fill=False, lw=1.2, color=FORWARD))
        ax.text(x, y, sym, ha="center", va="center", fontsize=15)
        ax.text(x, y + 0.33, node.label, ha="center", va="bottom", fontsize=8.5, color="#555555")
    else:
        ax.add_patch(FancyBboxPatch((x - half, y - 0.22), 2 * half, 0.44, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    fill=False, lw=1.1, color=FORWARD))
        ax.text(x, y, _box_text(node), ha="center", va="center", fontsize=8.5, linespacing=1.1)
    if node.detail:           # autograd: the module and the torch function it came from
        ax.text(x, y + 0.27, node.detail, ha="center", va="bottom", fontsize=7.5, color="#555555")
    if node.saved:
        ax.text(x, y - 0.3, fmt.saves_short(node), ha="center", va="top", fontsize=7.5, color=SAVED)


def _edge_labels(ax, start, end, value: str, grad: str) -> None:
    """The value just above the arrow and the gradient just beneath it, both along the arrow
    (1 data unit is 1 inch on both axes, so the angle in data is the angle on the page)."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy) or 1.0
    angle = math.degrees(math.atan2(dy, dx))
    nx, ny = -dy / length * 0.06, dx / length * 0.06          # the unit normal, 0.06 inch
    # 40 % along from the source: arrows that meet at a node are still apart there
    mx, my = start[0] + 0.4 * dx, start[1] + 0.4 * dy
    ax.text(mx + nx, my + ny, value, ha="center", va="bottom", fontsize=8, color=FORWARD,
            rotation=angle, rotation_mode="anchor")
    if grad:
        ax.text(mx - nx, my - ny, grad, ha="center", va="top", fontsize=8, color=GRADIENT,
                rotation=angle, rotation_mode="anchor")


def render(g: Graph, fmt_name: str = "png", dpi: int = 150) -> bytes:
    """PNG (or SVG) bytes, drawn by matplotlib (a bpbench dependency; no Graphviz)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    labels = [("\n".join(map(_short, fmt.lines(g.node(e.src).output))), "\n".join(map(_short, fmt.lines(e.grad, "", grad=True))))
              for e in g.edges]
    longest = max((len(line) for pair in labels for t in pair for line in t.split("\n")), default=8)
    matplotlib.rcParams["svg.fonttype"] = "none"     # an SVG keeps its text as text: small, searchable
    lay = _Layout(g, gap=max(1.2, CHAR * longest + 0.5))
    half = {n.id: half_width(n) for n in g.nodes}
    lay.columns(half)
    w, h = lay.width, lay.height()
    fig = plt.figure(figsize=(w, h), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, w)
    ax.set_ylim(-h + 0.75, 0.75)
    ax.axis("off")
    for n in g.nodes:
        _draw_node(ax, n, *lay.xy(n.id), half[n.id])
    for e, (value, grad) in zip(g.edges, labels):
        (x0, y0), (x1, y1) = lay.xy(e.src), lay.xy(e.dst)
        start, end = (x0 + half[e.src], y0), (x1 - half[e.dst], y1)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, lw=1.0, color=FORWARD,
                                     shrinkA=3, shrinkB=3))
        _edge_labels(ax, start, end, value, grad)
    fig.text(0.5, 1 - 0.12 / h, g.title, ha="center", va="top", fontsize=11)
    fig.text(0.5, 1 - 0.36 / h, "forward values above the arrows, gradients beneath (red)", ha="center",
             va="top", fontsize=8.5, color="#555555")
    buf = io.BytesIO()
    meta = {"Date": None, "Title": f"{GRAPH_NAME}: {g.title}"} if fmt_name == "svg" else None   # see files.GRAPH_NAME
    fig.savefig(buf, format=fmt_name, dpi=dpi, metadata=meta)
    plt.close(fig)
    return buf.getvalue()
