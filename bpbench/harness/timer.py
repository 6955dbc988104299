"""Per-step clocks.

On CPU a step is timed with perf_counter. On CUDA kernels run asynchronously, so a step is
bracketed by CUDA events recorded on the stream; no host synchronisation happens until
`seconds()` is called after the loop.
"""

from __future__ import annotations

import time


class CpuStepTimer:
    def __init__(self):
        self._t0 = 0.0
        self._samples: list[float] = []

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self._samples.append(time.perf_counter() - self._t0)

    def seconds(self) -> list[float]:
        return self._samples


class CudaStepTimer:
    def __init__(self, device):
        import torch
        self._torch = torch
        self._device = device
        self._pairs: list[tuple] = []
        self._start = None

    def start(self) -> None:
        ev = self._torch.cuda.Event(enable_timing=True)
        ev.record()
        self._start = ev

    def stop(self) -> None:
        ev = self._torch.cuda.Event(enable_timing=True)
        ev.record()
        self._pairs.append((self._start, ev))

    def seconds(self) -> list[float]:
        self._torch.cuda.synchronize(self._device)
        return [a.elapsed_time(b) / 1000.0 for a, b in self._pairs]


def step_timer(device):
    return CudaStepTimer(device) if getattr(device, "type", str(device)) == "cuda" else CpuStepTimer()


def synchronize(device) -> None:
    """Wait for queued GPU work so a wall-clock reading covers it (no-op on CPU)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch
        torch.cuda.synchronize(device)
