"""Memory: peak RSS sampled by memory_profiler off the hot path, CUDA peaks, line tables.

The RSS sampler is a daemon thread that asks memory_profiler for this process's RSS every
`interval` seconds and keeps the maximum: the training loop itself is never touched, and the
thread wakes rarely enough (default 20 ms) to cost well under 1% of a core.
"""

from __future__ import annotations

import io
import os
import threading

import memory_profiler


def rss_mib() -> float:
    return float(memory_profiler.memory_usage(os.getpid(), interval=0, max_usage=True))


class RssSampler:
    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bpbench-rss", daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, rss_mib())
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()   # a final reading, so short runs still see their end state


def cuda_reset_peaks(device) -> None:
    if getattr(device, "type", None) == "cuda":
        import torch
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peaks_mib(device) -> tuple[float | None, float | None]:
    """(peak allocated, peak reserved) in MiB on a CUDA device; (None, None) elsewhere."""
    if getattr(device, "type", None) != "cuda":
        return None, None
    import torch
    mib = 1024.0 * 1024.0
    return (torch.cuda.max_memory_allocated(device) / mib, torch.cuda.max_memory_reserved(device) / mib)


class LineProfile:
    """memory_profiler's line-by-line table of one method, as seed 000 shows it (slow: opt-in).

    `attach(obj, "name")` swaps obj.name for a profiled wrapper; `table()` renders the report.
    """

    def __init__(self):
        self._prof = memory_profiler.LineProfiler(backend="psutil")

    def attach(self, obj, attr: str) -> None:
        setattr(obj, attr, self._prof(getattr(obj, attr)))

    def table(self) -> str:
        buf = io.StringIO()
        memory_profiler.show_results(self._prof, stream=buf)
        return buf.getvalue()
