"""How a graph's numbers read, shared by every renderer (torch-free).

float64 values print as Python prints them (seed 001's 220.00000000000003: its shopping graph
runs on Python floats); float32 values with 4 significant digits, as seed 002 writes its 2-2-1 net.
Tensors too large to show are their shape and dtype: 12665×784 float32.
"""

from __future__ import annotations

from typing import Any

from bpbench.graph.model import WAYS, Graph, Node, Value
from bpbench.report.format import fmt_bytes as size

SYMBOLS = {"Mul": "×", "Add": "+"}   # the book's operator circles


def number(x: Any, dtype: str) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        if dtype in ("float64", "float"):
            return repr(x)
        return f"{x:.4g}"
    return str(x)


def nested(v: Any, dtype: str) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(nested(i, dtype) for i in v) + "]"
    return number(v, dtype)


def lines(v: Value | None, missing: str = "-", grad: bool = False) -> list[str]:
    """value() or gradient(), a matrix one row a line (a 2×2 weight reads as a 2×2 block)."""
    if v is not None and isinstance(v.values, list) and len(v.values) > 1 and isinstance(v.values[0], list) \
            and len(v.values[0]) > 1:          # a column (n×1) stays on one line
        rows = [nested(r, v.dtype) for r in v.values]
        return ["[" + rows[0] + ","] + [" " + r + "," for r in rows[1:-1]] + [" " + rows[-1] + "]"]
    return [(gradient if grad else value)(v, missing)]


def shape(v: Value) -> str:
    return "×".join(str(d) for d in v.shape) or "scalar"


def value(v: Value | None, missing: str = "-") -> str:
    """The values when the graph kept them, else shape and dtype."""
    if v is None:
        return missing
    if v.values is not None:
        return nested(v.values, v.dtype)
    return f"{shape(v)} {v.dtype}"


def gradient(v: Value | None, missing: str = "-") -> str:
    """A gradient: its values when small, else its norm (its shape is the value's, shown above)."""
    if v is not None and v.values is None and v.norm is not None:
        return f"‖g‖ {number(v.norm, 'float32')}"
    return value(v, missing)


def op_label(node: Node) -> str:
    """"mul_tax_layer ×", "layer1 Affine", "AddmmBackward0"."""
    if node.kind != "op":
        return node.label
    sym = SYMBOLS.get(node.op)
    if node.label.startswith(node.op):       # autograd's MulBackward0 #2
        return node.label
    return f"{node.label} {sym}" if sym else f"{node.label} ({node.op})"


def saves(node: Node) -> str:
    if not node.saved:
        return ""
    names = ", ".join(s.name + (" (counted before)" if s.shared else "") for s in node.saved)
    return f"saves {size(node.saved_bytes)}: {names}"


def saves_short(node: Node) -> str:
    """"saves 16 B", or "saves x (counted before)" when every tensor it keeps was counted earlier."""
    if node.saved_bytes:
        return f"saves {size(node.saved_bytes)}"
    return f"saves {', '.join(s.name for s in node.saved)} (counted before)"


def totals(sfb: dict) -> str:
    """"autograd 32 B · manual 24 B · analytic 32 B"."""
    return " · ".join(f"{w} {size(sfb.get(w))}" for w in WAYS)


def headline(g: Graph) -> str:
    return f"{g.title}: forward values →, gradients ◀"
