"""The gradient check of seed 001 (5.7.3), three ways: hand-written backward, autograd, and
float64 central differences.

Differences are max absolute differences per parameter; `rel_error` is the largest of the three
divided by max(1, largest gradient magnitude), so tiny and large gradients are judged alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bpbench.experiments.base import GradCheckCase


def numerical(case: GradCheckCase, name: str, idx: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences (f(p + eps) - f(p - eps)) / 2 eps at the flat indices `idx`."""
    params = {k: v.clone() for k, v in case.params.items()}
    flat = params[name].view(-1)
    out = torch.empty(len(idx), dtype=torch.float64)
    with torch.no_grad():
        for j, i in enumerate(idx.tolist()):
            keep = flat[i].item()
            flat[i] = keep + eps
            up = case.loss(params).item()
            flat[i] = keep - eps
            down = case.loss(params).item()
            flat[i] = keep
            out[j] = (up - down) / (2 * eps)
    return out


def check(case: GradCheckCase, tol: float = 1e-6, max_elements: int = 256, seed: int = 0) -> dict[str, Any]:
    params = {k: v.detach().clone().requires_grad_(True) for k, v in case.params.items()}
    auto = dict(zip(params, torch.autograd.grad(case.loss(params), list(params.values()))))
    manual = case.manual({k: v.detach().clone() for k, v in case.params.items()})
    gen = torch.Generator().manual_seed(seed)
    checks = []
    for name, p in case.params.items():
        n = p.numel()
        idx = torch.arange(n) if max_elements == 0 or n <= max_elements else \
            torch.randperm(n, generator=gen)[:max_elements].sort().values
        a, m = auto[name].reshape(-1), manual[name].reshape(-1).to(torch.float64)
        num = numerical(case, name, idx)
        diffs = {
            "manual_vs_autograd": (m - a).abs().max().item(),
            "manual_vs_numerical": (m[idx] - num).abs().max().item(),
            "autograd_vs_numerical": (a[idx] - num).abs().max().item(),
        }
        largest = a.abs().max().item()
        # Python's max() skips a NaN that is not first, and an inf gradient would scale every
        # difference to 0: a check that cannot compute must fail, not pass.
        finite = all(math.isfinite(v) for v in (*diffs.values(), largest))
        rel = max(diffs.values()) / max(1.0, largest) if finite else math.nan
        checks.append({"param": name, "numel": n, "checked": len(idx), **diffs,
                       "rel_error": rel, "finite": finite, "ok": finite and rel <= tol})
    return {"ok": all(c["ok"] for c in checks), "tol": tol, "note": case.note, "checks": checks}
