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

    Ctrl-C and SIGTERM are held back while the child starts: arriving inside Popen they would
    leave a child that the caller has no handle on to stop. The child inherits the held-back
    mask, so it lifts it itself, in `child_setup`, the first thing `python -m bpbench` does."""
    import subprocess
    env = {**(popen_kwargs.pop("env", None) or os.environ), PARENT_ENV: str(os.getpid())}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return subprocess.Popen(argv, env=env, **popen_kwargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)   # a pending Ctrl-C is raised here


def child_setup() -> None:
    """In a child started by start_child: take Ctrl-C and SIGTERM again, and die with the parent
    even when it is SIGKILLed (which runs no cleanup)."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None:
        return
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    die_with_parent(int(parent))


def set_process_name(name: str) -> None:
    """What `ps -o comm` and `top` show for this process."""
    _prctl(PR_SET_NAME, name.encode()[:15])
