"""Limits checked before any work starts (memory, ulimit -v), and an allocation that fails anyway
ending in one line. The data-parallel bounds (--nproc) are in test_distributed.py."""

import resource

import psutil
import pytest

from bpbench.measure import run as runner

ALLOC_ERROR = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
               "tried to allocate 1200000000 bytes. Error code 12 (Cannot allocate memory)")


def one_line(r, code):
    assert r.exit_code == code, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    return r.stderr.strip()


def test_the_memory_estimate_honours_ulimit_v(cli, monkeypatch):
    """A width that fits the machine (23 GiB here) but not an address-space limit 2 GiB above
    what the process has mapped: refused before anything is allocated (was a traceback from
    torch's allocator)."""
    limit = psutil.Process().memory_info().vms + 2 * 2**30
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limit, resource.RLIM_INFINITY)
                        if which == resource.RLIMIT_AS else (resource.RLIM_INFINITY,) * 2)
    monkeypatch.setattr(runner, "build_session", lambda *a: pytest.fail("allocated before refusing"))
    line = one_line(cli("run", "width", "--width", "3000000", "--epochs", "2"), 2)
    assert line.startswith("bpbench: error: width would need about 3.5 GiB of memory (")
    assert f"the address-space limit (ulimit -v {limit // 1024}) leaves this process 2.0 GiB" in line
    assert runner.host_memory()[0] <= 2 * 2**30


def test_no_limit_means_the_machine(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,) * 2)
    assert runner.host_memory() == (psutil.virtual_memory().total, "this machine has")


def test_an_allocation_that_fails_anyway_is_one_line(cli, monkeypatch):
    def failing(*a):
        raise RuntimeError(ALLOC_ERROR)
    monkeypatch.setattr(runner, "build_session", failing)
    assert one_line(cli("run", "linreg"), 1) == (
        "bpbench: error: out of memory (can't allocate memory: you tried to allocate 1200000000 bytes): use a "
        "smaller size or fewer epochs, or allow more memory (ulimit -v)")


def test_other_runtime_errors_still_propagate(monkeypatch):
    monkeypatch.setattr(runner, "build_session", lambda *a: (_ for _ in ()).throw(RuntimeError("a bug")))
    info, cfg = runner.resolve("linreg", None, {})
    with pytest.raises(RuntimeError, match="a bug"):
        runner.execute_in_process(info, cfg)
