"""One step's counts, counted once per model shape and read back from a per-user cache after.

Counting a step (FLOPs with FlopCounterMode; any count taken under a TorchDispatchMode) costs its
first use in a process the import of torch._dynamo, about 1.2 s here: more than the whole default
`bpbench run linreg --manual`. What a step executes, and so what it counts, depends only on the
experiment, the variant, the device type, the shapes and dtypes of the batch and the parameters,
the config values that choose the model and how it trains, and the torch and bpbench versions.
That is the key (`step_key`); `cached` returns the entry for it, or counts now and stores it.
An entry is a dict of counts of any kind (`counter` names it: "flops", "bytes", ...), so any
per-step counter can be cached the same way. What a run's length, seed, logging or thread count
set (RUN_ONLY) is left out of the key; any other config key is in it, so a new key can only make
the cache miss, never return another model's counts.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Callable, Mapping

from bpbench.measure.cache import Cache

CACHE = Cache("counts.json", "bpbench-count-cache")

# Config keys that say how long, how loud or on how many threads a run goes, never what one of
# its steps executes.
RUN_ONLY = frozenset({"epochs", "updates", "seed", "warmup_steps", "log_every", "eval_every",
                      "eval_every_updates", "threads", "flops"})


def step_key(counter: str, experiment: str, cfg: Mapping[str, Any], device_type: str,
             tensors: Mapping[str, Any]) -> str:
    """What a step's counts are valid for. `tensors`: name -> tensor (the batch, the parameters)."""
    import torch

    import bpbench
    return json.dumps({
        "counter": counter, "experiment": experiment, "device": device_type,
        "config": {k: v for k, v in cfg.items() if k not in RUN_ONLY},
        "tensors": {name: [list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in tensors.items()},
        "torch": torch.__version__, "bpbench": bpbench.__version__,
    }, sort_keys=True, default=str)


def step_tensors(learner, x, y) -> dict[str, Any]:
    """The tensors a step's counts depend on the shapes of: the batch and the parameters."""
    return {"x": x, "y": y, **{f"param {name}": p for name, p in learner.params().items()}}


def cached(key: str, count: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """(counts, where they came from): the cache's entry for `key`, or `count()` now (stored)."""
    entry = CACHE.lookup(key)
    if entry is not None and isinstance(entry.get("counts"), dict):
        return entry["counts"], f"cache (counted {entry.get('counted', '?')})"
    counts = count()
    CACHE.store(key, {"counts": counts,
                      "counted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return counts, "counted now"
