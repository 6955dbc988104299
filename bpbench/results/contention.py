"""When a measurement was taken on a busy machine: the judgement of measure.contention's figures.

Torch-free and in the results layer, so that `run` (which sets `timing.contended`), compare and
any reader of saved results judge by the one rule. The figures say how long this process's
threads waited for a CPU, how much the machine's tasks did (PSI), how often this process was
preempted and the load average; the first figure present decides (see `judge`).
"""

from __future__ import annotations

from typing import Any

# A CPU-bound step whose threads waited a share w of the time they were runnable took about
# 1 / (1 - w) of its own time: at w = 10 % about 11 % longer, the size of change compare calls a
# change (noise.MIN_CHANGE). Waiting alone could then make the verdict, so the cell is not compared.
WAIT_SHARE_LIMIT = 0.10
# Without per-thread counts: the share of the loop's wall time during which some task of the
# machine waited for a CPU (PSI some). It counts other tasks' waits too, so it can only err busy.
PSI_SOME_LIMIT = 0.10
# Without either (no Linux /proc): more runnable tasks than CPUs over the last minute, confirmed
# by this process being preempted often now (a lone task is preempted a few times a second at
# most; one sharing its CPU with a spinning rival, 65-95 times a second here).
LOAD_PER_CPU_LIMIT = 1.25
SWITCHES_PER_S_LIMIT = 20.0


def judge(c: dict[str, Any] | None) -> str | None:
    """Why the figures of `timing.contention` say the machine was busy; None when they do not
    (or say nothing). The first signal present decides: run-queue wait, PSI, load average."""
    if not c:
        return None
    share = c.get("wait_share")
    if share is not None:
        return (f"its threads waited for a CPU {share:.0%} of their runnable time, over "
                f"{WAIT_SHARE_LIMIT:.0%}") if share > WAIT_SHARE_LIMIT else None
    psi = c.get("psi_some_share")
    if psi is not None:
        return (f"tasks waited for a CPU during {psi:.0%} of the loop (CPU pressure), over "
                f"{PSI_SOME_LIMIT:.0%}") if psi > PSI_SOME_LIMIT else None
    load, rate = c.get("load_per_cpu"), c.get("involuntary_switches_per_s")
    if load is not None and rate is not None and load > LOAD_PER_CPU_LIMIT and rate > SWITCHES_PER_S_LIMIT:
        return (f"load average {load:.1f} per CPU, over {LOAD_PER_CPU_LIMIT}, and {rate:.0f} "
                f"preemptions a second, over {SWITCHES_PER_S_LIMIT:.0f}")
    return None


def warning(reason: str) -> str:
    """The one line `run` prints for a contended measurement."""
    return f"measured on a busy machine ({reason}): step times not comparable with other runs"


NOT_COMPARABLE = "not comparable: measured on a busy machine"


def contended(result: dict[str, Any]) -> bool:
    """Was this run result measured on a busy machine? (Results from before the flag: no.)"""
    return bool((result.get("timing") or {}).get("contended"))


def reason(runs: list[dict[str, Any]]) -> str | None:
    """Why the first contended run of `runs` was judged busy; None when none was."""
    for r in runs:
        if contended(r):
            return (r["timing"].get("contention") or {}).get("reason") or "judged busy when it ran"
    return None
