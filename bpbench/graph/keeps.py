"""What backprop keeps: the bytes saved for backward, three ways, tensor by tensor.

- autograd: every tensor `saved_tensors_hooks` sees during the forward, each storage counted once
  (a parameter saved as W.t() is its parameter's storage; an output two nodes save counts once);
- manual: every tensor the hand-written layers hold between their forward and backward
  (parameters aside: a hand-written backward reads them where they are);
- analytic: each layer's `keeps` rule (bpbench.layers) applied to the layer shapes alone.

Tensors are matched across the two worlds by what they are: the same data object, a parameter of
the same name, or an activation with the same shape, dtype and values (both worlds start from the
same weights). A tensor only one world keeps is a difference, and the table names it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bpbench.graph import capture
from bpbench.graph.from_autograd import AutogradRecording
from bpbench.graph.from_layers import LayerRecording
from bpbench.graph.model import WAYS



@dataclass
class Row:
    id: str
    tensor: str                          # what it is: "x", "act1 output", "relu1.mask", "layer2.weight"
    layer: str
    kind: str                            # data | parameter | activation
    shape: list[int]
    dtype: str
    bytes: dict[str, int] = field(default_factory=dict)   # world -> bytes (absent: not kept there)
    note: str = ""                       # how autograd keeps it ("SigmoidBackward0.result")


def _same(a: Tensor, b: Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == torch.bool or not a.is_floating_point():
        return bool(torch.equal(a, b))
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-6))


class _Table:
    def __init__(self, manual: LayerRecording):
        self.manual = manual
        self.rows: dict[str, Row] = {}
        self.order = manual.layer_order
        kinds = {n.id: n.kind for n in manual.graph.nodes}
        self.kind = lambda vid: {"data": "data", "parameter": "parameter"}.get(kinds.get(vid), "activation")

    def add(self, vid: str, label: str, layer: str, shape, dtype: str, world: str, nbytes: int, note: str = "") -> None:
        row = self.rows.get(vid)
        if row is None:
            row = self.rows[vid] = Row(vid, label, layer, self.kind(vid), list(shape), dtype)
        elif self._earlier(layer, row.layer):
            row.layer = layer
        row.bytes.setdefault(world, nbytes)
        row.note = row.note or note

    def _earlier(self, a: str, b: str) -> bool:
        rank = {name: i for i, name in enumerate(self.order)}
        return rank.get(a, len(rank)) < rank.get(b, len(rank))


def _manual_rows(table: _Table, rec: LayerRecording) -> None:
    counted: set = set()
    for c in rec.caches:
        key = capture.storage_key(c.tensor)
        if key not in counted:
            counted.add(key)
            table.add(c.id, c.label, c.layer, c.tensor.shape, capture.dtype_name(c.tensor), "manual",
                      capture.storage_bytes(c.tensor))
    for a in rec.analytic or []:
        table.add(a.id, a.label, a.layer, a.shape, a.dtype, "analytic", a.nbytes)


def _match(t: Tensor, manual: LayerRecording, params: dict[tuple, str], taken: set) -> str | None:
    """The manual world's id for an autograd-saved tensor: the same object (data), a parameter of
    the same name, or an activation equal to it (first an id no other autograd tensor took)."""
    key = capture.storage_key(t)
    for vid, v in manual.values.items():
        if isinstance(v, Tensor) and capture.storage_key(v) == key:
            return vid
    if key in params:
        return params[key]
    candidates = [(vid, v) for vid, v in manual.values.items() if isinstance(v, Tensor)]
    candidates += [(c.id, c.tensor) for c in manual.caches]
    hits = [vid for vid, v in candidates if _same(v, t.detach())]
    return next((vid for vid in hits if vid not in taken), hits[0] if hits else None)


def _autograd_layer(node_id: str, auto: AutogradRecording, manual: LayerRecording) -> str:
    """The hand-written layer an autograd node belongs to: the first node, from it along its
    consumers, whose output equals a layer's output."""
    outputs = [(c, manual.values[c]) for c in manual.layer_order if isinstance(manual.values.get(c), Tensor)]
    consumers = {}
    for e in auto.graph.edges:
        consumers.setdefault(e.src, []).append(e.dst)
    frontier, seen = [node_id], set()
    while frontier:
        nid = frontier.pop(0)
        if nid in seen:
            continue
        seen.add(nid)
        out = auto.outputs.get(nid)
        if out is not None:
            for layer, v in outputs:
                if _same(v, out):
                    return layer
        frontier += consumers.get(nid, [])
    return manual.layer_order[-1]


def _autograd_rows(table: _Table, auto: AutogradRecording, manual: LayerRecording) -> None:
    first = {}                           # storage -> the first node that saved it
    for s in auto.saved:
        first.setdefault(s.key, s)
    taken: set = set()
    for key, (t, nbytes) in auto.hooked.items():
        s = first.get(key)
        how = f"{s.label}.{s.attr}" if s else ""
        vid = _match(t, manual, auto.params, taken)
        if vid is None or vid in taken:          # a tensor only autograd keeps
            vid, label = f"autograd:{how or key}", how or "a saved tensor"
        else:
            taken.add(vid)
            label = manual.label_of(vid)
        row = table.rows.get(vid)
        layer = row.layer if row else _autograd_layer(s.node, auto, manual) if s else manual.layer_order[-1]
        table.add(vid, label, layer, t.shape, capture.dtype_name(t), "autograd", nbytes, how)


def compare(manual: LayerRecording | None, auto: AutogradRecording) -> dict[str, Any]:
    """The saved-for-backward document: totals, per layer, per tensor, and the differences."""
    if manual is None:
        return {"autograd": auto.total_bytes, "manual": None, "analytic": None, "layers": [], "tensors": [],
                "differences": []}
    table = _Table(manual)
    _manual_rows(table, manual)
    _autograd_rows(table, auto, manual)
    rows = sorted(table.rows.values(), key=lambda r: table.order.index(r.layer) if r.layer in table.order else 0)
    return {
        "autograd": auto.total_bytes,
        "manual": sum(r.bytes.get("manual", 0) for r in rows),
        "analytic": None if manual.analytic is None else sum(r.bytes.get("analytic", 0) for r in rows),
        "layers": _per_layer(rows, manual),
        "tensors": [_row_dict(r) for r in rows],
        "differences": [d for r in rows if (d := _difference(r))],
    }


def _per_layer(rows: list[Row], manual: LayerRecording) -> list[dict[str, Any]]:
    ops = {n.id: n.op for n in manual.graph.nodes}
    out = []
    for layer in manual.layer_order:
        mine = [r for r in rows if r.layer == layer]
        entry = {"layer": layer, "op": ops.get(layer, "")}
        for w in WAYS:
            entry[w] = None if w == "analytic" and manual.analytic is None else sum(r.bytes.get(w, 0) for r in mine)
        out.append(entry)
    return out


def _row_dict(r: Row) -> dict[str, Any]:
    return {"tensor": r.tensor, "layer": r.layer, "kind": r.kind, "shape": r.shape, "dtype": r.dtype,
            **{w: r.bytes.get(w) for w in WAYS}, "autograd_as": r.note or None}


def _difference(r: Row) -> str:
    """One sentence when autograd and the hand-written layers do not keep this tensor alike."""
    a, m = r.bytes.get("autograd"), r.bytes.get("manual")
    if a == m:
        return ""
    what = f"{r.tensor} ({'×'.join(map(str, r.shape)) or 'scalar'} {r.dtype}, {a or m:,} B)"
    if m is None:
        why = ("the hand-written backward reads the parameter itself" if r.kind == "parameter"
               else "the hand-written layers do not")
        return f"{what}: autograd keeps it ({r.note}); {why}"
    if a is None:
        return f"{what}: the hand-written {r.layer} keeps it; autograd does not"
    return f"{what}: autograd {a:,} B, the hand-written layers {m:,} B"


def record_both(model, x: Tensor, y: Tensor, title: str = "") -> tuple[LayerRecording | None, AutogradRecording]:
    """One step of the experiment's model on a batch in both worlds, on copies: the hand-written
    net from the model's initial weights, and the module with those same weights (so the two can
    be matched value for value, and a run's own module and gradients are untouched)."""
    from bpbench.graph import from_autograd, from_layers

    x, y = capture.own_storage(x), capture.own_storage(y)
    module = copy.deepcopy(model.module)
    names = model.params(module)
    manual = None
    if model.manual is not None:
        net = model.manual()
        with torch.no_grad():
            for k, p in names.items():
                p.copy_(net.params()[k])
        manual = from_layers.record(net, x, y, title)
    return manual, from_autograd.record(module, model.loss_fn, x, y, names, title)


def measure(model, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Saved-for-backward of one step of the model on a batch, three ways (see compare)."""
    return compare(*record_both(model, x, y))
