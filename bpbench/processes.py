"""Child processes that never outlive bpbench (torch-free: compare's cells and the ranks use it).

Linux's PR_SET_PDEATHSIG has the kernel kill a child when its parent dies, even by SIGKILL,
which runs no cleanup of ours; elsewhere these are no-ops (Ctrl-C and SIGTERM still stop every
child through bpbench's own handlers).
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _prctl(option: int, arg) -> None:
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(option, arg)


# Set by `compare` for its cells: the pid each cell must not outlive.
PARENT_ENV = "BPBENCH_DIE_WITH"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def die_with_parent(parent: int | None = None) -> None:
    """Have Linux kill this process when its parent dies (call it in the child)."""
    parent = parent or os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:    # the parent died before the request: nobody would send it
        os.kill(os.getpid(), signal.SIGKILL)


def start_child(argv: list[str], **popen_kwargs):
    """subprocess.Popen of a `python -m bpbench ...` child that dies with this process.

    A Ctrl-C or SIGTERM arriving while the child starts would interrupt Popen itself and leave a
    child the caller has no handle on, so both are deferred for that instant (handlers run in
    the main thread whatever thread the kernel picked, unlike a signal mask), then the child's
    process group is stopped and the interrupt raised."""
    import subprocess
    env = {**(popen_kwargs.pop("env", None) or os.environ), PARENT_ENV: str(os.getpid())}
    deferred: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: deferred.append(signum)) for s in STOP_SIGNALS}
    try:
        proc = subprocess.Popen(argv, env=env, **popen_kwargs)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if deferred:
        stop_group(proc)
        raise KeyboardInterrupt
    return proc


def stop_group(proc) -> None:
    """End a child's whole process group (it was started in a session of its own): SIGTERM,
    then SIGKILL if it has not gone within 5 s. The child's pipes are closed right after the
    SIGTERM: nobody reads them any more, and a child writing into a full one (a cell printing its
    partial result) would block there until the SIGKILL; closed, its write fails at once."""
    import subprocess
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        for pipe in (getattr(proc, "stdout", None), getattr(proc, "stderr", None)):
            if pipe is not None:
                pipe.close()
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def child_setup() -> None:
    """In a child started by start_child: die with the parent even when it is SIGKILLed (which
    runs no cleanup)."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is not None:
        die_with_parent(int(parent))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset narrows),
    not merely those the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_process_name(name: str) -> None:
    """What `ps -o comm` and `top` show for this process."""
    _prctl(PR_SET_NAME, name.encode()[:15])
