"""Memory: peak RSS from the kernel's high-water mark, CUDA peaks, memory_profiler's line tables.

Peak RSS needs no sampling: Linux keeps each process's high-water mark (VmHWM in
/proc/self/status) and resets it to the current RSS when "5" is written to /proc/self/clear_refs,
so the peak of a block is exact, costs the training loop nothing and needs no helper process
(which a Ctrl-C or SIGTERM could leave behind). Elsewhere, getrusage's ru_maxrss gives the peak
since the process started. memory_profiler serves only --profile-lines' line table.
"""

from __future__ import annotations

import io
import re
import sys

import psutil

MIB = 1024.0 * 1024.0


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / MIB


def _vmhwm_mib() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024.0 if m else None


def _reset_vmhwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:      # not Linux, or a kernel/sandbox that refuses: the peak spans the process
        return False


def _maxrss_mib() -> float:
    try:
        import resource
    except ImportError:    # Windows: the peak working set
        return getattr(psutil.Process().memory_info(), "peak_wset", 0) / MIB
    kib_or_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib_or_bytes / MIB if sys.platform == "darwin" else kib_or_bytes / 1024.0


class PeakRss:
    """`with PeakRss() as p: ...` -> p.peak (MiB), the highest RSS inside the block, and p.source,
    how it was measured ("VmHWM" from the block's start; "VmHWM since process start" or "getrusage
    since process start" when the mark cannot be reset)."""

    def __init__(self):
        self.peak = 0.0
        self.source = ""

    def __enter__(self) -> "PeakRss":
        reset = _reset_vmhwm()
        self.source = "VmHWM" if reset else (
            "VmHWM since process start" if _vmhwm_mib() is not None else "getrusage since process start")
        self.peak = rss_mib()
        return self

    def __exit__(self, *exc) -> None:
        hwm = _vmhwm_mib()
        self.peak = max(self.peak, rss_mib(), hwm if hwm is not None else _maxrss_mib())


def cuda_reset_peaks(device) -> None:
    if getattr(device, "type", None) == "cuda":
        import torch
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peaks_mib(device) -> tuple[float | None, float | None]:
    """(peak allocated, peak reserved) in MiB on a CUDA device; (None, None) elsewhere."""
    if getattr(device, "type", None) != "cuda":
        return None, None
    import torch
    return (torch.cuda.max_memory_allocated(device) / MIB, torch.cuda.max_memory_reserved(device) / MIB)


class LineProfile:
    """memory_profiler's line-by-line table of one method, as seed 000 shows it (slow: opt-in).

    `attach(obj, "name")` swaps obj.name for a profiled wrapper; `table()` renders the report.
    """

    def __init__(self):
        import memory_profiler
        self._prof = memory_profiler.LineProfiler(backend="psutil")

    def attach(self, obj, attr: str) -> None:
        setattr(obj, attr, self._prof(getattr(obj, attr)))

    def table(self) -> str:
        import memory_profiler
        buf = io.StringIO()
        memory_profiler.show_results(self._prof, stream=buf)
        return buf.getvalue()
