"""`run --profile-ops`: where a steady-state step's time goes, op by op, from torch.profiler.

After the timed loop, a few steps on the first full batch run under torch.profiler with the
learner's phases named (record_function: forward, backward, update) and are rewound in place:
they never feed the step statistics and never change the trajectory. The profile reports

- top_ops: the ops with the most self time per step (device time on CUDA, CPU time otherwise);
- phases: each phase's time per step, and the step split into time inside ATen ops (where the
  arithmetic and its dispatch run) and outside them (Python, module calls, autograd's engine,
  the optimizer's loop); on CUDA also host (CPU) versus kernel (GPU) time;
- trace_file: a Chrome/Perfetto trace (open it at ui.perfetto.dev or chrome://tracing).

The profiler's own bookkeeping slows every op a little: compare the shares, not the absolute
times, with the step time of the timed loop.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bpbench.errors import BadInput
from bpbench.variants.phases import PHASES, Recorder

TOP = 12


def profile_steps(learner, x, y, device, steps: int = 5, trace_file: Path | None = None) -> dict[str, Any]:
    """Profile `steps` steps of `learner` on (x, y) (after two warm-up steps of the profiler's
    schedule); the learner is left as it was. Writes the trace to `trace_file` (atomically) when given."""
    # Kineto's start/stop notes on stderr are noise here (a user's own setting wins).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile, schedule

    from bpbench.measure.timer import synchronize
    from bpbench.variants.base import rewound

    on_cuda = getattr(device, "type", str(device)) == "cuda"
    sync = lambda: synchronize(device)   # noqa: E731
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    warm = 2      # the profiler's first recorded steps carry its own start-up: recorded, not kept
    with rewound(learner, sync), Recorder(), profile(
            activities=activities, schedule=schedule(wait=0, warmup=warm, active=steps, repeat=1)) as prof:
        for i in range(warm + steps):
            if i == warm:
                sync()
                t0 = time.perf_counter()
            learner.step(x, y)
            prof.step()
        sync()
        wall = time.perf_counter() - t0
    out = summarize(prof.key_averages(), steps, wall, on_cuda)
    out.update(write_trace(prof, trace_file))
    return out


def write_trace(prof, trace_file: Path | None) -> dict[str, Any]:
    """{trace_file: where the trace went, or None}, and a trace_error saying why when it could
    not be written (a full disk, say): the run's result is kept, and the CLI says so after it."""
    if trace_file is None:
        return {"trace_file": None}
    try:
        return {"trace_file": str(export_trace(prof, Path(trace_file)))}
    except BadInput as e:
        return {"trace_file": None, "trace_error": str(e)}
    except OSError as e:
        return {"trace_file": None, "trace_error": f"cannot write --trace-file {trace_file}: {e.strerror or e}"}


def summarize(events, steps: int, wall_s: float, on_cuda: bool) -> dict[str, Any]:
    """The profile document from key_averages() of `steps` profiled steps."""
    us = 1e-6 / steps                        # profiler microseconds in all -> seconds per step
    ops = [e for e in events if not e.is_user_annotation]
    self_key = "self_device_time_total" if on_cuda else "self_cpu_time_total"
    top = sorted(ops, key=lambda e: getattr(e, self_key), reverse=True)[:TOP]
    top_ops = [{"name": e.key, "calls_per_step": e.count / steps,
                "self_cpu_s": e.self_cpu_time_total * us, "cpu_total_s": e.cpu_time_total * us,
                **({"self_device_s": e.self_device_time_total * us} if on_cuda else {})}
               for e in top if getattr(e, self_key) > 0]
    by_name = {e.key: e for e in events}
    phases: dict[str, Any] = {}
    for p in PHASES:
        e = by_name.get(p)
        if e is not None:
            phases[p] = {"cpu_s": e.cpu_time_total * us, **({"device_s": e.device_time_total * us} if on_cuda else {})}
    aten = [e for e in ops if e.key.startswith("aten::")]
    in_aten = sum(e.self_cpu_time_total for e in aten) * us
    step_s = wall_s / steps
    split = {"step_s": step_s, "in_aten_ops_s": in_aten, "outside_ops_s": max(step_s - in_aten, 0.0),
             # each call pays the dispatcher (and, under autograd, graph bookkeeping) whatever its size
             "aten_calls_per_step": sum(e.count for e in aten) / steps}
    if on_cuda:
        split["kernel_s"] = sum(e.self_device_time_total for e in ops) * us
        split["host_s"] = sum(e.self_cpu_time_total for e in events) * us
    return {"steps": steps, "top_ops": top_ops, "phases": phases, "split": split,
            "note": "times per step under the profiler (which slows every op a little); phases are "
                    "record_function ranges the learner marks (a compiled or replayed step marks none)"}


def export_trace(prof, path: Path) -> Path:
    """Write the Chrome/Perfetto trace through bpbench's one writer (results.write_with): under
    a unique temporary name beside its final one, then renamed; never half a file, never over
    something that is not a regular file or not bpbench's."""
    from bpbench.results import files as results
    results.write_with(path, lambda tmp: prof.export_chrome_trace(str(tmp)), "--trace-file")
    return path


def default_trace_file(output: Path | None) -> Path | None:
    """Beside --output: results/run.json -> results/run.trace.json."""
    return output.with_name(f"{output.stem}.trace.json") if output is not None else None
