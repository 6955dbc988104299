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


def die_with_parent() -> None:
    """Have Linux kill this process when its parent dies (call it in the child)."""
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:    # the parent died before the request: nobody would send it
        os.kill(os.getpid(), signal.SIGKILL)


def set_process_name(name: str) -> None:
    """What `ps -o comm` and `top` show for this process."""
    _prctl(PR_SET_NAME, name.encode()[:15])
