"""The graph as Graphviz DOT (the `graphviz` package), and SVG or PNG through Graphviz's `dot`.

Drawn as seed 001 draws its graphs: left to right, operations in circles, each edge with the
forward value above it and the gradient flowing back beneath it (in red), and under every
operation what it saves for backward.
"""

from __future__ import annotations

import html
import shutil

from bpbench.errors import BadInput
from bpbench.graph import fmt
from bpbench.graph.model import Graph, Node
from bpbench.results.files import GRAPH_NAME

FORWARD, GRADIENT, SAVED = "#1f1f1f", "#c0392b", "#2c6e9b"
MAX_LABEL = 48     # a value longer than this is cut (the text and JSON formats keep it whole)


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


def _html(lines: list[str], color: str) -> str:
    return "<br/>".join(f'<font color="{color}">{html.escape(_short(t))}</font>' for t in lines if t)


def _edge_label(value: list[str], grad: list[str]) -> str:
    below = _html(grad, GRADIENT)
    return f"<{_html(value, FORWARD)}{'<br/>' + below if below else ''}>"



def _node_attrs(node: Node) -> dict[str, str]:
    if node.kind == "op":
        sym = fmt.SYMBOLS.get(node.op)
        shape = "circle" if sym else "box"
        label = sym or fmt.op_label(node).replace(" (", "\n(")
        if node.detail:       # autograd: the module and torch function the node came from
            label = f'<{html.escape(label)}<br/><font point-size="8" color="#555555">{html.escape(node.detail)}</font>>'
        attrs = {"shape": shape, "label": label, "style": "rounded" if not sym else "", "fontsize": "16" if sym else "11"}
        notes = ([f'<font color="#555555">{html.escape(node.label)}</font>'] if sym else []) + \
            ([f'<font color="{SAVED}">{html.escape(fmt.saves_short(node))}</font>'] if node.saved else [])
        if notes:   # beside the node, small: its layer's name (under a × or +) and what it saves
            attrs["xlabel"] = f'<<font point-size="10">{"<br/>".join(notes)}</font>>'
        return attrs
    return {"shape": "plaintext", "label": node.label, "fontsize": "12"}


def source(g: Graph) -> str:
    """The DOT text (no Graphviz program needed)."""
    import graphviz

    dot = graphviz.Digraph(name=GRAPH_NAME, graph_attr={
        "rankdir": "LR", "label": f"{g.title}\nforward values above the arrows, gradients beneath (red)",
        "labelloc": "t", "fontsize": "13", "nodesep": "0.5", "ranksep": "0.9", "forcelabels": "true",
        "fontname": "Helvetica", "ordering": "in"},
        node_attr={"fontname": "Helvetica"}, edge_attr={"fontname": "Helvetica", "fontsize": "11",
                                                        "arrowsize": "0.7"})
    ids = {node.id: f"n{i}" for i, node in enumerate(g.nodes)}    # DOT reads "a:b" as a port
    for node in g.nodes:
        dot.node(ids[node.id], **{k: v for k, v in _node_attrs(node).items() if v})
    for e in g.edges:
        src = g.node(e.src)
        dot.edge(ids[e.src], ids[e.dst], label=_edge_label(fmt.lines(src.output), fmt.lines(e.grad, "", grad=True)))
    return dot.source


def has_dot() -> bool:
    return shutil.which("dot") is not None


NO_DOT = ("--format {fmt} with --engine graphviz needs Graphviz's `dot` program, which is not on PATH: "
          "install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz), or "
          "use --engine matplotlib, which draws it without")


def render(g: Graph, fmt_name: str) -> bytes:
    """SVG or PNG bytes from Graphviz's `dot`; BadInput (one line) when it is not installed."""
    import graphviz

    if not has_dot():
        raise BadInput(NO_DOT.format(fmt=fmt_name))
    data = graphviz.Source(source(g)).pipe(format=fmt_name)
    return signed_png(data) if fmt_name == "png" else data


def signed_png(data: bytes) -> bytes:
    """The PNG with a tEXt chunk "Software: bpbench" after its header, as matplotlib names itself
    in its own: a later --output may replace what bpbench wrote (results.files.is_bpbench_output)."""
    import struct
    import zlib
    body = b"tEXt" + b"Software\x00bpbench"
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    end_of_ihdr = 8 + 8 + 13 + 4                # signature, IHDR's length and type, its data, its CRC
    return data[:end_of_ihdr] + chunk + data[end_of_ihdr:]
