"""What bounds a step: three floors from its counts and the machine's ceilings; the largest wins.

Pure arithmetic on recorded numbers (no torch), so a run, a report and a comparison compute the
same thing. With a step's counts (bpbench.measure.counts) and the ceilings (bpbench.measure.ceilings):

    compute  = FLOPs / the matrix-product peak
    memory   = bytes / bandwidth, op-size class by op-size class: the bytes of ops that each move
               2^k to 2^(k+1) bytes at the best bandwidth measured on a working set of at most
               2^k bytes or any larger one (a cache may hold a small op's data; DRAM's figure
               would make the floor too high for it)
    overhead = ATen calls x the cost of one eager call

Each is a time the step cannot beat (the peak and bandwidths are the best this machine reached;
each op's cost includes one call): the largest is the bound, and the step's multiple of it says
how much is left to gain.
"""

from __future__ import annotations

from typing import Any

BOUNDS = ("compute", "memory", "overhead")
COUNT_KEYS = ("flops_per_step", "matmul_flops", "elementwise_flops", "bytes_per_step", "aten_ops_per_step")


def bandwidth_at(touched: int, curve: list[list[float]], fallback_gbs: float) -> float:
    """GB/s an op touching `touched` bytes can reach at best: the best of the measurements on
    working sets no smaller than the largest measured one that fits in `touched` (a smaller op
    may live in a faster cache; a larger one in no faster a level). No curve: `fallback_gbs`."""
    if not curve:
        return fallback_gbs
    sizes = sorted({s for s, _ in curve})
    fits = [s for s in sizes if s <= touched]
    start = fits[-1] if fits else sizes[0]
    return max(g for s, g in curve if s >= start)


def memory_floor_s(bytes_by_op_size: dict[str, int], curve: list[list[float]], bandwidth_gbs: float) -> float:
    return sum(b / (bandwidth_at(2 ** int(k), curve, bandwidth_gbs) * 1e9) for k, b in bytes_by_op_size.items())


def floors(counts: dict[str, Any], ceilings: dict[str, Any]) -> dict[str, float | None]:
    """Seconds per floor (None where a ceiling is missing)."""
    peak, bw, op_us = (ceilings.get(k) for k in ("gflops", "bandwidth_gbs", "op_overhead_us"))
    total = counts["bytes_per_step"]
    # Counts without size classes: all bytes as one op's (the smallest bound: the fastest level).
    by_size = counts.get("bytes_by_op_size") or ({str(total.bit_length() - 1): total} if total else {})
    return {"compute": counts["flops_per_step"] / (peak * 1e9) if peak else None,
            "memory": memory_floor_s(by_size, ceilings.get("bandwidth_curve") or [], bw) if bw else None,
            "overhead": counts["aten_ops_per_step"] * op_us * 1e-6 if op_us else None}


def bound_of(floors_s: dict[str, float | None]) -> str | None:
    known = {k: v for k, v in floors_s.items() if v is not None}
    return max(known, key=known.get) if known else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def describe_counts(counts: dict[str, Any], ceilings: dict[str, Any], step_s: float | None) -> dict[str, Any]:
    """Floors, bound and the step's multiple of it, for one set of counts (a step or a phase)."""
    fl = floors(counts, ceilings)
    bound = bound_of(fl)
    out = {k: counts[k] for k in COUNT_KEYS if k in counts}
    out.update(floors_s=fl, bound=bound,
               arithmetic_intensity=_ratio(counts["flops_per_step"], counts["bytes_per_step"]),
               effective_bandwidth_gbs=_ratio(counts["bytes_per_step"], fl["memory"] and fl["memory"] * 1e9))
    if step_s is not None:
        out.update(step_s=step_s, step_over_bound=_ratio(step_s, fl.get(bound) if bound else None),
                   achieved_gflops=counts["flops_per_step"] / step_s / 1e9 if step_s else None)
    return out


def analyse(counts: dict[str, Any], ceilings: dict[str, Any], step_s: float | None,
            eager_only: bool = False) -> dict[str, Any]:
    """A result's `analysis`: the step's counts, floors, bound and multiple, and per phase the same
    (a phase's floors against no time: phases are not timed apart).

    `eager_only`: the variant runs compiled or replayed kernels the counter cannot see, so the
    counts are those of the eager step it stands for, and it may run below their floors.
    """
    out = describe_counts(counts, ceilings, step_s)
    out["bytes_by_op_size"] = counts.get("bytes_by_op_size", {})
    out["phases"] = {p: describe_counts(c, ceilings, None) for p, c in (counts.get("phases") or {}).items()}
    out["top_ops"] = counts.get("top_ops", [])
    out["ceilings"] = {k: ceilings.get(k) for k in ("gflops", "bandwidth_gbs", "op_overhead_us", "source")}
    out["ceilings"]["best_bandwidth_gbs"] = max((g for _, g in ceilings.get("bandwidth_curve") or []), default=None)
    out["counted_step"] = "eager" if eager_only else "step"
    return out


def cell_bound(runs: list[dict[str, Any]], step_s: float | None) -> dict[str, Any]:
    """A comparison cell's bound: its last analysed run's floors against the cell's median step
    (over all its repeats). {bound, floor_s, step_over_bound}, None where nothing was analysed."""
    a = next((r["analysis"] for r in reversed(runs) if r.get("analysis")), None)
    bound = a.get("bound") if a else None
    floor = a["floors_s"].get(bound) if bound else None
    return {"bound": bound, "floor_s": floor, "step_over_bound": _ratio(step_s, floor),
            "bound_of_eager_step": bool(a) and a.get("counted_step") == "eager"}


def floor_warning(analysis: dict[str, Any] | None) -> str | None:
    """A step that ran below its own floor (one it counted itself) shows a ceiling measured too low:
    on a busy machine, most likely. Said, so that no bound is read from it."""
    if not analysis or analysis.get("counted_step") != "step" or (analysis.get("step_over_bound") or 1) >= 1:
        return None
    return (f"the step ran in {analysis['step_over_bound']:.2f}x its {analysis['bound']} floor: a ceiling it was "
            f"set against is lower than this machine reaches (measured while it was busy?); "
            f"`bpbench peak --remeasure` on a quieter machine keeps the better figures")
