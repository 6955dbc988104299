"""Phase marks inside a learner's step: forward, backward, update.

Learners wrap each part of their step in `with phase("forward"):` (and "backward", "update").
Marking is off by default: `phase()` then returns one shared no-op context, a fraction of a
microsecond, so the timed loop pays nothing measurable. While a `Marker` is active, each phase
is handed to it: a `Recorder` (the FLOP count and `--profile-ops`, both outside the timed loop)
makes each phase a `torch.profiler.record_function` range that the profiler names, and attributes
the FLOP counter's total and, on CUDA, the memory peak to the phase it grew in; the instruction
counter (measure/instructions.py) dumps callgrind's counts at every phase boundary.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

PHASES = ("forward", "backward", "update")

_OFF = contextlib.nullcontext()
_active: "Marker | None" = None


def phase(name: str):
    """The context a learner wraps one phase of its step in (a no-op unless recording)."""
    rec = _active
    return _OFF if rec is None else rec.mark(name)


class Marker:
    """What `phase()` hands every phase to while it is active (`with marker:`), one at a time."""

    def __enter__(self):
        global _active
        if _active is not None:
            raise RuntimeError("phase recording is already active")
        _active = self
        return self

    def __exit__(self, *exc: Any) -> None:
        global _active
        _active = None

    def mark(self, name: str):
        """The context manager that `with phase(name):` enters."""
        raise NotImplementedError


class Recorder(Marker):
    """Records phases while active (`with Recorder(...) as rec:`).

    flops: a callable returning the FLOP counter's running total (e.g. FlopCounterMode's
    get_total_flops); each phase gets the growth inside it.
    memory: (reset_peak, allocated, max_allocated) callables in bytes, e.g. torch.cuda's; each
    phase gets its peak above the allocation at its start (the peak is reset at every boundary).
    counts: a callable returning running totals by name (bpbench.measure.counts' FLOPs, bytes and
    ATen calls); each phase gets the growth of each inside it.
    """

    def __init__(self, flops: Callable[[], int] | None = None,
                 memory: tuple[Callable[[], None], Callable[[], int], Callable[[], int]] | None = None,
                 counts: Callable[[], dict[str, int]] | None = None):
        self.flops_fn, self.memory, self.counts_fn = flops, memory, counts
        self.flops: dict[str, int] = {}
        self.peak_bytes: dict[str, int] = {}
        self.counts: dict[str, dict[str, int]] = {}

    @contextlib.contextmanager
    def mark(self, name: str):
        import torch
        with torch.profiler.record_function(name):
            f0 = self.flops_fn() if self.flops_fn else 0
            c0 = self.counts_fn() if self.counts_fn else {}
            if self.memory:
                reset, allocated, _ = self.memory
                reset()
                base = allocated()
            try:
                yield
            finally:
                if self.flops_fn:
                    self.flops[name] = self.flops.get(name, 0) + self.flops_fn() - f0
                if self.counts_fn:
                    grown = self.counts.setdefault(name, {})
                    for k, v in self.counts_fn().items():
                        grown[k] = grown.get(k, 0) + v - c0.get(k, 0)
                if self.memory:
                    peak = self.memory[2]() - base
                    self.peak_bytes[name] = max(self.peak_bytes.get(name, 0), peak)
