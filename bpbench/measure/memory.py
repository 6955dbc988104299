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
import textwrap

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
    """memory_profiler's line-by-line table of the profiled functions, as seed 000 shows it (slow:
    opt-in), each measured in its own frame (see _FrameLines).

    `attach(obj, "name")` swaps obj.name for a profiled wrapper; `table()` renders the report.
    """

    MEANING = ("Mem usage: the resident memory (RSS) after the line, the highest of its occurrences.",
               "Increment: the most one execution of the line added to it (negative: it freed memory), "
               "measured from the line before it in the same call (the first line: from the call's "
               "start), so no increment exceeds the process's peak.")

    def __init__(self):
        self._prof = _frame_lines()

    def attach(self, obj, attr: str) -> None:
        setattr(obj, attr, self._prof(getattr(obj, attr)))

    def table(self) -> str:
        import memory_profiler
        buf = io.StringIO()
        memory_profiler.show_results(self._prof, stream=buf)
        return buf.getvalue() + "".join(textwrap.fill(m, 100) + "\n" for m in self.MEANING)


def _frame_lines():
    """memory_profiler's LineProfiler, with the bookkeeping of each profiled call kept apart.

    The stock one remembers one "previous line" for all functions and sums each line's increments
    over its occurrences: entering a profiled function from another measured its first line from
    zero or from a line of the caller's (the whole footprint again at every call: a 106 GiB
    "increment" in a 530 MiB process after 200 steps), and a line whose memory the next line frees
    added its rise once per call. Here each call keeps its own previous line and the RSS after it,
    and a line keeps the largest change one execution of it made."""
    import memory_profiler

    class FrameLines(memory_profiler.LineProfiler):
        def __init__(self):
            super().__init__(backend="psutil")
            self._calls: list[list] = []     # per profiled call in progress: [its last line, RSS after it]
            self._process = psutil.Process()

        def trace_memory_usage(self, frame, event, arg):
            if frame.f_code in self.code_map:
                if event == "call":
                    self._calls.append([frame.f_lineno, self._process.memory_info().rss / MIB])
                elif event in ("line", "return") and self._calls:
                    self._record(frame.f_code, self._calls[-1])
                    if event == "return":
                        self._calls.pop()
                    else:
                        self._calls[-1][0] = frame.f_lineno
            if self._original_trace_function is not None:
                self._original_trace_function(frame, event, arg)
            return self.trace_memory_usage

        def _record(self, code, call: list) -> None:
            """The line `call` last ran has finished: its change in RSS, the RSS after it."""
            line, before = call
            now = self._process.memory_info().rss / MIB
            lines = self.code_map[code]
            inc, mem, seen = lines.get(line, (now - before, now, 0))
            lines[line] = (max(inc, now - before), max(mem, now), seen + 1)
            call[1] = now

    return FrameLines()
