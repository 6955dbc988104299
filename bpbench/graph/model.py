"""The computational graph of one training step, as plain data (torch-free).

A node is an operation (a hand-written layer, an autograd `grad_fn`) or a leaf (data, a parameter);
an edge runs in the forward direction, from the node whose output it carries to the node that
reads it, and holds the gradient that flows back along it (written beneath it, as seed 001's
pictures do). A node's own `grad` is the gradient of the loss with respect to its output: the sum
over its outgoing edges. The builders (`from_layers`, `from_autograd`) fill these from a live step;
the renderers (`render_text`, `render_dot`, `render_png`) and `--format json` read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SMALL = 8     # tensors of at most this many elements show their values; larger ones their shape
# The three ways saved-for-backward is counted (bpbench.graph.keeps; memory.saved_for_backward's keys).
WAYS = ("autograd", "manual", "analytic")


@dataclass
class Value:
    """A tensor (or a number) as the graph shows it: values when small, shape and dtype always."""
    shape: list[int]
    dtype: str                       # torch's name without the prefix: float32, float64, bool, int64
    nbytes: int
    values: Any = None               # a float or nested lists of floats; None for large tensors
    norm: float | None = None        # large floating-point tensors: their L2 norm, in place of values

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Saved:
    """One tensor a node keeps for its backward. `shared`: counted at an earlier node (the same
    storage), so totals count each storage once."""
    name: str
    shape: list[int]
    dtype: str
    nbytes: int
    shared: bool = False


@dataclass
class Node:
    id: str
    label: str                       # what the reader sees first: "mul_tax_layer", "layer1", "x"
    op: str                          # "Mul", "Affine", "AddmmBackward0", "parameter", "data", "result"
    kind: str                        # "data" | "parameter" | "op" | "result"
    output: Value | None = None      # the forward value (for a result node: the loss)
    grad: Value | None = None        # d loss / d output
    saved: list[Saved] = field(default_factory=list)
    detail: str = ""                 # a short note: the torch function, the module, "inside linear"

    @property
    def saved_bytes(self) -> int:
        return sum(s.nbytes for s in self.saved if not s.shared)


@dataclass
class Edge:
    src: str                         # the node whose output this edge carries (forward direction)
    dst: str
    grad: Value | None = None        # the gradient flowing back from dst to src along this edge
    label: str = ""                  # the input's role at dst, when it helps ("weight", "target")


@dataclass
class Graph:
    title: str
    world: str                       # "manual" (hand-written layers) | "autograd" (grad_fn nodes)
    nodes: list[Node]                # in forward order
    edges: list[Edge]
    notes: list[str] = field(default_factory=list)
    saved_for_backward: dict[str, Any] | None = None   # bpbench.graph.keeps' table, when computed

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def inputs_of(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == node_id]

    def by_label(self, label: str) -> Node:
        for n in self.nodes:
            if n.label == label:
                return n
        raise KeyError(label)

    @property
    def saved_bytes(self) -> int:
        return sum(n.saved_bytes for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for node, n in zip(out["nodes"], self.nodes):
            node["saved_bytes"] = n.saved_bytes
        out["saved_bytes"] = self.saved_bytes
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Graph":
        def value(v):
            return None if v is None else Value(**v)
        nodes = [Node(id=n["id"], label=n["label"], op=n["op"], kind=n["kind"], output=value(n["output"]),
                      grad=value(n["grad"]), saved=[Saved(**s) for s in n["saved"]], detail=n["detail"])
                 for n in d["nodes"]]
        edges = [Edge(e["src"], e["dst"], value(e["grad"]), e["label"]) for e in d["edges"]]
        return cls(d["title"], d["world"], nodes, edges, list(d["notes"]), d.get("saved_for_backward"))
