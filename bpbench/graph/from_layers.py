"""The graph of one step of a hand-written network (bpbench.layers), recorded while it runs.

The network runs its own `loss(x, y)` and `backward()`; every layer's `forward` and `backward` is
wrapped for that one step, so the record is of the network's own arithmetic. Values are joined
by identity: a layer's input is the node whose output object it is (or the data, or a parameter).

A network lists its layers with `layers()` (name, layer), in forward order. One that does not
(linreg's seed-000 loop, gradients written straight out) is recorded as a single node: its
`loss` is the forward, its `backward` the backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from bpbench.graph import capture
from bpbench.graph.model import Edge, Graph, Node


@dataclass
class Call:
    """One forward call of a layer, then its backward."""
    name: str
    layer: Any
    inputs: tuple
    output: Any = None
    grad_out: Any = None            # the `dout` its backward received
    grad_in: tuple = ()             # what its backward returned, one per positional input
    backward_called: bool = False


@dataclass
class Tracked:
    """A tensor the manual world keeps for backward: its id in the graph's namespace (the node
    whose output it is, or "layer.attr" for a layer's own temporary), its label and the layer."""
    id: str
    label: str
    layer: str
    tensor: Tensor


@dataclass
class Analytic:
    """A tensor the formula says backward must keep (shape and dtype only)."""
    id: str
    label: str
    layer: str
    shape: list[int]
    dtype: str
    nbytes: int


@dataclass
class LayerRecording:
    graph: Graph
    values: dict[str, Any]                               # id -> live tensor: data, parameters, outputs
    caches: list[Tracked] = field(default_factory=list)  # what the layers held between forward and backward
    analytic: list[Analytic] | None = None               # None: a layer without a formula
    layer_order: list[str] = field(default_factory=list)

    def label_of(self, vid: str) -> str:
        return label_of(self.graph.nodes, vid)


def label_of(nodes: list[Node], vid: str) -> str:
    """How a value reads: a leaf's name, "act1 output", or a layer's own temporary "relu1.mask"."""
    node = next((n for n in nodes if n.id == vid), None)
    if node is None:
        return vid
    return node.label if node.kind != "op" else f"{node.label} output"


def layers_of(net) -> list[tuple[str, Any, str]]:
    """(name, layer, its forward method's name), in forward order."""
    if hasattr(net, "layers"):
        return [(name, layer, "forward") for name, layer in net.layers()]
    return [("step", net, "loss")]


def _params_of(layer) -> dict[str, Tensor]:
    p = getattr(layer, "params", None)
    return p() if callable(p) else dict(p or {})


def _grads_of(layer) -> dict[str, Tensor]:
    g = getattr(layer, "grads", None)
    return g() if callable(g) else dict(g or {})


class _Wrapped:
    """Swaps each layer's forward and backward for recording ones (instance attributes shadow the
    class's methods), and puts the originals back."""

    def __init__(self, layers: list[tuple[str, Any, str]]):
        self.layers, self.calls = layers, []

    def __enter__(self) -> list[Call]:
        for name, layer, fwd in self.layers:
            self._wrap(name, layer, fwd)
        return self.calls

    def _wrap(self, name: str, layer, fwd: str) -> None:
        forward, backward = getattr(layer, fwd), layer.backward
        mine: list[Call] = []

        def recording_forward(*args, **kwargs):
            call = Call(name, layer, args)
            call.output = forward(*args, **kwargs)
            mine.append(call)
            self.calls.append(call)
            return call.output

        def recording_backward(*args, **kwargs):
            call = next(c for c in reversed(mine) if not c.backward_called)   # backward runs in reverse
            call.backward_called = True
            call.grad_out = args[0] if args else kwargs.get("dout", 1.0)
            out = backward(*args, **kwargs)
            call.grad_in = out if isinstance(out, tuple) else (out,)
            return out

        setattr(layer, fwd, recording_forward)
        layer.backward = recording_backward

    def __exit__(self, *exc) -> None:
        for _, layer, fwd in self.layers:
            delattr(layer, fwd)
            del layer.backward


def record(net, x: Tensor, y: Tensor, title: str) -> LayerRecording:
    """Run one forward and backward of `net` on (x, y) and return its graph."""
    layers = layers_of(net)
    with _Wrapped(layers) as calls:
        loss = net.loss(x, y)
        caches = _caches(layers)
        net.backward()
    return _Builder(net, x, y, calls, title).build(loss, caches)


def _caches(layers) -> list[tuple[str, str, Tensor]]:
    """(layer, attribute, tensor) of every tensor a layer holds after the forward pass, its own
    parameters aside: what the hand-written backward will read. (An input the layer stores is
    kept even when it is a parameter elsewhere: seed 001's multiply node keeps apple and tax.)"""
    out = []
    for name, layer, _ in layers:
        own = {id(p) for p in _params_of(layer).values()}
        for attr, v in vars(layer).items():
            if isinstance(v, Tensor) and id(v) not in own:
                out.append((name, attr, v))
    return out


class _Builder:
    def __init__(self, net, x, y, calls: list[Call], title: str):
        self.net, self.calls, self.title = net, calls, title
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.values: dict[str, Any] = {}
        self.by_object: dict[int, str] = {}          # id(live object) -> node id
        self.needs_grad: dict[str, bool] = {}
        self.grads = net.grads()
        self._leaf("x", x, "data")
        self._leaf("y", y, "data")
        for name, p in net.params().items():
            self._leaf(name, p, "parameter")

    def _leaf(self, node_id: str, v, kind: str) -> None:
        if id(v) in self.by_object:     # e.g. the same tensor as x and y: one node
            return
        grad = self.grads.get(node_id) if kind == "parameter" else None
        self.nodes.append(Node(node_id, node_id, kind, kind, capture.describe(v), capture.describe(grad)))
        self.values[node_id] = v
        self.by_object[id(v)] = node_id
        self.needs_grad[node_id] = kind == "parameter"

    def _source(self, v, call: Call, i: int) -> str:
        """The node whose output `v` is; a value from outside the layers becomes a leaf."""
        if id(v) not in self.by_object:
            self._leaf(f"{call.name}.in{i}", v, "data")
        return self.by_object[id(v)]

    def build(self, loss, caches) -> LayerRecording:
        for call in self.calls:
            self._add_call(call)
        last = self.calls[-1]
        result = getattr(self.net, "result_name", "L")
        self.nodes.append(Node(f"result:{result}", result, "result", "result", capture.describe(loss),
                               capture.describe(last.grad_out)))
        self.edges.append(Edge(last.name, f"result:{result}", self.nodes[-1].grad))
        graph = Graph(self.title, "manual", self.nodes, self.edges)
        rec = LayerRecording(graph, self.values, layer_order=[c.name for c in self.calls])
        self._attach_caches(rec, caches)
        rec.analytic = self._analytic()
        return rec

    def _add_call(self, call: Call) -> None:
        srcs = [self._source(v, call, i) for i, v in enumerate(call.inputs)]
        layer_params = _params_of(call.layer)
        layer_grads = _grads_of(call.layer)
        node = Node(call.name, call.name, type(call.layer).__name__, "op", capture.describe(call.output),
                    capture.describe(call.grad_out))
        self.nodes.append(node)
        for i, src in enumerate(srcs):
            grad = call.grad_in[i] if i < len(call.grad_in) else None
            self.edges.append(Edge(src, call.name, capture.describe(grad)))
        for k, p in layer_params.items():
            src = self.by_object.get(id(p)) or self._source(p, call, k)
            self.edges.append(Edge(src, call.name, capture.describe(layer_grads.get(k)), k))
        self.values[call.name] = call.output
        self.by_object[id(call.output)] = call.name
        self.needs_grad[call.name] = any(self.needs_grad[s] for s in srcs) or bool(layer_params)
        self._fill_leaf_grads(srcs, call)

    def _fill_leaf_grads(self, srcs: list[str], call: Call) -> None:
        """A parameter passed as an input (shopping's apple) gets the gradient its consumer returned."""
        for i, src in enumerate(srcs):
            node = next(n for n in self.nodes if n.id == src)
            if node.kind == "parameter" and node.grad is None and i < len(call.grad_in):
                node.grad = capture.describe(call.grad_in[i])

    def _id_of(self, t: Tensor, layer: str, attr: str) -> str:
        if id(t) in self.by_object:
            return self.by_object[id(t)]
        for vid, v in self.values.items():      # a view of a value (the same storage and shape)
            if isinstance(v, Tensor) and capture.storage_key(v) == capture.storage_key(t) and v.shape == t.shape:
                return vid
        return f"{layer}.{attr}"

    def _attach_caches(self, rec: LayerRecording, caches) -> None:
        counted: set = set()
        for layer, attr, t in caches:
            vid = self._id_of(t, layer, attr)
            rec.caches.append(Tracked(vid, label_of(self.nodes, vid), layer, t))
            node = next(n for n in self.nodes if n.id == layer)
            node.saved += capture.saved_entries([(attr, t)], counted)

    def _analytic(self) -> list[Analytic] | None:
        """Each layer's `keeps` rule, applied to the recorded shapes; one entry per distinct tensor."""
        out: dict[str, Analytic] = {}
        for call in self.calls:
            rule = getattr(call.layer, "keeps", None)
            if rule is None:
                return None
            srcs = [self.by_object[id(v)] for v in call.inputs]
            specs = [self._spec(s) for s in srcs]
            for item in rule(specs, [self.needs_grad[s] for s in srcs]):
                entry = self._resolve(item, call, srcs)
                out.setdefault(entry.id, entry)
        return list(out.values())

    def _spec(self, node_id: str) -> tuple[list[int], str]:
        v = next(n for n in self.nodes if n.id == node_id).output
        return v.shape, v.dtype

    def _resolve(self, item, call: Call, srcs: list[str]) -> Analytic:
        if isinstance(item, tuple):               # (attribute, (shape, dtype)): a layer's own temporary
            attr, (shape, dtype) = item
            vid = f"{call.name}.{attr}"
        else:
            if item == "output":
                vid = call.name
            elif item.startswith("input"):
                vid = srcs[int(item[5:])]
            else:                                 # "param:weight"
                vid = self.by_object[id(_params_of(call.layer)[item.split(":", 1)[1]])]
            shape, dtype = self._spec(vid)
        return Analytic(vid, label_of(self.nodes, vid), call.name, list(shape), dtype, nbytes(shape, dtype))


_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "bool": 1,
             "uint8": 1, "float": 8}


def nbytes(shape, dtype: str) -> int:
    n = _ITEMSIZE[dtype]
    for d in shape:
        n *= d
    return n
