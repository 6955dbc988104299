"""--metric instructions: the step counter against a simulated callgrind (no valgrind needed),
the dump parser, and, where valgrind is installed, real counts of a short linreg run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from bpbench.errors import BadInput
from bpbench.measure.loop import LoopConfig, run_loop
from bpbench.measure import instructions as I
from bpbench.variants.phases import phase


class FakeCallgrind:
    """Collection state and dumps as callgrind keeps them: `work(n)` executes n instructions,
    counted only while collection is on; a dump holds what was counted since the last one."""

    def __init__(self):
        self.on = False
        self.count = 0
        self.dumps: list[int] = []

    def toggle(self):
        self.on = not self.on

    def toggle_and_dump(self):
        self.toggle()
        self.dumps.append(self.count)
        self.count = 0

    def work(self, n):
        if self.on:
            self.count += n


class PhasedFake:
    """A Trainable whose step runs known amounts of work in and between its phases."""
    WORK = {"fetch": 3, "forward": 100, "between": 1, "backward": 200, "update": 50}

    def __init__(self, cg, steps_per_epoch=1, fail_at=None, extra_at=()):
        self.cg, self.steps_per_epoch, self.samples_per_epoch = cg, steps_per_epoch, steps_per_epoch
        self.calls, self.fail_at, self.extra_at = 0, fail_at, set(extra_at)

    def begin_epoch(self, epoch):
        self.cg.work(1000)      # outside any step: never counted

    def step(self):
        self.calls += 1
        w, cg = self.WORK, self.cg
        cg.work(w["fetch"])
        with phase("forward"):
            cg.work(w["forward"] + (7 if self.calls in self.extra_at else 0))
        cg.work(w["between"])
        with phase("backward"):
            cg.work(w["backward"])
            if self.calls == self.fail_at:
                raise ValueError("boom")
        with phase("update"):
            cg.work(w["update"])
        return torch.tensor(1.0)

    def evaluate(self):
        self.cg.work(10_000)
        return {}


def counter_for(cg, first, count, **kwargs):
    return I.StepCounter(first, count, toggle=cg.toggle, toggle_and_dump=cg.toggle_and_dump, **kwargs)


def drive(epochs=12, steps_per_epoch=1, warmup=2, first=2, count=5, **fake):
    cg = FakeCallgrind()
    t = PhasedFake(cg, steps_per_epoch, **fake)
    done = []
    counter = counter_for(cg, first, count, after_last=lambda: done.append(t.calls))
    with counter:
        res = run_loop(t, LoopConfig(epochs=epochs, warmup_steps=warmup, eval_every=3), "cpu", timer=counter.timer)
    steps = I.steps_from_segments(counter.manifest()["segments"], cg.dumps, counter.completed, res.warmup_steps)
    return cg, counter, res, steps, done


def test_each_counted_step_is_its_phases_and_the_code_between_them():
    cg, counter, res, steps, done = drive()
    w = PhasedFake.WORK
    assert len(steps) == 5 and not cg.on
    for s in steps:
        assert s == {"other": w["fetch"] + w["between"], "forward": w["forward"],
                     "backward": w["backward"], "update": w["update"]}
        assert sum(s.values()) == sum(w.values())    # evaluation and epoch starts never counted
    assert done == [7]          # the last counted step (the 7th) switches instrumentation off once
    assert res.steps == 12 and len(res.steady_step_s) == 10     # still a step timer


def test_mini_batch_epochs_count_the_same_steps():
    _, _, _, steps, _ = drive(epochs=4, steps_per_epoch=3)
    assert len(steps) == 5 and all(sum(s.values()) == sum(PhasedFake.WORK.values()) for s in steps)


def test_warm_up_steps_are_not_counted():
    cg, counter, res, steps, _ = drive(warmup=4, first=4, count=3)
    assert {s for s, _ in counter.segments} == {4, 5, 6} and len(steps) == 3


def test_a_step_cut_short_is_left_out():
    # The 4th step raises inside backward: the loop propagates the error (not a divergence); the
    # counter stops collecting on the way out, and the cut step is not a step's count.
    cg = FakeCallgrind()
    t = PhasedFake(cg, fail_at=4)
    counter = counter_for(cg, 2, 5)
    with pytest.raises(ValueError), counter:
        run_loop(t, LoopConfig(epochs=10), "cpu", timer=counter.timer)
    assert not cg.on
    steps = I.steps_from_segments(counter.segments, cg.dumps, counter.completed, 0)
    assert counter.completed == [2] and len(steps) == 1


def test_the_median_step_and_its_phases_add_up():
    steps = [{"forward": 10, "backward": 20, "other": 1}] * 3 + \
            [{"forward": 15, "backward": 20, "other": 1}, {"forward": 90, "backward": 20, "other": 1}]
    s = I.summarize_steps(steps)
    assert s["instructions_per_step"] == 31 and s["instructions_steps"] == 5
    assert sum(s["instructions_per_phase"].values()) == s["instructions_per_step"]
    even = I.summarize_steps(steps[2:])     # 31, 36, 111: median 36; then 31, 36 -> 33.5
    assert even["instructions_per_step"] == 36
    two = I.summarize_steps(steps[2:4])
    assert two["instructions_per_step"] == 33.5 == sum(two["instructions_per_phase"].values())
    assert I.summarize_steps([])["instructions_per_step"] is None


def test_an_extra_operation_moves_the_count():
    _, _, _, base, _ = drive()
    _, _, _, more, _ = drive(extra_at=range(1, 100))
    a, b = (I.summarize_steps(s)["instructions_per_phase"] for s in (base, more))
    assert b["forward"] - a["forward"] == 7 and b["backward"] == a["backward"]


def test_dump_total_reads_the_summary_line(tmp_path):
    dump = tmp_path / "callgrind.out.3"
    dump.write_text("# callgrind format\nversion: 1\nevents: Ir\nsummary: 284455\n\nfn=(1) main\n16 3\ntotals: 284455\n")
    assert I.dump_total(dump) == 284455
    bad = tmp_path / "callgrind.out.4"
    bad.write_text("# callgrind format\nfn=(1) main\n")
    with pytest.raises(Exception, match="summary"):
        I.dump_total(bad)


def test_without_valgrind_the_error_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BadInput, match=r"install the valgrind package"):
        I.check_available()


@pytest.mark.parametrize("args", [["run", "linreg", "--metric", "instructions"],
                                  ["compare", "linreg", "--metric", "instructions"]])
def test_without_valgrind_run_and_compare_exit_2_in_one_line(cli, monkeypatch, args):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    r = cli(*args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "install the valgrind package" in r.stderr


@pytest.mark.parametrize("args,msg", [
    (["--metric", "cycles"], "unknown --metric 'cycles'"),
    (["--metric", "instructions", "--profile-ops"], "profile with --metric time"),
    (["--metric", "instructions", "--variant", "ddp"], "trains in several"),
])
def test_run_refuses_what_it_cannot_count(cli, monkeypatch, args, msg):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")   # as if installed
    r = cli("run", "linreg", *args)
    assert r.exit_code == 2 and msg in r.stderr, r.stderr


def test_compare_counts_cpu_cells_of_one_process_only():
    from bpbench import api
    from bpbench import comparison as cmp
    from bpbench.results.cells import make_cell
    cpu, cuda = (make_cell("matrix", "linreg", "manual", d, {"epochs": 30}) for d in ("cpu", "cuda"))
    ddp = make_cell("matrix", "linreg", "ddp", "cpu", {})
    assert "--metric instructions" in " ".join(cpu.argv("instructions")) and "--metric" not in cpu.argv()
    assert cmp.why_unavailable(cpu, set(), "instructions") is None
    assert cmp.why_unavailable(cuda, set(), "instructions") == cmp.why_unavailable(ddp, set(), "instructions") \
        == "--metric instructions counts one CPU process"
    assert cmp.why_unavailable(ddp, set()) is None
    assert api._counted_devices([]) == ["cpu"] and api._counted_devices(["all"]) == ["all"]
    with pytest.raises(BadInput, match="--device cpu"):
        api._counted_devices(["cuda"])


def test_what_cannot_be_counted_is_refused():
    with pytest.raises(BadInput, match="--device cpu"):
        I.check_run({"device": "cuda", "variant": "manual"}, distributed=False)
    with pytest.raises(BadInput, match="several"):
        I.check_run({"device": "cpu", "variant": "ddp"}, distributed=True)
    assert I.counted_config({"threads": None})["threads"] == 1
    assert I.counted_config({"threads": 2})["threads"] == 2


# ---------------------------------------------------------------- under valgrind

def needs_valgrind(test):
    skip = pytest.mark.skipif(bool(I.missing_tools()), reason="needs valgrind (the Debian package valgrind)")
    return pytest.mark.callgrind(skip(test))
# A short linreg: 5 warm-up steps, the 15 counted, 10 more (instrumentation off).
SHORT = ["run", "linreg", "--manual", "--epochs", "30", "--metric", "instructions", "--json"]


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """Two runs of one command, each its own callgrind child; temporary files in a directory of
    the test's own. (The same command with an extra operation per step, tests/inject, is recorded
    in tests/data/instructions_injected.json: the gate on it is tested in test_export.py, and
    one more live run here would cost the suite another half minute.)"""
    from typer.testing import CliRunner

    from bpbench.cli import app
    if I.missing_tools():
        pytest.skip("needs valgrind (the Debian package valgrind)")
    scratch = tmp_path_factory.mktemp("scratch")
    old, tempfile.tempdir = tempfile.tempdir, str(scratch)
    runs = {}
    try:
        for name, path in (("a", None), ("a_again", None)):
            env = {"PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])} if path else {}
            r = CliRunner().invoke(app, SHORT, env=env)
            assert r.exit_code == 0, r.stderr
            runs[name] = json.loads(r.stdout)
    finally:
        tempfile.tempdir = old
    return runs, scratch


@needs_valgrind
def test_counts_of_one_command_agree_within_half_a_percent(counted):
    runs, scratch = counted
    a, b = (runs[k]["timing"] for k in ("a", "a_again"))
    assert a["metric"] == "instructions" and a["instructions_steps"] == I.COUNTED_STEPS
    assert abs(a["instructions_per_step"] / b["instructions_per_step"] - 1) < 0.005
    for t in (a, b):    # the median step's phases add up to it
        assert set(t["instructions_per_phase"]) == {"forward", "backward", "update", "other"}
        assert sum(t["instructions_per_phase"].values()) == pytest.approx(t["instructions_per_step"])
    assert runs["a"]["config"]["threads"] == 1 and runs["a"]["final"] == runs["a_again"]["final"]
    assert list(scratch.iterdir()) == []       # every private directory removed


@needs_valgrind
def test_the_gate_never_fails_a_rerun(counted):
    from bpbench import comparison as cmp
    from synthetic import cell, document
    runs, _ = counted

    def doc(name):
        return {**document([cell(runs[name])]), "metric": "instructions"}

    base = doc("a")
    d = doc("a_again")
    cmp.refresh(d, base, 0.02)
    assert cmp.regressions(d) == [], d["cells"][0]["summary"]


@needs_valgrind
def test_sigterm_keeps_the_counted_steps_and_leaves_nothing_behind(tmp_path):
    """SIGTERM once the counted steps are done: exit 130 with the partial result (its counts),
    the private directory removed, no valgrind process left."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "bpbench", "run", "linreg", "--manual", "--epochs", "300000",
                             "--metric", "instructions", "--json"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        last_dump = f"{I.OUT_FILE}.{7 * I.COUNTED_STEPS}"    # 7 dumps a counted step
        deadline = time.monotonic() + 400
        while not list(tmp_path.glob(f"bpbench-callgrind-*/{last_dump}")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.5)
        private = next(tmp_path.glob("bpbench-callgrind-*"))
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("bpbench: error: interrupted")
    result = json.loads(out)
    assert result["status"] == "interrupted" and result["timing"]["instructions_steps"] == I.COUNTED_STEPS
    assert list(tmp_path.iterdir()) == []
    assert not [p for p in Path("/proc").glob("[0-9]*") if str(private).encode() in _cmdline(p)]


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""
