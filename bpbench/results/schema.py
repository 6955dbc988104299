"""The results, schema 1: defined once, here. A contract: extend, never rename.

A run fills a `RunResult`; `to_dict()` gives the JSON object that `run --json`, `--output` and
every compare cell hold. A comparison document (`Comparison`) holds its cells (`CellRecord`), each
with its runs. Fields without a default are required of every file; fields with one were added
later, so older files still load. The same classes check what `report` and `--baseline` read
(`check`: pydantic, strict, over these very dataclasses and typed dicts; no second copy).
Torch-free: readers of results never import training code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from typing_extensions import (  # pydantic reads TypedDicts from here on 3.11
    NotRequired,
    TypedDict,
)

from bpbench.errors import BadInput

SCHEMA_VERSION = 1


Num = Optional[float]      # null: not measured (JSON has no NaN; see files.finite_or_null)


class ParamDigest(TypedDict):
    norm: Num
    sum: Num
    head: list[Num]                       # the first values, flattened


class HistoryEntry(TypedDict):
    epoch: int
    loss: Num
    updates: int
    time_s: NotRequired[Num]
    batch_losses: NotRequired[Optional[list[Num]]]


class Evaluation(TypedDict):
    updates: int
    time_s: Num


class DataInfo(TypedDict):
    name: str
    n_train: int
    n_test: int


@dataclass
class Final:
    loss: float | None                    # the last epoch's training loss, as the sources print it
    params: dict[str, Any] | None         # models under 100 parameters: name -> float / nested lists
    metrics: Optional[dict[str, Union[Num, str, bool]]]   # the experiment's final metrics (mse, accuracy, ...)
    param_digest: dict[str, ParamDigest] | None = None   # for the parity guard


@dataclass
class Timing:
    setup_s: float                        # data, model and optimizer on the device
    warmup_s: float                       # the first warmup_steps updates (real updates)
    train_s: float                        # the steady state, evaluation pauses excluded
    total_s: float
    steps: int                            # updates made
    step_s_median: float | None           # of the steady-state steps
    step_s_iqr: float | None
    samples_per_s: float | None
    device_init_s: float = 0.0            # the CUDA context
    compile_s: float | None = None        # compiling / capturing variants: their one-time cost
    first_step_s: float | None = None     # the priming steps before the clock (rewound)
    eval_s: float = 0.0
    warmup_steps: int = 0
    step_s_all: list[float] | None = None  # the steady-state steps in order (every one, or see stride)
    analysis_s: float | None = None       # after training: FLOP count, peak lookup, --profile-ops
    step_s_all_stride: int = 1            # step_s_all holds every k-th steady step (beyond 131,072 steps)
    contended: bool = False               # measured on a busy machine (results.contention.judge)
    contention: dict[str, Any] | None = None   # the timed loop's raw figures (measure.contention) and `reason`
    # --metric: "time", or "instructions" (trained under callgrind: the step times above are valgrind's)
    metric: Literal["time", "instructions"] = "time"
    instructions_per_step: float | None = None   # the median counted step's instructions
    instructions_per_phase: dict[str, float] | None = None   # that step's forward, backward, update, other
    instructions_all: list[int] | None = None    # every counted steady step's count, in order
    instructions_steps: int | None = None        # how many steady steps were counted


@dataclass
class Memory:
    rss_start_mib: float
    rss_peak_mib: float
    cuda_peak_allocated_mib: float | None
    rss_samples: int | None = None         # null: not sampled (the kernel's high-water mark is read)
    rss_peak_source: str | None = None     # where rss_peak_mib came from (VmHWM, getrusage, ...)
    cuda_peak_reserved_mib: float | None = None
    line_profile: str | None = None       # memory_profiler's table with --profile-lines
    rss_setup_mib: float | None = None    # RSS after setup and priming: the model's baseline
    rss_train_above_setup_mib: float | None = None   # training's peak RSS above that baseline
    cuda_phase_peak_mib: dict[str, float] | None = None   # CUDA: each phase's peak above its start
    cublas_workspace_mib: float | None = None        # CUDA: the cuBLAS workspaces, apart
    # One step's tensors kept for backward, in bytes (bpbench.graph.keeps): autograd's (counted once
    # per storage), the hand-written layers' (manual), the layers' formula (analytic), `world`: the
    # one this run's variant keeps; per layer and per tensor, and the differences in words.
    saved_for_backward: dict[str, Any] | None = None


@dataclass
class Env:
    bpbench: str
    torch: str
    python: str
    platform: str
    cpu: str
    threads: int
    cuda_device: str | None
    cuda_runtime: str | None = None
    cpu_count: int | None = None
    float32_matmul_precision: str | None = None   # "highest" | "high" | "medium"
    tf32: dict[str, bool] | None = None   # CUDA: {matmul, cudnn} allow_tf32
    cuda_launch_blocking: str | None = None   # the CUDA_LAUNCH_BLOCKING environment variable
    cuda_driver: str | None = None
    cuda_capability: str | None = None    # e.g. "9.0"


@dataclass
class Distributed:
    """A data-parallel run (variants ddp, allreduce): how the world was laid out and what it cost.
    The run's `timing` is the slowest rank's, step by step; its `memory` and `env` are rank 0's."""
    world_size: int
    backend: str                          # "gloo" | "nccl"
    global_batch: int                     # samples per update, all ranks together
    per_rank_batch: int                   # each rank's shard (the largest, when the batch does not divide evenly)
    comm_s_median: float | None           # seconds in collectives per steady step (mean over ranks), median
    ranks: list[dict[str, Any]]           # per rank: rank, host, pid, step_s_median, comm_s_median, ...
    comm_share: float | None = None       # comm_s_median / timing.step_s_median
    nodes: int = 1
    launcher: str = ""                    # what started the ranks
    launch_s: float | None = None         # the launcher's wall time: start, rendezvous, training, teardown


class Floors(TypedDict):
    compute: Num                          # FLOPs / the matrix-product peak (s)
    memory: Num                           # bytes / bandwidth, op-size class by class (s)
    overhead: Num                         # ATen calls x one call's cost (s)


class Analysis(TypedDict):
    """What bounds the step (results.bounds): its counts (measure.counts), the three floors, the
    bound (the largest floor) and the step's multiple of it; `phases` holds per phase the same."""
    bound: Optional[Literal["compute", "memory", "overhead"]]
    floors_s: Floors
    flops_per_step: int                   # matrix products + element-wise
    bytes_per_step: int                   # read + written by every ATen op, unfused
    aten_ops_per_step: int
    phases: dict[str, Any]                # forward, backward, update
    matmul_flops: NotRequired[int]
    elementwise_flops: NotRequired[int]
    step_s: NotRequired[Num]              # the median step the multiple is of
    step_over_bound: NotRequired[Num]
    arithmetic_intensity: NotRequired[Num]   # FLOPs per byte
    achieved_gflops: NotRequired[Num]
    effective_bandwidth_gbs: NotRequired[Num]   # bytes / the memory floor
    bytes_by_op_size: NotRequired[dict[str, int]]
    top_ops: NotRequired[list[dict[str, Any]]]
    ceilings: NotRequired[dict[str, Any]]
    counted_step: NotRequired[Literal["step", "eager"]]   # eager: a compiled step, counted eagerly
    counts_source: NotRequired[str]      # "counted now", or the per-shape cache's entry


@dataclass
class RunResult:
    experiment: str
    variant: str
    device: str                           # "cpu" | "cuda"
    config: dict[str, Any]                # every resolved config value
    data: DataInfo                        # name, n_train, n_test, description, ...
    final: Final
    history: list[HistoryEntry]           # ...and the metrics at evaluation points
    timing: Timing
    memory: Memory
    env: dict[str, Any]                   # Env's fields and more (see envinfo.collect)
    schema: int = SCHEMA_VERSION
    status: Literal["ok", "diverged", "interrupted"] = "ok"   # interrupted: Ctrl-C, SIGTERM
    error: str | None = None              # what happened, when status is not ok
    reference_variant: str | None = None  # the variant this one's arithmetic must match
    variant_details: dict[str, Any] = field(default_factory=dict)   # e.g. compiled: graph breaks
    evaluations: list[Evaluation] = field(default_factory=list)  # the grid of --eval-every-updates
    # {forward, backward, update, per_step, counted_ops, samples, unattributed, note}: one step's
    # matrix-product FLOPs (bpbench.flops)
    flops: dict[str, Any] | None = None
    # {achieved_gflops, peak_gflops, peak_source, percent_of_peak}
    throughput: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None   # --profile-ops: {top_ops, phases, split, trace_file, ...}
    analysis: Optional[Analysis] = None   # what bounds the step: compute, memory or overhead
    warnings: list[str] = field(default_factory=list)   # e.g. a step-time IQR above 10% of the median
    distributed: dict[str, Any] | None = None   # a Distributed as a dict (data-parallel runs), else None
    extra: dict[str, Any] = field(default_factory=dict)   # experiment's own keys (trace, confusion)

    def to_dict(self) -> dict[str, Any]:
        out = {"schema": self.schema}    # first, so a reader sees the version before anything else
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "schema")})
        for name in ("final", "timing", "memory"):
            out[name] = dataclasses.asdict(out[name])
        return {**out, **self.extra}


class Summary(TypedDict, total=False):
    """A cell's figures (results.summary): recomputed from its runs whenever a file is read."""
    step_s_median: Num
    step_s_iqr: Num
    noise: Num
    instructions_per_step: Num


@dataclass
class CellRecord:
    """One cell of a comparison: what ran (results.cells.Cell) and its runs."""
    key: str
    study: str
    experiment: str
    variant: str
    device: str
    label: str
    overrides: dict[str, Any]
    status: Literal["ok", "diverged", "failed", "unavailable", "mismatch"]
    error: Optional[str]
    runs: list[RunResult]
    summary: Summary = field(default_factory=dict)   # type: ignore[assignment]
    reference_key: Optional[str] = None


@dataclass
class Comparison:
    """A comparison document: results.json of `bpbench compare`."""
    kind: Literal["comparison"]
    preset: str
    notes: list[str]
    planned: list[str]
    cells: list[CellRecord]
    interrupted: bool = False
    schema: int = SCHEMA_VERSION
    metric: Literal["time", "instructions"] = "time"   # what --baseline and --fail-on-regression compare


def _where(loc: tuple) -> str:
    """('cells', 0, 'runs', 1, 'timing') -> cells[0].runs[1].timing"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check(text: str, cls: type, name: str, what: str) -> None:
    """Check the JSON `text` of file `name` against `cls` (RunResult or Comparison), strictly: a
    string is not a number, null is not an object. Raises BadInput naming the first bad field."""
    from pydantic import (  # only commands that read files pay for it
        TypeAdapter,
        ValidationError,
    )
    try:
        TypeAdapter(cls).validate_json(text, strict=True)
    except ValidationError as e:
        errs = e.errors()
        first = errs[0]
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        if first["type"] == "missing":
            problem = f"missing {_where(first['loc'])}"
        else:
            msg = first["msg"].split(" or instance of")[0]   # JSON's names for them: Python's here
            msg = msg.replace("a valid array", "a valid list").replace("be an object", "be a valid dictionary")
            problem = f"{_where(first['loc'])}: {msg[0].lower() + msg[1:]}, got {json.dumps(first.get('input'))[:40]}"
        raise BadInput(f"{name} is not a complete bpbench {what}: {problem}{more}") from None


def _required(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls)
                 if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


# key -> required sub-keys (None: any value); what every result file must hold.
REQUIRED: dict[str, tuple[str, ...] | None] = {
    "schema": None, "experiment": None, "variant": None, "device": None, "config": None,
    "data": ("name", "n_train", "n_test"),
    "final": _required(Final),
    "history": None,
    "timing": _required(Timing),
    "memory": _required(Memory),
    "env": _required(Env),
}
