"""The machine's peak, measured: a short matrix-product benchmark per device, dtype and threads.

The denominator of "% of peak" is what this machine's BLAS actually reaches on large square
products (torch.utils.benchmark, best block of a few sizes), not a datasheet figure. It is cached
per machine in `$BPBENCH_CACHE` or the platform's cache directory (platformdirs), keyed by device
name, dtype, thread count, TF32 setting and the torch and bpbench versions that produced it, so
runs measure it at most once; `bpbench peak --remeasure` measures again.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Callable

from bpbench.errors import BadInput
from bpbench.measure.cache import Cache

CACHE_FILE = "peak.json"
CPU_SIZES = (256, 512, 1024)        # a 2-core CPU reaches its plateau by 1024; ~1-2 s in all
CUDA_SIZES = (2048, 4096, 8192)
CACHE = Cache(CACHE_FILE, "bpbench-peak-cache")


def cache_path() -> Path:
    return CACHE.path


def key(device, dtype, threads: int) -> str:
    """What a cached figure is valid for: change any part and it is measured again."""
    import torch

    import bpbench
    from bpbench.measure import env as envinfo
    if getattr(device, "type", str(device)) == "cuda":
        name = f"cuda:{torch.cuda.get_device_name(device)}"
        tf32 = f"tf32={torch.backends.cuda.matmul.allow_tf32}"
    else:
        name, tf32 = f"cpu:{envinfo.cpu_name()}", "tf32=n/a"
    return "|".join([name, str(dtype).removeprefix("torch."), f"threads={threads}", tf32,
                     f"torch={torch.__version__}", f"bpbench={bpbench.__version__}"])


def _number(lo: float, hi: float, integer: bool = False) -> Callable[[Any], bool]:
    """A plain finite number in (lo, hi]: never a bool, NaN or a string of digits."""
    kinds = int if integer else (int, float)
    return lambda v: isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v) and lo < v <= hi


def _text(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 100


# What each field of a cached entry may hold: a cache file can be edited or damaged (NaN, inf, 0,
# -5, true and 1e308 are no peak). A field that fails is dropped, as if it had not been cached.
FIELDS: dict[str, Callable[[Any], bool]] = {
    "gflops": _number(0, 1e7),              # 10 PFLOP/s: beyond any single device today
    "bandwidth_gbs": _number(0, 1e5),       # 100 TB/s
    "op_overhead_us": _number(0, 1e6),      # a second per op
    "size": _number(0, 1e6, integer=True),
    "threads": _number(0, 1e6, integer=True),
    "sizes": lambda v: isinstance(v, list) and 0 < len(v) <= 64 and all(map(_number(0, 1e6, True), v)),
    "dtype": _text,
    "measured": _text,
}
MATMUL = ("gflops", "size", "sizes", "dtype", "threads", "measured")   # what `measure` caches
KEEP_HIGHER_WITHIN = 4.0   # --remeasure keeps a higher cached figure only up to 4x the new one


def clean(entry: Any) -> dict[str, Any]:
    """A cached entry with every field that fails its check in FIELDS dropped (and nothing at all
    for anything but an object)."""
    if not isinstance(entry, dict):
        return {}
    return {k: v for k, v in entry.items() if k not in FIELDS or FIELDS[k](v)}


def lookup(k: str, fields: tuple[str, ...] = MATMUL) -> dict[str, Any] | None:
    """The cached entry for key `k`, its insane fields dropped; None (not cached) unless every
    one of `fields` is there and sane."""
    entry = clean(CACHE.lookup(k))
    return entry if all(f in entry for f in fields) else None


def store(k: str, entry: dict[str, Any]) -> Path | None:
    """Add `entry` to the cache; None when it cannot be written (the figure is still used for
    this run: a read-only home must not stop a measurement)."""
    return CACHE.store(k, entry)


def measure(device, dtype, threads: int, sizes: tuple[int, ...] | None = None,
            min_run_time: float = 0.3) -> dict[str, Any]:
    """Best GFLOP/s of `a @ b` over square sizes, timed by torch.utils.benchmark (which
    synchronises CUDA and sets the thread count for the measurement)."""
    import logging

    import torch
    # torch.utils.benchmark imports cpp_extension, which warns on CPU-only machines that it found
    # no CUDA runtime: irrelevant to a matrix-product timing, and noise on stderr.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    on_cuda = getattr(device, "type", str(device)) == "cuda"
    sizes = sizes or (CUDA_SIZES if on_cuda else CPU_SIZES)
    best = (0.0, 0)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        m = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=threads).blocked_autorange(
            min_run_time=min_run_time)
        # The fastest block: on a shared machine slower blocks measure other work.
        gflops = 2 * n ** 3 / min(m.times) / 1e9
        best = max(best, (gflops, n))
    return {"gflops": best[0], "size": best[1], "sizes": list(sizes), "dtype": str(dtype).removeprefix("torch."),
            "threads": threads, "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def get(device, dtype=None, threads: int | None = None, remeasure: bool = False) -> dict[str, Any]:
    """The peak for this device, dtype and thread count: cached, or measured now and cached.

    `remeasure` measures again and keeps the higher of the new and the cached figure: other work
    on the machine can only slow a measurement down, never speed it up; but not a cached figure
    more than KEEP_HIGHER_WITHIN times the new one (no quieter moment is that much faster: the
    cache was wrong), nor one that fails validation (see FIELDS), which is not cached. Returns the entry plus
    `key`, `source`, `cache` (the file, None if it could not be written) and, when a measurement
    ran, `measured_now_gflops`.
    """
    import torch
    dtype = dtype or torch.float32
    threads = threads or torch.get_num_threads()
    k = key(device, dtype, threads)
    cached = lookup(k)
    if cached is not None and not remeasure:
        return {**cached, "key": k, "source": f"cache (measured {cached.get('measured', '?')})",
                "cache": str(cache_path()), "measured_now_gflops": None}
    fresh = measure(device, dtype, threads)
    kept = cached if cached is not None and fresh["gflops"] < cached["gflops"] <= \
        KEEP_HIGHER_WITHIN * fresh["gflops"] else fresh
    where = store(k, kept)
    source = "measured now" if kept is fresh else \
        f"cache (measured {cached.get('measured', '?')}; higher than this remeasurement)"
    return {**kept, "key": k, "source": source, "cache": str(where) if where else None,
            "measured_now_gflops": fresh["gflops"]}


def dtype_of(name: str):
    import torch
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise BadInput(f"unknown dtype {name!r} (e.g. float32, float64, bfloat16, float16)")
    return dt
