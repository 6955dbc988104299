"""The machine's three ceilings, measured: what a step can at best reach on this device.

- matrix-product peak (GFLOP/s): the best of large square products (torch.utils.benchmark);
- memory bandwidth (GB/s): the best of a copy (`b.copy_(a)`: 2 x its bytes) and a triad
  (`a = b + 2 c`: 3 x its bytes, as STREAM counts them), per tensor size from inside a core's L2
  cache to far beyond the last-level cache. The largest size's figure is the headline (what DRAM,
  or a GPU's HBM, delivers); the smaller ones form the curve the memory floor reads, since a cache
  may hold a small op's data;
- the cost of one eager ATen call (µs): `torch.add` on one-element tensors, whose arithmetic is
  nil, so what is left is Python's binding, the dispatcher and the allocation of the output, and
  on CUDA the kernel launch (kernels this small finish before the host has launched the next,
  so CUDA events around the loop time the launch rate).

Each figure is the best of a few repeats, and on a CPU of one thread and the run's count (see
`thread_counts`): other work on the machine can only slow a measurement down (a peak or a
bandwidth falls, a call's cost grows), so the best is the ceiling. bpbench.peak caches them per
device, dtype and thread count.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import time
from typing import Any, Callable

CPU_SIZES = (256, 512, 1024)        # a 2-core CPU reaches its plateau by 1024; ~1-2 s in all
CUDA_SIZES = (2048, 4096, 8192)
# Tensor sizes of the bandwidth measurement, MiB: from inside a core's L2 to 8x a 32 MiB L3 (and
# several times a GPU's L2), a point every factor of 2 to 4 (an op's bandwidth is read from the
# next measured size down: the denser the curve, the tighter the memory floor); the largest is the
# headline figure.
CURVE_MIB = (0.125, 0.5, 2, 8, 16, 32, 64, 256)
# The op-cost loop: many short repeats (well under a scheduler time slice each), so that on a busy
# machine some of them run undisturbed and the best is the call's own cost.
OP_CALLS, OP_REPEATS = 500, 30


# Each ceiling: the entry keys its measurement writes, and which of two measurements is the better.
CEILINGS: dict[str, tuple[tuple[str, ...], Callable[[float, float], float]]] = {
    "gflops": (("gflops", "size", "sizes", "measured"), max),
    "bandwidth_gbs": (("bandwidth_gbs", "bandwidth_curve", "bandwidth"), max),
    "op_overhead_us": (("op_overhead_us", "op_overhead"), min),
}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _on_cuda(device) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op thread count set to `n` while measuring (torch.utils.benchmark does the same)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def best_seconds_per_call(fn: Callable[[], Any], device, calls: int, repeats: int) -> float:
    """The fastest of `repeats` timings of `calls` back-to-back calls of `fn`, per call.

    On CUDA, CUDA events around the calls after a synchronize time the GPU's side, and the end
    event is waited for: a loop of tiny kernels shows the launch rate, a large copy its transfer.
    """
    import torch
    best = math.inf
    for _ in range(repeats):
        if _on_cuda(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            seconds = time.perf_counter() - t0
        best = min(best, seconds / calls)
    return best


def thread_counts(device, threads: int) -> list[int]:
    """The thread counts a CPU ceiling for `threads` is measured at: 1 and `threads`. N threads
    can do at least what one does, and on a busy machine one thread is measured far more
    reliably (each parallel region of N waits for a core for every thread), so a ceiling is the
    best of both."""
    return [threads] if _on_cuda(device) else sorted({1, threads})


def matmul_peak(device, dtype, threads: int, sizes: tuple[int, ...] | None = None,
                min_run_time: float = 0.3) -> dict[str, Any]:
    """Best GFLOP/s of `a @ b` over square sizes (and over `thread_counts`), timed by
    torch.utils.benchmark (which synchronises CUDA and sets the thread count for the measurement)."""
    import logging

    import torch
    # torch.utils.benchmark imports cpp_extension, which warns on CPU-only machines that it found
    # no CUDA runtime: irrelevant to a matrix-product timing, and noise on stderr.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    sizes = sizes or (CUDA_SIZES if _on_cuda(device) else CPU_SIZES)
    best = (0.0, 0)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for t in thread_counts(device, threads):
            m = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=t).blocked_autorange(
                min_run_time=min_run_time)
            # The fastest block: on a shared machine slower blocks measure other work.
            best = max(best, (2 * n ** 3 / min(m.times) / 1e9, n))
    return {"gflops": best[0], "size": best[1], "sizes": list(sizes), "dtype": str(dtype).removeprefix("torch."),
            "threads": threads, "measured": now()}


def bandwidth(device, dtype, threads: int, mib: tuple[float, ...] | None = None,
              repeats: int = 5) -> dict[str, Any]:
    """Best GB/s of a copy and a triad per tensor size in `mib` (and over `thread_counts`); the
    headline `bandwidth_gbs` is the largest size's (beyond every cache), `bandwidth_curve` holds
    [bytes touched, GB/s] of every measurement (a cache holds the smaller ones, and their
    bandwidth is higher)."""
    mib = mib or CURVE_MIB
    curve = []
    for size in mib:
        curve += _copy_and_triad(device, dtype, size, repeats, thread_counts(device, threads))
    largest = [gbs for touched, gbs in curve if touched >= 2 * max(mib) * 2 ** 20]
    return {"bandwidth_gbs": max(largest), "bandwidth_curve": sorted(curve),
            "bandwidth": {"method": "copy (2 x bytes) and triad (3 x bytes), best of each",
                          "mib": list(mib), "measured": now()}}


def _copy_and_triad(device, dtype, mib: float, repeats: int, threads: list[int]) -> list[list[float]]:
    """[[bytes touched, GB/s]] of `b.copy_(a)` and `a = b + 2 c` on tensors of `mib` MiB, the
    best over the thread counts; each timing covers at least ~64 MiB of traffic (many calls on
    small tensors), so the clock's resolution does not limit it."""
    import torch
    n = int(mib * 2 ** 20) // torch.empty((), dtype=dtype).element_size()
    a, b, c = (torch.rand(n, device=device).to(dtype) for _ in range(3))
    nbytes = a.numel() * a.element_size()
    calls = max(1, 2 ** 26 // nbytes)
    copy_s = triad_s = math.inf
    for t in threads:
        with _threads(t):
            copy_s = min(copy_s, best_seconds_per_call(lambda: b.copy_(a), device, calls=calls, repeats=repeats))
            triad_s = min(triad_s, best_seconds_per_call(lambda: torch.add(b, c, alpha=2.0, out=a), device,
                                                         calls=calls, repeats=repeats))
    return [[2 * nbytes, 2 * nbytes / copy_s / 1e9], [3 * nbytes, 3 * nbytes / triad_s / 1e9]]


def op_overhead(device, dtype, threads: int, calls: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    """The cost of one eager `torch.add` on one-element tensors, in µs (best of `repeats`)."""
    import torch
    calls, repeats = calls or OP_CALLS, repeats or OP_REPEATS
    x, y = torch.ones(1, device=device, dtype=dtype), torch.ones(1, device=device, dtype=dtype)
    with _threads(threads):
        torch.add(x, y)                       # first call: lazy initialisation, not a call's cost
        seconds = best_seconds_per_call(lambda: torch.add(x, y), device, calls=calls, repeats=repeats)
    return {"op_overhead_us": seconds * 1e6,
            "op_overhead": {"op": "torch.add on 1-element tensors", "calls": calls, "measured": now()}}
