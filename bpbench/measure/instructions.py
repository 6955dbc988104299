"""`--metric instructions`: how many instructions the timed steps execute, counted by callgrind.

Wall times move with the machine's load (2-3x between runs on a shared CI machine); the number
of instructions a step executes does not. torch.utils.benchmark's `collect_callgrind` rests on
the same fact, and so does this module, in two processes:

- The parent (`execute`, in the `run` process) writes the resolved run to a private temporary
  directory and trains it in a child under
  `valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no`, then reads the child's
  result and the counts back, and removes the directory (also on Ctrl-C and SIGTERM, which it
  hands on to the child, whose finished steps are kept).
- The child (`python -m bpbench.measure.instructions DIR`) imports torch and sets the run up
  with instrumentation off (valgrind's cheapest mode: nothing of it is counted), switches it on
  just before the loop (callgrind_control), and drives the harness with a `StepCounter` as its
  step timer: collection goes on at a counted step's start and off at its end, and the counts
  are dumped at every phase boundary (torch's callgrind client requests, the ones
  collect_callgrind toggles). Each dump then holds one segment of one step: its forward,
  backward or update phase, or the step's code outside them ("other"). A step's count is the
  sum of its segments, so the phases add up to the step exactly.

Counts are deterministic up to Python's own variation, which the child pins: PYTHONHASHSEED is
fixed (set and dict iteration orders follow string hashes), the cyclic garbage collector is off
inside the loop (the harness's rule), and address-space randomisation is switched off where the
system allows it (setarch -R). Only the first COUNTED_STEPS steady steps are counted: counts
repeat to within a fraction of a percent, so a few steps say all there is, and every counted step
costs seven dump files. The child always runs one CPU thread unless --threads says otherwise
(OpenMP workers that spin while waiting would add a count that depends on timing).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bpbench.errors import BadInput, RunFailed
from bpbench.variants.phases import PHASES, Marker

PACKAGE = "valgrind"           # the Debian/Ubuntu package that has valgrind, callgrind_control
TOOLS = ("valgrind", "callgrind_control")
COUNTED_STEPS = 15             # steady steps counted (the first ones after the run's warm-up)
OUT_FILE = "callgrind.out"     # callgrind numbers the dumps callgrind.out.1, .2, ...
OTHER = "other"                # a step's code outside its forward, backward and update phases
CONTROL_TIMEOUT_S = 120.0      # callgrind_control answering (it runs slowly on a loaded machine)
STOP_WAIT_S = 4.0              # after Ctrl-C/SIGTERM: how long the child may take to keep its steps


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def check_available() -> None:
    """BadInput naming the package to install when valgrind's tools are not on PATH."""
    missing = missing_tools()
    if missing:
        raise BadInput(f"--metric instructions counts with valgrind's callgrind, but {' and '.join(missing)} "
                       f"{'is' if len(missing) == 1 else 'are'} not on PATH: install the {PACKAGE} package "
                       f"(e.g. apt-get install {PACKAGE})")


def check_run(cfg: dict[str, Any], distributed: bool) -> None:
    """What --metric instructions cannot count: GPU work, ranks in other processes."""
    if cfg.get("device") == "cuda":
        raise BadInput("--metric instructions counts CPU instructions: use --device cpu "
                       "(callgrind does not see the GPU's work)")
    if distributed:
        raise BadInput(f"--metric instructions counts one process: the {cfg['variant']} variant trains "
                       "in several (use --metric time)")


def counted_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config an instructions run records: one CPU thread unless --threads says otherwise."""
    return {**cfg, "threads": cfg.get("threads") or 1}


# ---------------------------------------------------------------- the parent


def valgrind_command(directory: Path) -> list[str]:
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
           f"--callgrind-out-file={directory / OUT_FILE}", f"--log-file={directory / 'valgrind.log'}",
           f"--vgdb-prefix={directory / 'vgdb'}",       # its FIFOs stay in the private directory
           sys.executable, "-m", "bpbench.measure.instructions", str(directory)]
    return _without_aslr() + cmd


def _without_aslr() -> list[str]:
    """`setarch -R` (no address-space randomisation) where this system lets a process ask for it
    (some container sandboxes refuse the personality call)."""
    setarch = shutil.which("setarch")
    if setarch is None:
        return []
    try:
        ok = subprocess.run([setarch, "-R", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return [setarch, "-R"] if ok else []


def child_env() -> dict[str, str]:
    """The child's environment: the hash seed fixed, and this very bpbench first on its path (a
    checkout run from elsewhere, a test: the child must not import another installed copy)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def execute(experiment: str, cfg: dict[str, Any], on_log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The run's result, trained in a child under callgrind, with `timing.instructions_per_step`
    and `timing.instructions_per_phase` of its counted steady steps; the child's log lines are
    handed to `on_log` as they come."""
    from bpbench import processes
    from bpbench.results import files

    check_available()
    with tempfile.TemporaryDirectory(prefix="bpbench-callgrind-") as tmp:
        directory = Path(tmp)
        # plain json, not files.write_json: an lr of inf must reach the child as inf, not null
        files.write_text(directory / "request.json", json.dumps(
            {"experiment": experiment, "config": cfg, "log": on_log is not None,
             "first": cfg.get("warmup_steps") or 0, "count": COUNTED_STEPS}))
        proc = processes.start_child(valgrind_command(directory), env=child_env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True)
        interrupted = _relay(proc, on_log)
        result = _child_result(directory, proc.returncode, interrupted)
        result["timing"].update(read_counts(directory, result["timing"].get("warmup_steps", 0)))
        result["timing"]["metric"] = "instructions"
    return result


def _relay(proc, on_log: Callable[[str], None] | None) -> bool:
    """Hand the child's log lines on until it ends; on Ctrl-C/SIGTERM stop it (`_stop`). True if
    interrupted."""
    try:
        with proc.stdout:
            for line in proc.stdout:
                if on_log:
                    on_log(line.rstrip("\n"))
        proc.wait()
        return False
    except KeyboardInterrupt:
        _stop(proc)
        return True


def _stop(proc) -> None:
    """A SIGTERM, which the child answers by keeping its finished steps; STOP_WAIT_S for that, then
    SIGKILL. A second Ctrl-C stops the waiting."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_WAIT_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()


def _child_result(directory: Path, returncode: int, interrupted: bool) -> dict[str, Any]:
    error = _read_json(directory / "error.json")
    if error is not None:
        if error["kind"] == "bad_input":
            raise BadInput(error["message"])
        if error["kind"] == "interrupted":
            raise KeyboardInterrupt
        raise RunFailed(f"the run under callgrind failed: {error['message']}")
    result = _read_json(directory / "result.json")
    if result is None:
        if interrupted:
            raise KeyboardInterrupt
        raise RunFailed(f"the run under callgrind ended without a result (exit code {returncode}): "
                        + _last_line(directory / "valgrind.log"))
    return result


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_line(path: Path) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip("= 0123456789")]
    except OSError:
        return "valgrind left no log"
    return lines[-1].split("== ", 1)[-1] if lines else "valgrind's log is empty"


def dump_total(path: Path) -> int:
    """The instructions (Ir) one callgrind dump holds: its header's `summary:` line."""
    with open(path) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
            if line.startswith("fn="):
                break
    raise RunFailed(f"{path.name}: a callgrind dump without a summary line")


def read_counts(directory: Path, warmup_steps: int) -> dict[str, Any]:
    """Instruction counts of the counted steady steps from the child's dumps and manifest."""
    manifest = _read_json(directory / "segments.json") or {"segments": [], "completed": []}
    totals = [dump_total(directory / f"{OUT_FILE}.{i}") for i in range(1, len(manifest["segments"]) + 1)]
    return summarize_steps(steps_from_segments(manifest["segments"], totals, manifest["completed"], warmup_steps))


def steps_from_segments(segments: list[list], totals: list[int], completed: list[int],
                        warmup_steps: int) -> list[dict[str, int]]:
    """Per completed steady step (in order): label -> instructions, from the dumps' (step, label)
    and totals. Warm-up steps and a step an exception cut short are left out."""
    done = set(completed)
    steps: dict[int, dict[str, int]] = {}
    for (step, label), n in zip(segments, totals):
        if step >= warmup_steps and step in done:
            per = steps.setdefault(step, {})
            per[label] = per.get(label, 0) + n
    return [steps[s] for s in sorted(steps)]


def summarize_steps(steps: list[dict[str, int]]) -> dict[str, Any]:
    """instructions_per_step: the median step's count; instructions_per_phase: that step's
    phases (the mean of the two middle steps' for an even number), which add up to it;
    instructions_all: every counted step's count, in order (the gate's samples)."""
    totals = [sum(s.values()) for s in steps]
    if not steps:
        return {"instructions_per_step": None, "instructions_per_phase": None, "instructions_all": [],
                "instructions_steps": 0}
    order = sorted(range(len(steps)), key=lambda i: totals[i])
    middle = [steps[i] for i in order[(len(order) - 1) // 2: len(order) // 2 + 1]]
    labels = sorted({k for s in middle for k in s}, key=lambda k: (PHASES + (k,)).index(k))
    phases = {k: statistics.fmean(s.get(k, 0) for s in middle) for k in labels}
    return {"instructions_per_step": statistics.median(totals), "instructions_per_phase": phases,
            "instructions_all": totals, "instructions_steps": len(totals)}


# ---------------------------------------------------------------- the child


class _Segment:
    """`with phase(name):` while counting: the step's code before it is dumped as "other", the
    phase's own code as `name`."""
    __slots__ = ("counter", "name")

    def __init__(self, counter: "StepCounter", name: str):
        self.counter, self.name = counter, name

    def __enter__(self) -> None:
        self.counter.boundary(OTHER)

    def __exit__(self, *exc: Any) -> None:
        self.counter.boundary(self.name)


_OFF = contextlib.nullcontext()


class StepCounter(Marker):
    """The phases' marker and, through `timer(record)`, the harness's step timer (a CpuStepTimer
    inside, so step times are still kept: valgrind's, far slower than native), counting `count`
    steps from step `first`.

    Collection is on only between a counted step's start and stop; every boundary dumps the counts
    so far and switches collection on again. `segments` lists (step, label) per dump, in order."""

    def __init__(self, first: int, count: int, toggle: Callable[[], None] | None = None,
                 toggle_and_dump: Callable[[], None] | None = None, after_last: Callable[[], None] | None = None):
        from bpbench.measure.timer import CpuStepTimer
        if toggle is None or toggle_and_dump is None:   # torch's bindings of callgrind's client requests
            import torch
            toggle, toggle_and_dump = torch._C._valgrind_toggle, torch._C._valgrind_toggle_and_dump_stats
        self._clock = CpuStepTimer()
        self._counted = range(first, first + count)     # steps (from 0) to count: after the warm-up
        self._toggle, self._toggle_and_dump = toggle, toggle_and_dump
        self._after_last = after_last   # e.g. instrumentation off: the rest runs at valgrind's cheapest
        self._step = 0          # the step the loop is in (counted or not)
        self._on = False        # collecting: inside a counted step
        self.segments: list[tuple[int, str]] = []
        self.completed: list[int] = []
        self._marks: dict[str, _Segment] = {}

    def mark(self, name: str):
        if not self._on:
            return _OFF
        seg = self._marks.get(name)
        if seg is None:
            seg = self._marks[name] = _Segment(self, name)
        return seg

    def boundary(self, label: str) -> None:
        """Dump what ran since the last boundary as `label`, and collect on."""
        self._toggle_and_dump()
        self.segments.append((self._step, label))
        self._toggle()

    def start(self) -> None:
        if self._on:       # the previous step raised before its stop: its count is incomplete
            self._close()
            self._step += 1
        self._clock.start()
        if self._step in self._counted:
            self._on = True
            self._toggle()

    def stop(self) -> None:
        if self._on:
            self._close()
            self.completed.append(self._step)
            if self._step == self._counted[-1] and self._after_last:
                self._after_last()
        self._clock.stop()
        self._step += 1

    def _close(self) -> None:
        self._toggle_and_dump()
        self.segments.append((self._step, OTHER))
        self._on = False

    def timer(self, times) -> "StepCounter":
        """This counter as run_loop's step timer, its step times written into `times` (the loop's
        StepRecord)."""
        from bpbench.measure.timer import CpuStepTimer
        self._clock = CpuStepTimer(times)
        return self

    @property
    def times(self):
        return self._clock.times

    def split(self) -> None:
        self._clock.split()

    def finish(self):
        return self._clock.finish()

    def seconds(self) -> list[float]:
        return self._clock.seconds()

    def __exit__(self, *exc: Any) -> None:
        if self._on:        # the loop ended inside a step (an exception): stop collecting
            self._close()
        super().__exit__(*exc)

    def manifest(self) -> dict[str, Any]:
        return {"segments": self.segments, "completed": self.completed}


def callgrind_control(directory: Path, *args: str) -> None:
    """Run callgrind_control on this process. It talks through valgrind's gdbserver, which this
    process serves between the blocks it executes: so wait busy, not blocked in a system call
    (vgdb would then need ptrace, which many systems allow only toward a child)."""
    log = directory / "control.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["callgrind_control", f"--vgdb-prefix={directory / 'vgdb'}", *args, str(os.getpid())],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RunFailed(f"callgrind_control {' '.join(args)} did not answer within {CONTROL_TIMEOUT_S:.0f} s")
    if proc.returncode != 0:
        raise RunFailed(f"callgrind_control {' '.join(args)} failed (is this running under callgrind?): "
                        + " ".join(log.read_text(errors="replace").split())[-300:])


def _stop_once(signum, frame):
    """The first Ctrl-C or SIGTERM interrupts the run; more (the parent hands one on) are ignored,
    so the interrupted run can still write what it kept."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt


def child_main(directory: Path) -> int:
    from bpbench import processes
    from bpbench.results import files as results

    processes.child_setup()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _stop_once)
    request = json.loads((directory / "request.json").read_text())
    counter = StepCounter(request["first"], request["count"], after_last=lambda: callgrind_control(directory, "--instr=off"))
    try:
        result = _count(directory, request, counter)
        results.write_json(directory / "result.json", result)
        return 0
    except BadInput as e:
        error = {"kind": "bad_input", "message": str(e)}
    except KeyboardInterrupt:
        error = {"kind": "interrupted", "message": "interrupted"}
    except Exception as e:   # handed to the parent, which reports it in one line
        error = {"kind": "failed", "message": f"{type(e).__name__}: {e}"}
    finally:
        results.write_json(directory / "segments.json", counter.manifest())
    results.write_json(directory / "error.json", error)
    return 1


def _count(directory: Path, request: dict[str, Any], counter: StepCounter) -> dict[str, Any]:
    from bpbench import experiments
    from bpbench.measure import run as runner

    info = experiments.get(request["experiment"])
    cfg = request["config"]

    def instrumented():     # just before the loop: setup and imports ran uninstrumented
        callgrind_control(directory, "--instr=on")
        return counter

    # No FLOP count or peak lookup after training: both belong to a native run (a peak measured
    # here would be valgrind's).
    result = runner.execute_in_process(info, {**cfg, "flops": False},
                                       on_log=runner.Printer("stdout") if request["log"] else None,
                                       step_counter=instrumented)
    from bpbench.results import contention
    from bpbench.results.timing import StepTimes
    result["config"] = cfg
    t = result["timing"]
    busy = (t.get("contention") or {}).get("reason")
    moot = {StepTimes.of(t["step_s_all"] or []).warning(), contention.warning(busy) if busy else None}
    result["warnings"] = [w for w in result["warnings"] if w not in moot] + [   # of valgrind's times
        "step times and memory of this run are valgrind's (--metric instructions): compare instruction counts, not times"]
    return result


if __name__ == "__main__":
    sys.exit(child_main(Path(sys.argv[1])))
