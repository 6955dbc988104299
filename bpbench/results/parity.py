"""The parity guard: a fast variant's speed counts only when its arithmetic is the reference's.

A fast variant (e.g. `compiled`) names the variant it must match (`reference_variant`, e.g.
`autograd`). Started from the same initial weights, the two must agree on every epoch's training
loss and on the final parameters, each within `rtol` (relative). Parameters are compared through
the digest every run records (`final.param_digest`: per parameter its L2 norm, sum and first eight
values), so models of any size can be checked from their result files alone.

Losses also pass within `ATOL` (1e-6) absolute: float32 cancellation moves the last digits of a
loss near zero whenever a kernel fuses differently (linreg's final loss of 3.4e-5 is the mean
square of differences of numbers near 9; compiled and autograd differ there by ~1e-8, 2e-4
relative, while their parameters agree to 1e-6), so a relative test alone would call the same
arithmetic a mismatch.

Torch-free: it reads result dicts, so `compare`, `report` and the tests all use it.
"""

from __future__ import annotations

import math
from typing import Any

RTOL = 1e-4
ATOL = 1e-6      # losses only


def _close(a: Any, b: Any, rtol: float, scale: float = 0.0, atol: float = 0.0) -> bool:
    """|a - b| <= rtol * max(|a|, |b|, scale). `scale` (a parameter's norm) keeps a sum or an
    element that happens to be near zero from demanding more than the parameter's own precision."""
    if a is None or b is None:
        return a is b
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b
    return abs(a - b) <= rtol * max(abs(a), abs(b), scale) + atol


def _losses(result: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(epoch, loss) of every kept history entry (a long run keeps some epochs: measure.records)."""
    return [(h.get("epoch"), h.get("loss")) for h in result.get("history") or []]


def check(result: dict[str, Any], reference: dict[str, Any], rtol: float = RTOL,
          atol: float = ATOL) -> list[str]:
    """Reasons why `result` does not match `reference` (empty: it matches).

    Per-epoch training losses within `rtol` relative; final parameter digests within `rtol`.
    A digest missing on either side makes the parameters not checkable, which is a reason too:
    a speed-up is only credited when the arithmetic is shown to be the same.
    """
    reasons: list[str] = []
    mine, ref = _losses(result), _losses(reference)
    if len(mine) != len(ref):
        reasons.append(f"{len(mine)} epochs of loss history against the reference's {len(ref)}")
    elif [e for e, _ in mine] != [e for e, _ in ref]:
        reasons.append("the loss history holds other epochs than the reference's")
    else:
        bad = [(e, a, b) for (e, a), (_, b) in zip(mine, ref) if not _close(a, b, rtol, atol=atol)]
        if bad:
            e, a, b = bad[0]
            reasons.append(f"loss differs at epoch {e}: {a!r} vs {b!r} "
                           f"({len(bad)} of {len(mine)} epochs beyond rtol {rtol:g})")
    dm = (result.get("final") or {}).get("param_digest")
    dr = (reference.get("final") or {}).get("param_digest")
    if not dm or not dr:
        side = "either run" if not dm and not dr else "this run" if not dm else "the reference run"
        reasons.append(f"parameters not checkable: {side} has no final.param_digest")
        return reasons
    if set(dm) != set(dr):
        reasons.append(f"parameter names differ: {sorted(set(dm) ^ set(dr))}")
        return reasons
    for name in dm:
        a, b = dm[name], dr[name]
        scale = max(abs(a.get("norm") or 0.0), abs(b.get("norm") or 0.0))
        pairs = [("norm", a.get("norm"), b.get("norm")), ("sum", a.get("sum"), b.get("sum"))]
        pairs += [(f"head[{i}]", x, y) for i, (x, y) in enumerate(zip(a.get("head") or [], b.get("head") or []))]
        if len(a.get("head") or []) != len(b.get("head") or []):
            reasons.append(f"{name}: digests hold different numbers of leading values")
        for what, x, y in pairs:
            if not _close(x, y, rtol, scale):
                reasons.append(f"{name} {what} differs: {x!r} vs {y!r}")
                break
    return reasons
