"""Per-step clocks.

On CPU a step is timed with perf_counter. On CUDA kernels run asynchronously, so steps are timed
in blocks: a pair of CUDA events brackets up to `block` consecutive steps, and each step of the
block is given the block's mean. The events come from a fixed ring that is reused, so a long run
holds a bounded number of events (one pair per step used to grow without limit); no host
synchronisation happens in the loop except, when the ring wraps, a wait on the event recorded
`ring` blocks earlier (long finished in any realistic run). `split()` closes the open block: the
loop calls it where the steps stop being consecutive (the end of warm-up, evaluation and loss
read-back pauses), so a block never spans work that is not a training step.

Both clocks write each step's seconds into a `StepRecord` (bpbench.measure.records), which holds
them in memory that does not grow with the run; `seconds()` returns what it kept.
"""

from __future__ import annotations

import time
from itertools import repeat

from bpbench.measure.records import StepRecord


class CpuStepTimer:
    def __init__(self, times: StepRecord | None = None):
        self._t0 = 0.0
        self.times = times if times is not None else StepRecord()
        self._add = self.times.append

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self._add(time.perf_counter() - self._t0)

    def split(self) -> None:
        """Every CPU step is timed on its own: nothing to close."""

    def finish(self) -> StepRecord:
        """Every step so far, folded into the record."""
        self.times.fold()
        return self.times

    def seconds(self) -> list[float]:
        return self.finish().sample()


class CudaBlockTimer:
    def __init__(self, device, block: int = 32, ring: int = 64, event=None, times: StepRecord | None = None):
        if event is None:
            import torch
            event = lambda: torch.cuda.Event(enable_timing=True)   # noqa: E731
        self._device = device
        self._block = block
        self._events = [(event(), event()) for _ in range(ring)]   # allocated once, reused
        self._slot = 0             # the next pair to record into
        self._pending: dict[int, int] = {}   # slot -> steps in its block, not yet read back
        self.times = times if times is not None else StepRecord()   # each step: its block's mean
        self._open = False
        self._n = 0

    def start(self) -> None:
        if not self._open:
            if self._slot in self._pending:   # the ring wrapped: read that block before reuse
                self._read(self._slot)
            self._events[self._slot][0].record()
            self._open = True

    def stop(self) -> None:
        self._n += 1
        if self._n == self._block:
            self.split()

    def split(self) -> None:
        """Close the open block (no-op when none is open)."""
        if not self._open:
            return
        self._events[self._slot][1].record()
        self._pending[self._slot] = self._n
        self._slot = (self._slot + 1) % len(self._events)
        self._open, self._n = False, 0

    def _read(self, slot: int) -> None:
        a, b = self._events[slot]
        b.synchronize()
        n = self._pending.pop(slot)
        self.times.extend(repeat(a.elapsed_time(b) / 1000.0 / n, n))

    def finish(self) -> StepRecord:
        """Every block read back (oldest first: blocks stay in step order) and folded."""
        self.split()
        for slot in sorted(self._pending, key=lambda s: (s - self._slot) % len(self._events)):
            self._read(slot)
        self.times.fold()
        return self.times

    def seconds(self) -> list[float]:
        return self.finish().sample()


def step_timer(device, times: StepRecord | None = None):
    if getattr(device, "type", str(device)) == "cuda":
        return CudaBlockTimer(device, times=times)
    return CpuStepTimer(times)


def synchronize(device) -> None:
    """Wait for queued GPU work so a wall-clock reading covers it (no-op on CPU)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch
        torch.cuda.synchronize(device)
