"""Memory: peak RSS sampled by memory_profiler off the hot path, CUDA peaks, line tables.

Peak RSS is sampled by memory_profiler's own monitor process (MemTimer), which polls this
process's RSS every `interval` seconds from outside: the training loop shares no interpreter
lock with it, so sampling costs the run almost nothing (a thread in this process, by contrast,
measurably slowed microsecond-scale steps through GIL hand-offs).
"""

from __future__ import annotations

import contextlib
import io
import os
from multiprocessing import Pipe

import memory_profiler


def rss_mib() -> float:
    return float(memory_profiler.memory_usage(os.getpid(), interval=0, max_usage=True))


class RssSampler:
    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak = 0.0
        self.samples = 0

    def __enter__(self) -> "RssSampler":
        self.peak = rss_mib()
        self._pipe, child = Pipe()
        self._proc = memory_profiler.MemTimer(os.getpid(), self.interval, child,
                                              memory_profiler.choose_backend("psutil"), max_usage=True)
        self._proc.daemon = True
        # The monitor inherits stderr at fork: when this process is killed (a stopped rank, Ctrl-C),
        # its next sample finds no process and it would print a traceback. It has nothing to say.
        with contextlib.redirect_stderr(io.StringIO()):
            self._proc.start()
        self._pipe.recv()   # the monitor has taken its first sample
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._pipe.send(0)
            if self._pipe.poll(5):
                self.peak = max(self.peak, float(self._pipe.recv()[0]))
                self.samples = int(self._pipe.recv())
        except (EOFError, OSError):   # the monitor died (e.g. Ctrl-C reached it too): keep what we have
            pass
        finally:
            self._proc.join(1)
            if self._proc.is_alive():
                self._proc.terminate()
        self.peak = max(self.peak, rss_mib())   # a final reading of our own


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
