"""Was the machine busy while the loop was timed? What the kernel says about waiting for a CPU.

A step timed while another job holds the cores measures the queue, not the code, and a steady
slowdown (OpenMP threads each waiting for a core) leaves no spread for the noise warning to see.
So each timed loop is bracketed by two readings of what the kernel counts anyway:

- the run queue: per thread of this process, the nanoseconds it ran and the nanoseconds it was
  runnable but waited for a CPU (`/proc/self/task/*/schedstat`, Linux);
- CPU pressure: the microseconds during which at least one task of the machine waited for a CPU
  (PSI, `some total` in `/proc/pressure/cpu`, Linux 4.20+), and its 10-second average;
- this process's involuntary context switches (getrusage; psutil where resource is missing);
- the 1-minute load average against the CPUs this process may use.

`Probe` takes the readings; `figures()` turns two of them into the raw figures a result keeps
(`timing.contention`); the judgement of those figures is results.contention's. Readers of /proc
that fail (no such file, another OS) give None, never an error: the judgement then falls back to
what exists. Torch-free.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

PSI_CPU = "/proc/pressure/cpu"
TASKS = "/proc/self/task"


def read_psi(path: str | os.PathLike = PSI_CPU) -> tuple[float, int] | None:
    """(some avg10 in %, some total in µs) from a PSI file, None where there is none."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        kind, *fields = line.split()
        if kind == "some":
            values = dict(f.split("=", 1) for f in fields if "=" in f)
            try:
                return float(values["avg10"]), int(values["total"])
            except (KeyError, ValueError):
                return None
    return None


def read_threads(task_dir: str | os.PathLike = TASKS) -> dict[str, tuple[int, int]] | None:
    """thread id -> (ns on a CPU, ns waiting on a run queue), for every thread of this process."""
    out: dict[str, tuple[int, int]] = {}
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return None
    for tid in tids:
        try:
            ran, waited = Path(task_dir, tid, "schedstat").read_text(encoding="ascii").split()[:2]
            out[tid] = (int(ran), int(waited))
        except (OSError, ValueError):
            continue        # a thread that ended meanwhile, or a kernel without schedstat
    return out or None


def involuntary_switches() -> int | None:
    """Times this process (all its threads) was preempted so far."""
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    except (ImportError, OSError):
        pass
    try:
        import psutil
        return psutil.Process().num_ctx_switches().involuntary
    except Exception:   # psutil missing or refused: the figure is unknown, the run goes on
        return None


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Reading:
    wall_s: float
    psi: tuple[float, int] | None
    threads: dict[str, tuple[int, int]] | None
    switches: int | None


class Probe:
    """`with Probe() as p: <timed loop>`, then `p.figures(steps, threads)`. Every source is
    injectable, so recorded or induced conditions can be read in tests."""

    def __init__(self, psi_path: str | os.PathLike = PSI_CPU, task_dir: str | os.PathLike = TASKS,
                 switches: Callable[[], int | None] = involuntary_switches,
                 loadavg: Callable[[], float | None] = load_average,
                 cpus: Callable[[], int] = usable_cpus, clock: Callable[[], float] = time.perf_counter):
        self._psi_path, self._task_dir = psi_path, task_dir
        self._switches, self._loadavg, self._cpus, self._clock = switches, loadavg, cpus, clock
        self.start: Reading | None = None
        self.end: Reading | None = None

    def read(self) -> Reading:
        return Reading(self._clock(), read_psi(self._psi_path), read_threads(self._task_dir), self._switches())

    def __enter__(self) -> "Probe":
        self.start = self.read()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end = self.read()

    def figures(self, steps: int, threads: int) -> dict[str, Any]:
        """The raw figures of the bracketed loop (the `timing.contention` object)."""
        return figures(self.start, self.end, steps, threads, self._loadavg(), self._cpus())


def _thread_totals(a: dict[str, tuple[int, int]] | None, b: dict[str, tuple[int, int]] | None):
    """(ns run, ns waited) of every thread between two readings; a thread born in between counts
    from zero (its whole life is inside the loop)."""
    if a is None or b is None:
        return None, None
    ran = sum(r - a.get(tid, (0, 0))[0] for tid, (r, _) in b.items())
    waited = sum(w - a.get(tid, (0, 0))[1] for tid, (_, w) in b.items())
    return ran, waited


def figures(start: Reading, end: Reading, steps: int, threads: int, load: float | None,
            cpus: int) -> dict[str, Any]:
    wall = max(end.wall_s - start.wall_s, 1e-9)
    ran, waited = _thread_totals(start.threads, end.threads)
    psi_us = end.psi[1] - start.psi[1] if start.psi and end.psi else None
    switches = end.switches - start.switches if start.switches is not None and end.switches is not None else None
    return {
        "wall_s": wall,
        "cpu_s": ran / 1e9 if ran is not None else None,
        "run_queue_wait_s": waited / 1e9 if waited is not None else None,
        "wait_share": waited / (ran + waited) if ran is not None and ran + waited > 0 else None,
        "psi_some_total_us": psi_us,
        "psi_some_share": psi_us / 1e6 / wall if psi_us is not None else None,
        "psi_some_avg10": end.psi[0] if end.psi else None,
        "involuntary_switches": switches,
        "involuntary_switches_per_step": switches / steps if switches is not None and steps else None,
        "involuntary_switches_per_s": switches / wall if switches is not None else None,
        "load_avg_1m": load,
        "cpus": cpus,
        "threads": threads,
        "load_per_cpu": load / cpus if load is not None and cpus else None,
    }
