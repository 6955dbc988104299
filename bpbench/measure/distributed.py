"""Data-parallel runs on torch.distributed: launch the ranks, train one, merge their results.

`bpbench run EXPERIMENT --variant ddp|allreduce --nproc N` starts N ranks on this machine with
torchrun's own launcher (`torch.distributed.launcher.api.elastic_launch`, what `torchrun
--standalone` runs: a c10d rendezvous on a free local port, no restarts). Under `torchrun` itself
(the multi-node form, `--nnodes`, `--rdzv-endpoint`), `bpbench run` is one rank of torchrun's
world instead and launches nothing.

Every rank runs the single-process path (`run.execute_in_process`) on its shard of every batch
(bpbench.variants.dataparallel). Then rank 0 gathers every rank's step and communication times and
returns ONE result: its `timing` is the slowest rank's, step by step (a synchronous step lasts as
long as its slowest rank), and its `distributed` section holds the world's layout, the
communication share and each rank's own figures.

On CPU the ranks are forked from the launcher, which has imported torch already: a launch costs
~0.4 s instead of the ~7 s that re-importing torch in every rank takes on 2 cores. On CUDA they
are spawned (a CUDA context does not survive fork).

Failures: the launcher's agent polls the ranks every 0.1 s; when one fails it stops the others
(SIGTERM, SIGKILL after 5 s) and `launch` names that rank in one line. Ranks die with their
launcher (PR_SET_PDEATHSIG), so not even a SIGKILLed launcher leaves orphans. Ctrl-C or SIGTERM
stops every rank at its next step, as it stops one process: rank 0 hands its finished epochs over
to the launcher (a file in the launch's private folder), and the run ends with them, status
"interrupted", exit 130.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from bpbench import config as C
from bpbench import experiments, variants
from bpbench.errors import EXIT_INTERRUPTED, BadInput, RunFailed
from bpbench.processes import die_with_parent, set_process_name, usable_cores
from bpbench.results import contention
from bpbench.results.schema import Distributed
from bpbench.results.timing import StepTimes, median

COLLECTIVE_TIMEOUT_S = 300   # a collective's wait for a silent peer; the launcher stops ranks far sooner
PEER_GRACE_S = 2.0           # a rank whose collective broke waits this long before failing (see train_rank)
SHUTDOWN_S = 5               # the launcher's grace between SIGTERM and SIGKILL when it stops ranks
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)  # elastic's defaults


# What torchrun sets for each rank, beyond TORCHELASTIC_RUN_ID, and what init_process_group reads.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """True when torchrun started this process as one of its ranks: TORCHELASTIC_RUN_ID is set
    (torchrun always sets it). Then the rest of its environment must be there too: a partial
    one (copied by hand, left over from another job) is bad input, said in one line."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    torchrun_world()
    return True


def torchrun_world() -> tuple[int, int]:
    """(ranks on this node, ranks in all) from torchrun's environment; raises BadInput naming
    what is missing or malformed."""
    missing = [k for k in TORCHRUN_ENV if not os.environ.get(k)]
    if missing:
        raise BadInput(f"TORCHELASTIC_RUN_ID is set, as torchrun sets it for its ranks, but {', '.join(missing)} "
                       f"{'is' if len(missing) == 1 else 'are'} not: start the run with torchrun, or unset "
                       "TORCHELASTIC_RUN_ID")
    n = {k: _env_int(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT")}
    if not (0 <= n["RANK"] < n["WORLD_SIZE"] and 0 <= n["LOCAL_RANK"] < n["LOCAL_WORLD_SIZE"] <= n["WORLD_SIZE"]
            and 0 < n["MASTER_PORT"] < 65536):
        raise BadInput("torchrun's environment does not describe a world (RANK {RANK} of WORLD_SIZE {WORLD_SIZE}, "
                       "LOCAL_RANK {LOCAL_RANK} of LOCAL_WORLD_SIZE {LOCAL_WORLD_SIZE}, MASTER_PORT {MASTER_PORT}): "
                       "start the run with torchrun".format(**n))
    return n["LOCAL_WORLD_SIZE"], n["WORLD_SIZE"]


def _env_int(name: str) -> int:
    text = os.environ[name]
    if text.strip().isdigit() and len(text) < 20:     # digits only: no sign, no 10**100
        return int(text)
    raise BadInput(f"torchrun's {name} must be a non-negative integer, got {text[:40]!r}"
                   + (" (cut)" if len(text) > 40 else ""))


def most_ranks(device: str) -> tuple[int | None, str]:
    """The most ranks this machine can run at once, and what bounds them: one GPU each on CUDA,
    one core each on CPU (more ranks than cores time-share the cores, so the step times would
    measure the scheduler, and every rank costs a process and its sockets). None: no CUDA here
    (such a run is refused, or a compare cell marked unavailable, for that reason instead)."""
    if device == "cuda":
        if not torch.cuda.is_available():
            return None, ""
        n = torch.cuda.device_count()
        return n, f"one GPU per rank; this machine has {n}"
    n = usable_cores()
    return n, f"one core per rank; this process may use {n}"


def check_world(cfg: dict[str, Any], world: int, samples: int | None, placed: bool = False) -> None:
    """Refuse, before any rank starts, more ranks than the machine or the batch can hold.
    `samples`: the training set's size where known up front (a full batch is that many);
    `placed`: the ranks exist already (torchrun started them), so only the batch bounds them."""
    most, why = most_ranks(cfg["device"])
    if not placed and most is not None and world > most:
        raise BadInput(f"--nproc {world} is more ranks than this machine can run ({why}): "
                       f"use --nproc {max(most, 1)} or fewer")
    full = cfg["batch_size"] == "full"
    batch = samples if full else cfg["batch_size"]
    if batch is not None and batch < world:
        raise BadInput(f"--nproc {world} is more ranks than the batch has samples ({batch}"
                       + (", the whole training set" if full else "") + "); every rank needs at least one: "
                       + ("use fewer ranks" if full else "use fewer ranks or a larger --batch-size"))


def resolve(cfg: dict[str, Any], samples: int | None = None) -> dict[str, Any]:
    """The config with `nproc` and `backend` settled; raises BadInput before anything starts.
    `samples`: the training set's size where known up front (see check_world)."""
    if not dist.is_available():
        raise BadInput("this torch build has no torch.distributed")
    device = cfg["device"]
    nproc = cfg.get("nproc")
    torchrun = under_torchrun()
    world = nproc or 1
    if torchrun:
        local, world = torchrun_world()
        if nproc is not None and nproc != local:
            raise BadInput(f"--nproc {nproc}: under torchrun the ranks are torchrun's "
                           f"(--nproc-per-node {local}); leave --nproc out")
        nproc = local
    nproc = nproc or 1
    backend = cfg.get("backend") or ("nccl" if device == "cuda" else "gloo")
    if backend == "nccl":
        if device != "cuda":
            raise BadInput("--backend nccl all-reduces CUDA tensors: it needs --device cuda and one GPU "
                           "per rank (on CPU use --backend gloo)")
        if not torch.cuda.is_available():
            raise BadInput("--backend nccl needs CUDA GPUs, and CUDA is not available on this machine")
        if not dist.is_nccl_available():
            raise BadInput(f"this torch build ({torch.__version__}) has no NCCL backend")
    elif not dist.is_gloo_available():
        raise BadInput(f"this torch build ({torch.__version__}) has no gloo backend")
    check_world(cfg, world, samples, placed=torchrun)
    return {**cfg, "nproc": nproc, "backend": backend}


def execute(info, cfg: dict[str, Any], *, profile_lines: bool = False, profile_ops: bool = False,
            on_log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Rank 0's merged result (None on the other ranks under torchrun)."""
    if profile_ops:   # torch.profiler sees one process; N ranks' profiles would be N documents
        raise BadInput(f"--profile-ops and --trace-file profile one process; the {cfg['variant']} variant "
                       f"trains with {cfg.get('nproc') or 1} rank(s): profile its reference variant "
                       f"({variants.reference_of(cfg['variant'], cfg)[0]}) instead")
    cfg = resolve(cfg, info.footprint(cfg).samples)
    if under_torchrun():
        return train_rank(info.name, cfg, profile_lines, on_log, launcher="torchrun")
    return launch(info.name, cfg, profile_lines, on_log)


# ---------------------------------------------------------------- the launcher (this process)

HANDOFF = "interrupted.json"   # rank 0's partial result after Ctrl-C/SIGTERM (see rank_main)


def launch(name: str, cfg: dict[str, Any], profile_lines: bool,
           on_log: Callable[[str], None] | None) -> dict[str, Any]:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    start_method = "spawn" if cfg["device"] == "cuda" else "fork"
    if start_method == "fork":   # import once here what every rank would import on its own
        import torch._dynamo  # noqa: F401  (the first torch.optim optimizer imports it: ~1.5 s)
        experiments.get(name).load()
        variants.get(cfg["variant"]).load()
    # torch elastic keeps its logs and the ranks' error files in a folder of its own, by default a
    # new torchelastic_* in the temp dir that it never removes: here, one of this launch's, removed
    # with it (on an interrupt too). Rank 0 hands an interrupted run's partial result over in it.
    # One thread per rank on CPU unless OMP_NUM_THREADS says otherwise (torchrun's default too),
    # within --threads' bounds: OpenMP cannot start 100,000 threads a rank.
    omp = os.environ.get("OMP_NUM_THREADS")
    threads = (C.thread_count("OMP_NUM_THREADS", omp) if omp else 1) if cfg["device"] == "cpu" else None
    t0 = time.perf_counter()
    private = None
    try:
        _sweep_abandoned()
        private = Path(tempfile.mkdtemp(prefix=f"{LAUNCH_DIR}{os.getpid()}-"))
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=cfg["nproc"],
                              run_id=f"bpbench-{uuid.uuid4().hex[:12]}", rdzv_backend="c10d",
                              rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                              start_method=start_method, shutdown_timeout=SHUTDOWN_S,
                              logs_specs=DefaultLogsSpecs(log_dir=str(private)))
        result = _run_ranks(config, (name, cfg, profile_lines, on_log, threads, os.getpid(), str(private / HANDOFF)))
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
    result["distributed"].update(
        launch_s=time.perf_counter() - t0,
        launcher=f"torch.distributed.launcher elastic_launch ({start_method}; c10d rendezvous on localhost)")
    return result


LAUNCH_DIR = "bpbench-launch-"   # + the launcher's pid: a launch's private folder in the temp dir


def _sweep_abandoned() -> None:
    """Remove the private folders of launches whose launcher is gone: a SIGKILLed one runs no
    cleanup (its ranks die with it). A folder whose pid lives, or that is not ours, is left."""
    for folder in Path(tempfile.gettempdir()).glob(f"{LAUNCH_DIR}*-*"):
        pid = folder.name[len(LAUNCH_DIR):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (PermissionError, OverflowError):   # another user's process, or no such pid at all
            continue


def _run_ranks(config, args: tuple) -> dict[str, Any]:
    """Rank 0's result: returned by it, or, after Ctrl-C/SIGTERM, the partial one it handed over
    (raises KeyboardInterrupt when there is none: the ranks were stopped before training)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    sys.stdout.flush()   # a forked rank would flush the launcher's buffered output a second time
    sys.stderr.flush()
    saved = {s: signal.getsignal(s) for s in HANDLED_SIGNALS}   # the launcher replaces them
    # Fork without exec, as Python's gc documentation advises: no collection may run between here
    # and the rank's gc.freeze(), or a rank would destroy garbage it inherited (e.g. C++ objects of
    # an earlier launch whose threads it does not have) and can crash doing so.
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        with _quiet_launcher_logs():
            return elastic_launch(config, rank_main)(*args)[0]
    except ChildFailedError as e:
        error = _explain(e)
        if not isinstance(error, KeyboardInterrupt):
            raise error from None
        return _handed_over(args[-1])
    except SignalException:   # Ctrl-C or SIGTERM: the agent has stopped every rank
        return _handed_over(args[-1])
    finally:
        if gc_was_enabled:
            gc.enable()
        if threading.current_thread() is threading.main_thread():   # where the launcher set them
            for s, handler in saved.items():
                if handler is not None:   # None: set outside Python, nothing to put back
                    signal.signal(s, handler)


def _handed_over(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise KeyboardInterrupt from None


@contextmanager
def _quiet_launcher_logs():
    """torch elastic logs each failure with tracebacks; bpbench reports it in one line instead.
    LOGLEVEL (torch elastic's own knob) set in the environment shows them again."""
    if os.environ.get("LOGLEVEL"):
        yield
        return
    loggers = [logging.getLogger(n) for n in (
        "torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")]
    sink = logging.NullHandler()
    saved = [lg.propagate for lg in loggers]
    for lg in loggers:
        lg.addHandler(sink)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, propagate in zip(loggers, saved):
            lg.removeHandler(sink)
            lg.propagate = propagate


def _explain(e) -> BaseException:
    """The first failed rank, in one line: BadInput (exit 2), RunFailed (exit 1) or an interrupt."""
    rank, failure = min(e.failures.items(), key=lambda kv: kv[1].timestamp)
    message = failure.message.get("message", "") if isinstance(failure.message, dict) else ""
    if message.startswith(f"{BadInput.__name__}: "):   # @record writes "Type: text"
        return BadInput(message.split(": ", 1)[1])
    if failure.exitcode in (-signal.SIGINT, EXIT_INTERRUPTED):   # the ranks saw Ctrl-C before the launcher
        return KeyboardInterrupt()
    if failure.exitcode < 0:
        what = f"was killed by {failure.signal_name()}"
    else:
        what = f"failed with exit code {failure.exitcode}" + (f" ({message.splitlines()[0]})" if message else "")
    return RunFailed(f"rank {rank} {what}; the launcher stopped every other rank")


# ---------------------------------------------------------------- a rank

_stopping = False   # set in a rank by the first Ctrl-C/SIGTERM


def _interrupt_once(signum, frame) -> None:
    """A rank's handler for Ctrl-C and the launcher's SIGTERM: the first interrupts training
    (KeyboardInterrupt, which the loop turns into a partial result, as in one process); the
    next -- the launcher forwards the signal a terminal's Ctrl-C already brought -- are ignored,
    so the partial result is handed over whole. The launcher SIGKILLs a rank that is still there
    SHUTDOWN_S later (one blocked in a collective its stopped peer never joins)."""
    global _stopping
    if not _stopping:
        _stopping = True
        raise KeyboardInterrupt


def _exit_interrupted() -> None:
    """End the rank now, exit code 130: torch elastic's wrapper would wait for the launcher to
    read a return value it no longer reads once it is shutting down."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


@record   # writes the exception into torch elastic's error file, which the launcher reads
def rank_main(name: str, cfg: dict[str, Any], profile_lines: bool, on_log, threads: int | None,
              launcher_pid: int, handoff: str) -> dict[str, Any] | None:
    """A rank started by `launch`. After Ctrl-C/SIGTERM rank 0 writes its partial result to
    `handoff`, where the launcher finds it."""
    gc.freeze()   # what the launcher left behind is not this rank's to collect (see launch)
    gc.enable()
    die_with_parent()
    # What the rank forks (memory_profiler's RSS monitor) must die with it too: a child holding
    # the rank's copy of the launcher's pipes would hide the rank's death from the launcher.
    os.register_at_fork(after_in_child=die_with_parent)
    if os.getppid() != launcher_pid:   # the launcher died before the request took effect
        os._exit(1)
    set_process_name(f"bpbench:rank{os.environ.get('RANK', '?')}")
    # Fork copied the launcher's handlers (torch elastic's, which would raise its own exception).
    for s in HANDLED_SIGNALS:
        signal.signal(s, _interrupt_once)
    if threads:
        torch.set_num_threads(threads)
    try:
        result = train_rank(name, cfg, profile_lines, on_log, launcher="")
    except KeyboardInterrupt:
        _exit_interrupted()
    if result is not None and result["status"] == "interrupted":
        from bpbench.results import files
        files.write_text(handoff, json.dumps(result))   # NaN stays NaN, as a return value would
        _exit_interrupted()
    return result


def train_rank(name: str, cfg: dict[str, Any], profile_lines: bool, on_log, launcher: str) -> dict[str, Any] | None:
    """Join the process group, train this rank's shards, gather everything on rank 0. After
    Ctrl-C/SIGTERM no collective runs (the peers are stopping too): rank 0 returns its own part,
    the others raise KeyboardInterrupt."""
    from bpbench.measure import run

    kwargs = {}
    if cfg["device"] == "cuda":   # one GPU per rank: run.pick_device then picks this one
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group(cfg["backend"], timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S), **kwargs)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        result = run.execute_in_process(experiments.get(name), cfg, profile_lines=profile_lines,
                                        on_log=on_log if rank == 0 else None)
        if result["status"] == "interrupted":
            if rank != 0:
                raise KeyboardInterrupt
            result["warnings"].append("interrupted: the step times are rank 0's alone (the other ranks "
                                      "stopped before theirs could be gathered)")
            return merge(result, [rank_summary(result, rank)], cfg, launcher, world)
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(rank_summary(result, rank), gathered, dst=0)
    except BadInput:
        raise
    except Exception:
        # Usually a peer died and this rank's collective broke ("connection closed by peer"). The
        # launcher reports the first rank to fail: give its monitor time to see the real culprit.
        time.sleep(PEER_GRACE_S)
        raise
    dist.destroy_process_group()
    return merge(result, gathered, cfg, launcher) if rank == 0 else None


def rank_summary(result: dict[str, Any], rank: int) -> dict[str, Any]:
    """What rank 0 needs from each rank: its steady steps and their communication seconds."""
    t = result["timing"]
    comm = result["variant_details"].pop("comm_s_all", [])[t["warmup_steps"]:]
    return {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(), "status": result["status"],
            "step_s_all": t["step_s_all"], "comm_s_all": comm, "setup_s": t["setup_s"],
            "first_step_s": t["first_step_s"], "train_s": t["train_s"],
            "rss_peak_mib": result["memory"]["rss_peak_mib"], "threads": result["env"]["threads"],
            "contended": t.get("contended", False), "contention_reason": (t.get("contention") or {}).get("reason")}


def merge(result: dict[str, Any], ranks: list[dict[str, Any]], cfg: dict[str, Any], launcher: str,
          world: int | None = None) -> dict[str, Any]:
    """Rank 0's result with the world's timing: each step as long as its slowest rank's. `world`:
    the ranks there were, when `ranks` holds fewer (an interrupted run: rank 0's alone)."""
    t = result["timing"]
    steady_samples = (t["samples_per_s"] or 0.0) * sum(t["step_s_all"])   # all shards together
    steps = [max(s) for s in zip(*(r["step_s_all"] for r in ranks))]
    total, times = sum(steps), StepTimes.of(steps)
    t.update(step_s_all=steps, step_s_median=times.median, step_s_iqr=times.iqr,
             samples_per_s=steady_samples / total if total > 0 else None,
             train_s=max(r["train_s"] for r in ranks))
    _merge_contention(result, ranks)
    comm = [statistics.fmean(c) for c in zip(*(r["comm_s_all"] for r in ranks))]
    comm_median = median(comm)
    n_train = result["data"]["n_train"]
    global_batch = n_train if cfg["batch_size"] == "full" else min(cfg["batch_size"], n_train)
    world = world or len(ranks)
    per_rank = [{**{k: v for k, v in r.items() if not k.endswith("_all")},
                 "step_s_median": median(r["step_s_all"]), "comm_s_median": median(r["comm_s_all"])}
                for r in ranks]
    result["distributed"] = dataclasses.asdict(Distributed(
        world_size=world, backend=cfg["backend"], global_batch=global_batch,
        per_rank_batch=-(-global_batch // world), comm_s_median=comm_median, ranks=per_rank,
        comm_share=comm_median / t["step_s_median"] if comm_median is not None and t["step_s_median"] else None,
        nodes=int(os.environ.get("GROUP_WORLD_SIZE", 1)), launcher=launcher))
    return result


def _merge_contention(result: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
    """The world's steps are its slowest rank's: one rank on a busy CPU makes them all suspect."""
    busy = [r for r in ranks if r["contended"]]
    if busy and not result["timing"].get("contended"):
        result["timing"]["contended"] = True
        result["warnings"].insert(0, contention.warning(f"rank {busy[0]['rank']}: {busy[0]['contention_reason']}"))
