"""The graph autograd builds for one step, read from its `grad_fn` nodes.

The forward runs once with three observers: a TorchFunctionMode keeps each torch function's
output (the forward value of the node it creates), forward hooks name the node a module's output
came from, and `saved_tensors_hooks` sees every tensor autograd saves for backward. Then every
node's saved tensors are read (`_saved_*`) and a hook on every node catches the gradients flowing
through it during `loss.backward()`: into the node (its output's gradient) and out along each of
its edges. Data (x, y) need no gradient and so are not in autograd's graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from bpbench.graph import capture
from bpbench.graph.model import Edge, Graph, Node, Value


@dataclass
class SavedTensor:
    """One tensor an autograd node saved: its storage's key, the node (id, label), the attribute."""
    key: tuple
    node: str
    label: str
    attr: str
    tensor: Tensor


@dataclass
class AutogradRecording:
    graph: Graph
    saved: list[SavedTensor]                       # per node, in forward order (a storage may repeat)
    hooked: dict[tuple, tuple[Tensor, int]]        # what saved_tensors_hooks packed: key -> (tensor, bytes)
    params: dict[tuple, str] = field(default_factory=dict)   # storage key -> parameter name
    outputs: dict[str, Tensor] = field(default_factory=dict)  # node id -> its forward output

    @property
    def total_bytes(self) -> int:
        """Bytes saved for backward, each storage once (saved_tensors_hooks' view)."""
        return sum(n for _, n in self.hooked.values())


class _Outputs(TorchFunctionMode):
    """grad_fn -> (torch function name, output tensor), for every function call whose output
    autograd tracks. Inside a call the mode is off, so a composite (F.linear) counts once."""

    def __init__(self):
        super().__init__()
        self.of: dict[Any, tuple[str, Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(first, Tensor) and first.grad_fn is not None and first.grad_fn not in self.of:
            self.of[first.grad_fn] = (getattr(func, "__name__", str(func)), first.detach())
        return out


def _name_modules(module: nn.Module, loss_fn: nn.Module) -> tuple[dict, list]:
    """Forward hooks on every leaf module (and the loss): grad_fn -> "path (Class)"."""
    names: dict[Any, str] = {}
    handles = []

    def hook_for(path: str):
        def hook(mod, args, out):
            if isinstance(out, Tensor) and out.grad_fn is not None:
                names.setdefault(out.grad_fn, f"{path} ({type(mod).__name__})" if path else type(mod).__name__)
        return hook

    leaves = [(p, m) for p, m in module.named_modules() if not list(m.children()) and p]
    for path, mod in leaves + [("loss", loss_fn)]:
        if isinstance(mod, nn.Module):
            handles.append(mod.register_forward_hook(hook_for(path)))
    return names, handles


def _walk(root) -> list:
    """Every node reachable from the loss's grad_fn."""
    seen, stack, out = set(), [root], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        out.append(fn)
        stack.extend(nf for nf, _ in fn.next_functions)
    return out


def _saved_of(fn) -> list[tuple[str, Tensor]]:
    """The tensors a node saved for its backward (its `_saved_*` attributes), before backward frees them."""
    out = []
    for attr in dir(fn):
        if not attr.startswith("_saved_"):
            continue
        try:
            v = getattr(fn, attr)
        except RuntimeError:      # e.g. an undefined optional tensor
            continue
        items = v if isinstance(v, (tuple, list)) else [v]
        out += [(attr.removeprefix("_saved_"), t) for t in items if isinstance(t, Tensor)]
    return out


def record(module: nn.Module, loss_fn, x: Tensor, y: Tensor, params: dict[str, Tensor], title: str) -> AutogradRecording:
    """One forward and backward of `loss_fn(module(x), y)`, with the graph autograd built for it.
    `params` names the module's parameters (layer1.weight, ...); gradients land in their .grad."""
    hooked: dict[tuple, tuple[Tensor, int]] = {}

    def pack(t: Tensor) -> Tensor:
        hooked.setdefault(capture.storage_key(t), (t, capture.storage_bytes(t)))
        return t

    names, handles = _name_modules(module, loss_fn)
    outputs = _Outputs()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), outputs:
            loss = loss_fn(module(x), y)
    finally:
        for h in handles:
            h.remove()
    by_param = {id(p): name for name, p in params.items()}
    order = {id(p): i for i, p in enumerate(params.values())}
    nodes = _walk(loss.grad_fn)
    # the parameters in their order, then the operations in the order the forward created them
    nodes.sort(key=lambda fn: (0, order.get(id(fn.variable), -1)) if hasattr(fn, "variable")
               else (1, fn._sequence_nr()))
    saved = {fn: _saved_of(fn) for fn in nodes}
    seen = _Hooks(nodes)
    for p in params.values():
        p.grad = None
    loss.backward()
    seen.remove()
    builder = _Builder(nodes, names, outputs.of, by_param, seen, title)
    graph = builder.build(loss, saved)
    flat = [SavedTensor(capture.storage_key(t), builder.ids[fn], builder.label[fn], attr, t)
            for fn in nodes for attr, t in saved[fn]]
    live = {builder.ids[fn]: outputs.of[fn][1] for fn in nodes if fn in outputs.of}
    return AutogradRecording(graph, flat, hooked, {capture.storage_key(p): n for n, p in params.items()}, live)


class _Hooks:
    """A hook on every node: (gradients out along its edges, gradients into it) during backward."""

    def __init__(self, nodes):
        self.grads: dict[Any, tuple[tuple, tuple]] = {}
        self.handles = [fn.register_hook(self._hook_for(fn)) for fn in nodes]

    def _hook_for(self, fn):
        def hook(grad_inputs, grad_outputs):
            self.grads[fn] = (tuple(grad_inputs), tuple(grad_outputs))
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _Builder:
    def __init__(self, nodes, names, outputs, by_param, hooks: _Hooks, title: str):
        self.nodes, self.names, self.outputs, self.hooks, self.title = nodes, names, outputs, hooks, title
        self.ids = {fn: f"n{i}" for i, fn in enumerate(nodes)}
        self.label = self._unique({fn: self._label(fn, by_param) for fn in nodes})

    @staticmethod
    def _unique(labels: dict) -> dict:
        """MulBackward0, MulBackward0 #2, ...: every node told apart by its label."""
        seen: dict[str, int] = {}
        out = {}
        for fn, label in labels.items():
            seen[label] = seen.get(label, 0) + 1
            out[fn] = label if seen[label] == 1 else f"{label} #{seen[label]}"
        return out

    def _label(self, fn, by_param) -> str:
        if hasattr(fn, "variable"):         # AccumulateGrad: where a parameter's gradient lands
            return by_param.get(id(fn.variable), "leaf")
        return type(fn).__name__

    def _node(self, fn, saved, counted: set) -> Node:
        grad_in, grad_out = self.hooks.grads.get(fn, ((), ()))
        if hasattr(fn, "variable"):
            return Node(self.ids[fn], self.label[fn], "AccumulateGrad", "parameter",
                        capture.describe(fn.variable), capture.describe(grad_out[0] if grad_out else None),
                        detail="AccumulateGrad")
        func, out = self.outputs.get(fn, (None, None))
        grad = capture.describe(grad_out[0] if grad_out else None)
        if func is None:     # made inside a torch function (F.linear's weight.t()): its shape only
            func = self._inside(fn)
            value = None if grad is None else Value(grad.shape, grad.dtype, grad.nbytes)
        else:
            value, func = capture.describe(out), f"{func}()"
        detail = " · ".join(x for x in (self.names.get(fn, ""), func) if x)
        return Node(self.ids[fn], self.label[fn], type(fn).__name__, "op", value, grad,
                    capture.saved_entries(saved[fn], counted), detail)

    def _inside(self, fn) -> str:
        for consumer in self.nodes:
            if any(nf is fn for nf, _ in consumer.next_functions) and consumer in self.outputs:
                return f"inside {self.outputs[consumer][0]}()"
        return "inside a torch function"

    def build(self, loss: Tensor, saved) -> Graph:
        counted: set = set()
        nodes = [self._node(fn, saved, counted) for fn in self.nodes]
        edges = []
        for fn in self.nodes:
            grad_in = self.hooks.grads.get(fn, ((), ()))[0]
            for i, (nf, _) in enumerate(fn.next_functions):
                if nf is not None:
                    edges.append(Edge(self.ids[nf], self.ids[fn], capture.describe(grad_in[i] if i < len(grad_in) else None)))
        nodes.append(Node("result:L", "L", "result", "result", capture.describe(loss), capture.describe(1.0)))
        edges.append(Edge(self.ids[loss.grad_fn], "result:L", capture.describe(1.0)))
        notes = ["data (x, y) needs no gradient: autograd's graph has no node for it"]
        return Graph(self.title, "autograd", nodes, edges, notes)
