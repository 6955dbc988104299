"""A comparison's progress on stderr: a live line in a terminal, a plain line per cell elsewhere.
"""

from __future__ import annotations

from bpbench.report.format import fmt_s


class CellProgress:
    """Per-cell progress of a comparison on stderr, with the elapsed time and an estimate of what
    is left: a live line in a terminal, one plain line per finished cell elsewhere (CI logs)."""

    def __init__(self, stream=None):
        import sys
        import time
        self.stream = stream or sys.stderr
        self.clock = time.perf_counter
        self.t0 = self.clock()
        self.done: list[float] = []
        self.live = None
        if self.stream.isatty():
            from rich.console import Console as _Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )
            self.live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 console=_Console(file=self.stream), transient=True)
            self.live.start()
            self.task = self.live.add_task("", total=None, eta="")

    def eta(self, remaining: int) -> str:
        """What is left, from the mean time of the finished cells (cells differ: a rough guide)."""
        if not self.done:
            return ""
        return f"about {fmt_s(remaining * sum(self.done) / len(self.done))} left"

    def __call__(self, i: int, n: int, cell, rec, seconds: float) -> None:
        if rec is None:
            if self.live:
                self.live.update(self.task, description=f"[{i}/{n}] {cell.key}", total=n, completed=i - 1,
                                 eta=self.eta(n - i + 1))
            return
        self.done.append(seconds)
        elapsed = self.clock() - self.t0
        line = f"[{i}/{n}] {cell.key}: {rec['status']} in {seconds:.1f} s" + (f" ({rec['error']})" if rec["error"] else "") \
            + f" · {fmt_s(elapsed)} elapsed" + (f" · {self.eta(n - i)}" if i < n else "")
        if self.live:
            self.live.console.print(line, markup=False, highlight=False)
            self.live.update(self.task, completed=i)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.live.stop()
