"""The parity guard: does a fast variant compute what its reference variant computes?

Torch-free: it compares two run results (schema 1 dicts) from the same initial weights. A
speed-up only counts when the arithmetic is the same, so `compare` marks a cell whose check
fails as `mismatch` and gives it no speed ratio.

- per-epoch training losses: within `rtol` relative, or `atol` absolute. The floor covers float32
  cancellation in losses near zero: linreg's loss of 3.4e-5 is the mean square of differences of
  numbers near 9, so its last digits move by ~1e-9 whenever a kernel fuses differently, while its
  parameters agree to 1e-6.
- final parameters: each digest value (L2 norm, sum, first 8 elements) within `rtol` relative
  to the parameter's norm.
"""

from __future__ import annotations

from typing import Any

RTOL = 1e-4
ATOL = 1e-6


def _close(a: float | None, b: float | None, rtol: float, atol: float) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + atol


def check(result: dict[str, Any], reference: dict[str, Any], rtol: float = RTOL, atol: float = ATOL) -> list[str]:
    """Reasons the two runs differ (empty: they match)."""
    reasons = []
    ours = [h.get("loss") for h in result.get("history", [])]
    theirs = [h.get("loss") for h in reference.get("history", [])]
    if len(ours) != len(theirs):
        reasons.append(f"{len(ours)} epochs vs the reference's {len(theirs)}")
    for epoch, (a, b) in enumerate(zip(ours, theirs), 1):
        if not _close(a, b, rtol, atol):
            reasons.append(f"epoch {epoch} loss {a} vs {b} (beyond {rtol:g} relative)")
            break
    mine = (result.get("final") or {}).get("param_digest")
    ref = (reference.get("final") or {}).get("param_digest")
    if not mine or not ref:
        reasons.append("no parameter digest to compare (a run from an older bpbench?)")
    elif set(mine) != set(ref):
        reasons.append(f"different parameters: {sorted(set(mine) ^ set(ref))}")
    else:
        for name, d in mine.items():
            r = ref[name]
            scale = max(abs(r["norm"]), 1e-12)
            pairs = [("norm", d["norm"], r["norm"]), ("sum", d["sum"], r["sum"])] + \
                [(f"[{i}]", a, b) for i, (a, b) in enumerate(zip(d["head"], r["head"]))]
            bad = [(what, a, b) for what, a, b in pairs if abs(a - b) > rtol * scale]
            if bad:
                what, a, b = bad[0]
                reasons.append(f"{name} {what}: {a:.7g} vs {b:.7g} (beyond {rtol:g} of its norm)")
    return reasons
