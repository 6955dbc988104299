"""Live tensors into the graph's plain values, and the storage bookkeeping both builders share."""

from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from bpbench.graph.model import SMALL, Saved, Value


def dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def describe(v: Any) -> Value | None:
    """A tensor or a Python number as the graph shows it (values only when small)."""
    if v is None:
        return None
    if not isinstance(v, Tensor):        # the 1 (or 1.0) a backward starts from
        return Value([], type(v).__name__, 0, float(v))
    t = v.detach()
    values, norm = None, None
    if t.numel() <= SMALL:
        values = t.cpu().tolist()
    elif t.is_floating_point():
        norm = float(t.double().norm())
    return Value(list(t.shape), dtype_name(t), t.numel() * t.element_size(), values, norm)


def storage_key(t: Tensor) -> tuple[str, int]:
    """One key per storage (views of one tensor share it): what "counted once" means."""
    return (t.device.type, t.untyped_storage().data_ptr())


def storage_bytes(t: Tensor) -> int:
    return t.untyped_storage().nbytes()


def saved_entries(named: Iterable[tuple[str, Tensor]], counted: set) -> list[Saved]:
    """Saved records for (name, tensor) pairs; a storage already in `counted` is marked shared,
    and every new one is added to it."""
    out = []
    for name, t in named:
        key = storage_key(t)
        out.append(Saved(name, list(t.shape), dtype_name(t), storage_bytes(t), shared=key in counted))
        counted.add(key)
    return out


def own_storage(t: Tensor) -> Tensor:
    """`t`, or a copy when it is a view into a larger storage (a slice of the data set): a step's
    batch owns its storage in training (index_select), and counting the whole data set's storage
    for a slice of it would be wrong."""
    return t.clone() if storage_bytes(t) > t.numel() * t.element_size() else t
