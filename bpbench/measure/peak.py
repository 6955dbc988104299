"""The machine's ceilings, measured: its matrix-product peak, memory bandwidth and per-op cost.

The denominator of "% of peak" is what this machine's BLAS actually reaches on large square
products (torch.utils.benchmark, best block of a few sizes), not a datasheet figure; the
bandwidth and the cost of one eager ATen call are measured beside it (bpbench.measure.ceilings).
They are cached per machine in `$BPBENCH_CACHE` or the platform's cache directory (platformdirs),
keyed by device name, dtype, thread count, TF32 setting and the torch and bpbench versions that
produced them, so runs measure them at most once; `bpbench peak --remeasure` measures again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from bpbench.errors import BadInput
from bpbench.measure.cache import Cache

CACHE_FILE = "peak.json"
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
    # [bytes touched, GB/s] per size the bandwidth was measured at: what the memory floor reads
    "bandwidth_curve": lambda v: isinstance(v, list) and 0 < len(v) <= 256 and all(
        isinstance(p, list) and len(p) == 2 and _number(0, 1e15)(p[0]) and _number(0, 1e5)(p[1]) for p in v),
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
    """The matrix-product peak, measured now (bpbench.measure.ceilings.matmul_peak)."""
    from bpbench.measure import ceilings
    return ceilings.matmul_peak(device, dtype, threads, sizes=sizes, min_run_time=min_run_time)


def _measure_missing(device, dtype, threads: int, names: list[str]) -> dict[str, Any]:
    from bpbench.measure import ceilings
    fresh: dict[str, Any] = {}
    if "gflops" in names:
        fresh.update(measure(device, dtype, threads))
    if "bandwidth_gbs" in names:
        fresh.update(ceilings.bandwidth(device, dtype, threads))
    if "op_overhead_us" in names:
        fresh.update(ceilings.op_overhead(device, dtype, threads))
    return fresh


def keep_best(cached: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """`cached` updated with each freshly measured ceiling (with the keys its measurement wrote),
    unless the cached figure is the better one (higher peak or bandwidth, lower op cost) and
    within KEEP_HIGHER_WITHIN of the new one: no quieter moment is that much better, the cache was."""
    from bpbench.measure.ceilings import CEILINGS
    out = dict(cached)
    for name, (keys, better) in CEILINGS.items():
        if name not in fresh:
            continue
        old, new = cached.get(name), fresh[name]
        keep = old is not None and better(old, new) == old != new and \
            max(old, new) <= KEEP_HIGHER_WITHIN * min(old, new)
        if not keep:
            out.update({k: fresh[k] for k in keys if k in fresh})
    out.update({k: v for k, v in fresh.items() if k not in out})   # e.g. dtype, threads
    return out


def get(device, dtype=None, threads: int | None = None, remeasure: bool = False) -> dict[str, Any]:
    """The ceilings for this device, dtype and thread count: cached, or measured now and cached.

    The matrix-product peak (`gflops`), the memory bandwidth (`bandwidth_gbs`, with the curve of
    every size measured) and one eager op's cost (`op_overhead_us`); a cached entry that lacks one
    (written before it was measured) or holds one that fails validation (see FIELDS) gets it
    measured now. `remeasure` measures all again and keeps the better of the new and the cached
    figure of each (see keep_best): other work on the machine can only make a measurement worse,
    never better. Returns the entry plus `key`, `source` (of the peak), `cache` (the file, None if
    it could not be written), `measured_now` (what ran now) and `measured_now_gflops`.
    """
    import torch

    from bpbench.measure.ceilings import CEILINGS
    dtype = dtype or torch.float32
    threads = threads or torch.get_num_threads()
    k = key(device, dtype, threads)
    cached = lookup(k)
    missing = [c for c in CEILINGS if remeasure or cached is None or c not in cached
               or (c == "bandwidth_gbs" and "bandwidth_curve" not in cached)]
    if not missing:
        return {**cached, "key": k, "source": f"cache (measured {cached.get('measured', '?')})",
                "cache": str(cache_path()), "measured_now": {}, "measured_now_gflops": None}
    fresh = _measure_missing(device, dtype, threads, missing)
    kept = keep_best(cached or {}, fresh)
    where = store(k, kept)
    source = "measured now" if "gflops" in fresh and kept["gflops"] == fresh["gflops"] else \
        f"cache (measured {kept.get('measured', '?')}" + ("; higher than this remeasurement)" if "gflops" in fresh else ")")
    return {**kept, "key": k, "source": source, "cache": str(where) if where else None,
            "measured_now": {c: fresh[c] for c in CEILINGS if c in fresh},
            "measured_now_gflops": fresh.get("gflops")}


def dtype_of(name: str):
    import torch
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise BadInput(f"unknown dtype {name!r} (e.g. float32, float64, bfloat16, float16)")
    return dt
