"""Limits checked before any work starts (memory, ulimit -v), and an allocation that fails anyway
ending in one line. The data-parallel bounds (--nproc) are in test_distributed.py."""

import json
import os
import re
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
    # (what it leaves: the limit less what is mapped when the run checks, a little less than 2 GiB)
    assert re.search(rf"; the address-space limit \(ulimit -v {limit // 1024}\) leaves this process [12]\.\d GiB:", line)
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


@pytest.mark.parametrize("args,msg", [
    (["compare", "scaling", "--nprocs", "100000"],
     "scaling:mnist01/ddp/cpu/strong N=100000, batch=full: --nproc 100000 is more ranks than this machine can run"),
    (["compare", "mnist01", "--variant", "allreduce", "--set", "nproc=99999999999999999999"],
     "--nproc 99999999999999999999 is more ranks than this machine can run"),
    (["compare", "--repeat", "100000000"], "compare --repeat 100000000 would need about "),
])
def test_compare_refuses_what_no_cell_could_finish_before_any_cell_starts(cli, monkeypatch, args, msg):
    """--nprocs 100000 started ranks for 12 s until 'Too many open files'; --repeat 100000000 kept
    every run's result (all its step times) in memory with no estimate."""
    from bpbench import processes
    monkeypatch.setattr(processes, "start_child", lambda *a, **k: pytest.fail("a cell was started"))
    line = one_line(cli(*args), 2)
    assert msg in line
    if "--repeat" in args:
        assert line.endswith("GiB: use a smaller --repeat")


def test_two_compares_into_one_output_dir_are_warned(cli, tmp_path, in_process_cells):
    """The second one says so before its cells run, and its document notes it; the lock goes with
    the process that held it (flock), so a finished or killed compare leaves none behind."""
    from bpbench import comparison as cmp
    with cmp.output_lock(tmp_path) as first:
        assert first is None
        r = cli("compare", "linreg", "--variant", "manual", "--set", "epochs=3", "--output-dir", tmp_path)
        assert r.exit_code == 0, r.stderr
        warning = f"another compare (pid {os.getpid()}) is writing into {tmp_path} too"
        assert f"bpbench: warning: {warning}" in r.stderr
        assert any(n.startswith(warning) for n in json.loads((tmp_path / "results.json").read_text())["notes"])
    with cmp.output_lock(tmp_path) as again:
        assert again is None


def test_an_output_dir_that_cannot_hold_the_lock_is_no_error(tmp_path, monkeypatch):
    """A folder named like the lock, or a file system without flock: the comparison runs unwarned."""
    import fcntl

    from bpbench import comparison as cmp
    from bpbench.comparison.execute import LOCK
    (tmp_path / "a" / LOCK).mkdir(parents=True)
    with cmp.output_lock(tmp_path / "a") as clash:
        assert clash is None
    monkeypatch.setattr(fcntl, "flock", lambda *a: (_ for _ in ()).throw(OSError(37, "No locks available")))
    with cmp.output_lock(tmp_path / "b") as clash:
        assert clash is None


def test_a_ulimit_too_small_for_torch_itself_is_one_line():
    """Below what torch's libraries map (about 3 GiB here) even importing torch fails: that was
    an ImportError traceback ("failed to map segment from shared object")."""
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2_500_000 * 1024, resource.RLIM_INFINITY))
    r = subprocess.run([sys.executable, "-m", "bpbench", "run", "linreg"], capture_output=True, text=True,
                       preexec_fn=limit, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("bpbench: error: out of memory loading the libraries (")
    assert r.stderr.endswith("an address-space limit (ulimit -v) leaves too little for torch\n")
