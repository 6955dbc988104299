"""Bad inputs and faults: one validation layer (config.py), one file writer (results/files.py),
one signal policy (cli/common.py), divergence at the harness/run level."""

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import torch

from bpbench import api
from bpbench.cli import common as cli_module
from bpbench.experiments import REGISTRY
from bpbench.experiments.base import GradCheckCase
from bpbench.measure import gradcheck
from bpbench.measure.loop import LoopConfig, run_loop
from bpbench.results import files as results

LONG = "n" * 300          # longer than any file system's NAME_MAX (255)


def one_line(r, code=2):
    """The CLI's contract for an error: exit `code`, exactly one `bpbench: error:` line."""
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == code, (r.exit_code, r.stdout[-500:], r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("bpbench: error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if any run starts training: checks must come first."""
    from bpbench.measure import loop
    monkeypatch.setattr(loop, "run_loop", lambda *a, **k: pytest.fail("training started"))


@pytest.fixture
def no_build(monkeypatch):
    """Fails the test if any experiment starts building (allocating) its run."""
    for info in REGISTRY.values():
        monkeypatch.setattr(type(info.load()), "build", lambda *a, **k: pytest.fail("build started"))


# ------------------------------------------------------------ the hostile pass: bad input, one line

def _write(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    return p


# Each: CLI args ({tmp} is replaced by the test's directory), and a fragment the line must hold.
HOSTILE = [
    # item 5: seeds outside torch's range (0 .. 2**64 - 1), everywhere a seed enters
    (["run", "linreg", "--seed", str(2**64)], "2**64 - 1"),
    (["run", "linreg", "--seed", "-1"], "seed"),
    (["run", "linreg", "--set", f"seed={2**64}"], "seed"),
    (["gradcheck", "linreg", "--seed", str(2**64)], "seed"),
    (["run", "linreg", "--config", "{tmp}/seed_big.toml"], "seed"),
    # item 15: wrong types are bad input, never truncated; flags that do not apply are refused
    (["run", "linreg", "--config", "{tmp}/seed_float.toml"], "seed must be"),
    (["run", "linreg", "--config", "{tmp}/log_float.toml"], "log_every must be"),
    (["run", "linreg", "--config", "{tmp}/epochs_float.toml"], "epochs must be"),
    (["run", "linreg", "--config", "{tmp}/seed_bool.toml"], "seed must be"),
    (["run", "linreg", "--config", "{tmp}/lr_huge_int.toml"], "lr must be"),   # float() overflows
    (["run", "linreg", "--config", "{tmp}/epochs_str.toml"], "epochs must be a number, not the string '5'"),
    (["run", "linreg", "--set", "seed=3.9"], "seed must be"),
    (["run", "linreg", "--set", "warmup_steps=1.5"], "warmup-steps must be"),
    (["run", "linreg", "--manual", "--set", "variant=nn"], "give it once"),
    (["run", "linreg", "--epochs", "5", "--set", "epochs=5"], "give it once"),
    (["run", "linreg", "--set", "lr=0.1", "--set", "lr=0.2"], "given twice"),
    (["run", "width", "--data", "xor"], "unknown --data"),
    (["run", "bce", "--data", "line4"], "unknown --data"),
    (["gradcheck", "bce", "--data", "nope"], "unknown --data"),
    (["run", "mnist01", "--set", "holdout=1"], "between 0 and 1"),
    (["run", "mnist01", "--set", "holdout=0"], "between 0 and 1"),
    (["run", "mnist01", "--data", "{tmp}/x.npz", "--data-dir", "{tmp}"], "do not apply to --data"),
    (["gradcheck", "linreg", "--tol", "inf"], "--tol"),
    (["gradcheck", "linreg", "--tol", "nan"], "--tol"),
    (["run", "linreg", "--set", "lr=1e999"], "lr"),
    (["run", "linreg", "--set", "lr="], "lr"),
    (["run", "linreg", "--set", "=3"], "KEY=VALUE"),
    # item 8: unreadable and over-long paths, in run, gradcheck and report
    (["run", "linreg", "--config", f"{{tmp}}/{LONG}.toml"], "File name too long"),
    (["run", "linreg", "--config", "{tmp}"], "not a regular file"),
    (["run", "linreg", "--config", "{tmp}/seed_big.toml/x.toml"], "Not a directory"),
    (["run", "linreg", "--data", f"{{tmp}}/{LONG}.csv"], "File name too long"),
    (["gradcheck", "linreg", "--data", f"{{tmp}}/{LONG}.csv"], "File name too long"),
    (["run", "linreg", "--data", "{tmp}/dir.csv"], "not a regular file"),
    (["run", "mnist01", "--data", f"{{tmp}}/{LONG}.npz"], "File name too long"),
    (["run", "mnist01", "--data-dir", f"{{tmp}}/{LONG}", "--epochs", "1"], "File name too long"),
    (["report", f"{{tmp}}/{LONG}.json"], "File name too long"),
    # item 6: a run that cannot fit is refused before anything is allocated
    (["run", "width", "--width", "2000000000"], "GiB"),
    # (records stay bounded however long the run: only the log points asked for grow with it)
    (["run", "linreg", "--epochs", str(10**12), "--log-every", "1"], "GiB"),
    (["run", "mnist01", "--batch-size", "1", "--epochs", str(10**9), "--eval-every", "1"], "GiB"),
    # item 13: --output targets that cannot take a file, found before any training
    (["run", "linreg", "--output", "{tmp}"], "is a directory"),
    (["run", "linreg", "--output", ""], "is a directory"),
    (["run", "linreg", "--output", f"{{tmp}}/{LONG}.json"], "File name too long"),
    (["run", "linreg", "--output", "{tmp}/seed_big.toml/r.json"], "Not a directory"),
    (["run", "linreg", "--output", "{tmp}/sock"], "not a regular file"),
    (["run", "linreg", "--data", "{tmp}/ok.csv", "--output", "{tmp}/ok.csv"], "input"),
    (["run", "linreg", "--config", "{tmp}/ok.toml", "--output", "{tmp}/ok-link.toml"], "input"),
    (["run", "linreg", "--profile-ops", "--output", "{tmp}/r.json", "--trace-file", "{tmp}/./r.json"], "also --output"),
    # siblings found later: thread counts OpenMP dies on (a segfault at 100,000), empty data
    (["run", "linreg", "--threads", "100000"], "--threads must be at most"),
    (["run", "linreg", "--set", "threads=2147483648"], "threads must be at most"),
    (["peak", "--threads", "2147483648"], "--threads must be at most"),
    (["compare", "linreg", "--threads", "1,99999"], "--threads must be at most"),
    (["run", "mnist01", "--data", "{tmp}/empty.npz"], "holds no images"),
    # compare refuses up front what each cell's run would refuse (not N failed cells, exit 1)
    (["compare", "linreg", "--set", "data={tmp}/nope.csv"], "not a readable file"),
    (["compare", "width", "--widths", "2000000000"], "GiB"),
    (["gradcheck", "mnist01", "--data", "{tmp}/empty.npz"], "holds no images"),
]


@pytest.fixture
def hostile_dir(tmp_path):
    for name, content in [("seed_big.toml", f"seed = {2**64}\n"), ("seed_float.toml", "seed = 3.9\n"),
                          ("log_float.toml", "log_every = 2.5\n"), ("epochs_float.toml", "epochs = 5.7\n"),
                          ("seed_bool.toml", "seed = true\n"), ("epochs_str.toml", 'epochs = "5"\n'), ("lr_huge_int.toml", f"lr = {10**400}\n"),
                          ("ok.toml", "lr = 0.02\n"),
                          ("ok.csv", "x,y\n1,3\n2,5\n")]:
        _write(tmp_path, name, content)
    (tmp_path / "dir.csv").mkdir()
    (tmp_path / "ok-link.toml").symlink_to(tmp_path / "ok.toml")
    import numpy as np
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int64))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    yield tmp_path
    sock.close()


@pytest.mark.parametrize("args,msg", HOSTILE, ids=[" ".join(a)[:60] for a, _ in HOSTILE])
def test_hostile_input_is_one_line_exit_2_before_any_work(cli, hostile_dir, no_training, args, msg):
    r = cli(*[a.replace("{tmp}", str(hostile_dir)) for a in args])
    assert msg in one_line(r)


def test_inputs_survive_a_refused_output(cli, hostile_dir, no_training):
    cli("run", "linreg", "--config", hostile_dir / "ok.toml", "--output", hostile_dir / "ok-link.toml")
    assert (hostile_dir / "ok.toml").read_text() == "lr = 0.02\n"
    assert (hostile_dir / "ok-link.toml").is_symlink()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the permission bits say")
@pytest.mark.parametrize("args", [["run", "linreg", "--config", "{f}.toml"], ["run", "linreg", "--data", "{f}.csv"],
                                  ["gradcheck", "linreg", "--data", "{f}.csv"], ["run", "mnist01", "--data", "{f}.npz"],
                                  ["report", "{f}.json"], ["run", "linreg", "--output", "{d}/r.json"],
                                  ["run", "mnist01", "--data-dir", "{d}", "--epochs", "1"]])
def test_unreadable_paths_are_one_line(cli, tmp_path, args):
    for ext in ("toml", "csv", "npz", "json"):
        (tmp_path / f"f.{ext}").write_text("x")
        (tmp_path / f"f.{ext}").chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    r = cli(*[a.replace("{f}", str(tmp_path / "f")).replace("{d}", str(locked)) for a in args])
    assert "Permission denied" in one_line(r)


# ------------------------------------------------------------ item 15: types and the one rule

def test_integers_stay_integers_and_seed_range_ends_are_accepted(cli, tmp_path):
    f = _write(tmp_path, "c.toml", f"seed = {2**64 - 1}\nepochs = 3\nlog_every = 0\n")
    d = cli.json("run", "linreg", "--config", f)
    assert d["config"]["seed"] == 2**64 - 1 and d["config"]["epochs"] == 3
    assert cli.json("run", "bce", "--data", "xor", "--seed", "0", "--epochs", "2")["config"]["seed"] == 0


def test_toml_with_a_byte_order_mark_is_read(cli, tmp_path):
    f = tmp_path / "c.toml"
    f.write_bytes(b"\xef\xbb\xbfepochs = 4\r\n")
    assert cli.json("run", "linreg", "--config", f)["config"]["epochs"] == 4


# ------------------------------------------------------------ item 16: Excel's "CSV UTF-8"

def test_csv_with_byte_order_mark_trains_like_the_plain_file(cli, tmp_path):
    plain = _write(tmp_path, "plain.csv", "x,y\n1,3\n2,5\n3,7\n4,9\n")
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbfx, y\r\n1, 3\r\n2, 5\r\n3, 7\r\n4, 9\r\n")   # BOM, CRLF, ", "
    a = cli.json("run", "linreg", "--data", plain, "--epochs", "50")
    b = cli.json("run", "linreg", "--data", excel, "--epochs", "50")
    assert b["data"]["n_train"] == 4 and a["final"]["params"] == b["final"]["params"]


def test_csv_errors_name_the_line(cli, tmp_path):
    f = _write(tmp_path, "d.csv", "x,y\n1,3\n\n2,oops\n")
    assert "line 4" in one_line(cli("run", "linreg", "--data", f))


# ------------------------------------------------------------ items 1, 13: the one file writer

def test_output_through_a_symlink_updates_its_target(cli, tmp_path):
    target = tmp_path / "store" / "r.json"
    target.parent.mkdir()
    target.write_text('{"schema": 1, "experiment": "linreg"}')    # an earlier result
    target.chmod(0o640)
    link = tmp_path / "r.json"
    link.symlink_to(target)
    r = cli("run", "linreg", "--epochs", "3", "--output", link)
    assert r.exit_code == 0, r.stderr
    assert link.is_symlink() and json.loads(target.read_text())["timing"]["steps"] == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o640           # the file kept its permissions
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]


def test_output_through_a_dangling_symlink_creates_its_target(cli, tmp_path):
    link = tmp_path / "r.json"
    link.symlink_to(tmp_path / "new.json")
    assert cli("run", "linreg", "--epochs", "2", "--output", link).exit_code == 0
    assert link.is_symlink() and json.loads((tmp_path / "new.json").read_text())["status"] == "ok"


def test_output_dev_stdout_writes_to_stdout(cli):
    before = os.lstat("/dev/stdout")
    r = cli("run", "linreg", "--epochs", "2", "--output", "/dev/stdout")
    assert r.exit_code == 0, r.stderr
    start = r.stdout.index('{\n  "schema"')
    assert json.loads(r.stdout[start:r.stdout.rindex("}") + 1])["timing"]["steps"] == 2
    after = os.lstat("/dev/stdout")     # the link itself is never replaced by a file
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_json_with_output_dev_stdout_prints_one_object(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bpbench", "run", "linreg", "--epochs", "2", "--json",
                        "--output", "/dev/stdout"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"schema"') == 1 and json.loads(r.stdout)["timing"]["steps"] == 2


def test_ctrl_c_while_a_cell_starts_stops_that_cell_then_interrupts(monkeypatch):
    """A Ctrl-C landing inside Popen is deferred: the new cell is stopped, then KeyboardInterrupt."""
    from bpbench import processes
    real_popen, started = subprocess.Popen, []

    def popen_hit_by_ctrl_c(*a, **k):
        proc = real_popen(*a, **k)
        started.append(proc)
        os.kill(os.getpid(), signal.SIGINT)       # as if the user pressed Ctrl-C right now
        time.sleep(0.2)
        return proc
    monkeypatch.setattr(subprocess, "Popen", popen_hit_by_ctrl_c)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        processes.start_child(["sleep", "60"], start_new_session=True)
    assert started and started[0].poll() is not None          # stopped, not left running
    assert signal.getsignal(signal.SIGINT) is before          # the caller's handler is back


def test_a_compare_cell_ends_when_compare_is_sigkilled(tmp_path):
    """compare's cells start through processes.start_child and `python -m bpbench` takes it from
    there: the cell dies with compare even when compare is SIGKILLed (no cleanup of ours runs)."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from bpbench import processes\n"
        "c = processes.start_child([sys.executable, '-m', 'bpbench', 'run', 'linreg', '--epochs', '3000000',"
        " '--no-flops'], start_new_session=True, stdout=subprocess.DEVNULL)\n"
        f"open({str(pid_file)!r}, 'w').write(str(c.pid))\n"
        "time.sleep(120)\n")])
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    time.sleep(1.0)     # the child is past its start (python -m bpbench runs child_setup first)
    assert open(f"/proc/{child}/stat").read().split()[2] != "Z", "the cell did not start training"
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        if open(f"/proc/{child}/stat").read().split()[2] == "Z":   # a zombie: dead, not yet reaped
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the cell outlived its SIGKILLed compare")


def test_output_to_a_fifo_is_written_in_place_never_replaced(cli, tmp_path):
    import threading
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    r = cli("run", "linreg", "--epochs", "2", "--output", fifo)
    reader.join(10)
    assert r.exit_code == 0, r.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and json.loads(got[0])["status"] == "ok"


def test_a_failing_device_write_keeps_the_node_and_says_so(tmp_path, monkeypatch):
    # /dev/full (as root the old writer replaced it with a regular file): a char device that
    # refuses every write. A FIFO stands in for it, opened as /dev/full, so no test writes /dev.
    fifo = tmp_path / "full"
    os.mkfifo(fifo)
    real_open = os.open

    def full_open(path, flags, *a, **k):
        return real_open("/dev/full", os.O_WRONLY) if str(path) == str(fifo) else real_open(path, flags, *a, **k)
    monkeypatch.setattr(os, "open", full_open)
    with pytest.raises(OSError, match="No space"):
        results.write_json(fifo, {"a": 1}, streams=True)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_temp_file_name_stays_valid_for_a_long_result_name(tmp_path):
    p = tmp_path / ("r" * 250 + ".json")      # 255 bytes: valid, but not with a suffix added
    results.write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1


# ------------------------------------------------------------ items 2, 3: divergence, every variant

# Every variant this machine can run (graphed needs CUDA); the compiled variant once, as each of
# its cases costs a compile.
DIVERGING = [(name, v) for name, info in REGISTRY.items() for v in info.variants
             if (v != "graphed" or torch.cuda.is_available()) and (v != "compiled" or name == "linreg")]


@pytest.mark.parametrize("name,variant", DIVERGING)
def test_lr_beyond_float32_diverges_with_exit_3_and_a_partial_result(cli, tmp_path, name, variant):
    out = tmp_path / "r.json"
    r = cli("run", name, "--variant", variant, "--lr", "1e39", "--epochs", "3", "--output", out)
    assert "diverged" in one_line(r, 3)
    d = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in a result file"))
    assert d["status"] == "diverged" and d["config"]["lr"] == 1e39 and results.missing_keys(d) == []
    assert d["history"] and d["history"][-1]["epoch"] <= 2


@pytest.mark.parametrize("extra", [[], ["--batch-size", "100"], ["--log-every", "1"]])
def test_mnist01_autograd_divergence_is_exit_3_not_bceloss_traceback(cli, tmp_path, extra):
    # lr 1e25: the weights stay finite but the forward overflows to NaN, which nn.BCELoss refuses
    # (in the step, or in the evaluation with --log-every).
    out = tmp_path / "r.json"
    r = cli("run", "mnist01", "--lr", "1e25", "--epochs", "5", "--output", out, *extra)
    assert "diverged" in one_line(r, 3)
    d = json.loads(out.read_text())
    assert d["status"] == "diverged" and d["final"]["metrics"] == {} and d["history"][-1]["epoch"] <= 2


class Raising:
    """A Trainable whose step or evaluate raises at a chosen update."""

    def __init__(self, fail_at, where="step"):
        self.steps_per_epoch, self.samples_per_epoch, self.line_profile_target = 1, 1, None
        self.fail_at, self.where, self.calls = fail_at, where, 0

    def begin_epoch(self, epoch):
        pass

    def step(self):
        import torch
        self.calls += 1
        if self.where == "step" and self.calls == self.fail_at:
            raise RuntimeError("all elements of input should be between 0 and 1")
        if self.where == "ctrl-c" and self.calls == self.fail_at:
            raise KeyboardInterrupt
        return torch.tensor(1.0)

    def evaluate(self):
        if self.where == "evaluate" and self.calls == self.fail_at:
            raise RuntimeError("all elements of input should be between 0 and 1")
        return {}


@pytest.mark.parametrize("where", ["step", "evaluate"])
def test_loop_ends_on_an_error_that_means_divergence(where):
    import torch
    r = run_loop(Raising(3, where), LoopConfig(epochs=5, eval_every=1), torch.device("cpu"),
                 diverged_by=lambda e: True)
    assert r.diverged_at == 3 and r.diverged_inside and r.history[-1]["epoch"] == 3
    assert [h["epoch"] for h in r.history] == [1, 2, 3]


def test_loop_keeps_the_finished_epochs_when_interrupted():
    import torch
    r = run_loop(Raising(4, "ctrl-c"), LoopConfig(epochs=10, warmup_steps=1), torch.device("cpu"))
    assert r.interrupted_at == 4 and r.diverged_at is None
    assert [h["epoch"] for h in r.history] == [1, 2, 3] and all(h["loss"] == 1.0 for h in r.history)
    assert r.steps == 3 and len(r.steady_step_s) == 2      # the interrupted step is no step
    early = run_loop(Raising(4, "ctrl-c"), LoopConfig(epochs=10, warmup_steps=8), torch.device("cpu"))
    assert early.warmup_steps == 3 and early.steady_step_s == []   # stopped inside the warm-up


def test_loop_lets_other_errors_through():
    import torch
    with pytest.raises(RuntimeError):
        run_loop(Raising(2), LoopConfig(epochs=5), torch.device("cpu"), diverged_by=lambda e: False)


# ------------------------------------------------------------ item 4: gradcheck cannot pass on NaN

def test_gradcheck_fails_when_a_difference_is_nan():
    import torch
    x = torch.tensor([[1e200], [2e200]], dtype=torch.float64)     # the loss overflows float64

    def loss(p):
        return ((x.mm(p["w"]) + p["b"]) ** 2).mean()

    def manual(p):
        pred = x.mm(p["w"]) + p["b"]
        return {"w": 2 * x.t().mm(pred) / 2, "b": (2 * pred.sum() / 2).view(1, 1)}
    params = {"w": torch.ones(1, 1, dtype=torch.float64), "b": torch.ones(1, 1, dtype=torch.float64)}
    rep = gradcheck.check(GradCheckCase(params, loss, manual))
    assert not rep["ok"] and all(not c["ok"] and not c["finite"] for c in rep["checks"])


def test_gradcheck_cli_nan_exits_1_with_strict_json(cli, tmp_path):
    f = _write(tmp_path, "huge.csv", "x,y\n1e200,1\n2e200,3\n")
    r = cli("gradcheck", "linreg", "--data", f, "--json")
    assert r.exit_code == 1
    d = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in --json"))
    assert d["ok"] is False and {c["finite"] for c in d["checks"]} == {False}
    assert d["checks"][1]["autograd_vs_numerical"] is None
    r = cli("gradcheck", "linreg", "--data", f)
    assert r.exit_code == 1 and "cannot check w, b" in r.stdout and "all gradients agree" not in r.stdout


# ------------------------------------------------------------ item 6: the memory estimate

def test_memory_refusal_comes_before_any_allocation(cli, no_build):
    line = one_line(cli("run", "width", "--width", "2000000000"))
    assert "data, model and activations 2,34" in line   # 2e9 x 1,260 bytes = 2,347 GiB


def test_width_estimate_is_close_to_the_measured_peak(cli):
    # The estimate's bytes per unit were measured at H = 1e6 and 4e6; at H = 1e6 the run's peak
    # RSS rises by the model's memory plus ~170 MiB of one-time costs (Adam's first construction).
    d = cli.json("run", "width", "--width", "1000000", "--epochs", "2", "--warmup-steps", "0")
    grew = (d["memory"]["rss_peak_mib"] - d["memory"]["rss_start_mib"]) * 2**20
    est = REGISTRY["width"].footprint(d["config"]).device_bytes
    assert 0.8 * est < grew < est + 400 * 2**20, (grew, est)


# ------------------------------------------------------------ item 7: signals, peak RSS without a monitor

def test_sigterm_takes_the_interrupt_path(cli, monkeypatch, tmp_path):
    out = tmp_path / "r.json"

    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)                     # the handler interrupts this
        pytest.fail("SIGTERM did not interrupt")
    monkeypatch.setattr(api, "execute", killed)
    before = signal.getsignal(signal.SIGTERM)
    r = cli("run", "linreg", "--output", out)
    assert one_line(r, 130) == "bpbench: error: interrupted" and not out.exists()
    assert signal.getsignal(signal.SIGTERM) is before        # restored after the command


def test_ctrl_c_on_run_is_one_line_and_130(cli, monkeypatch):
    monkeypatch.setattr(api, "execute", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert one_line(cli("run", "linreg"), 130) == "bpbench: error: interrupted"


def test_peak_rss_is_reset_per_run():
    from bpbench.measure import memory
    if memory._vmhwm_mib() is None or not memory._reset_vmhwm():
        pytest.skip("no resettable VmHWM here (not Linux)")
    block = bytearray(200 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1                      # touched: resident
    del block
    with memory.PeakRss() as rss:
        pass
    assert rss.source == "VmHWM" and rss.peak < memory.rss_mib() + 100


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_a_real_run_fast_with_no_child_left(tmp_path, sig):
    import psutil
    out = tmp_path / "r.json"
    p = subprocess.Popen([sys.executable, "-m", "bpbench", "run", "linreg", "--epochs", "3000000",
                          "--log-every", "1000", "--output", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("Epoch [1000/")     # training
        children = psutil.Process(p.pid).children(recursive=True)
        t0 = time.perf_counter()
        p.send_signal(sig)
        err = p.stderr.read()
        p.wait(30)
        took = time.perf_counter() - t0
    finally:
        p.kill()
    # what was finished is kept: the epochs before the signal, in --output, status "interrupted"
    assert p.returncode == 130 and err.startswith("bpbench: error: interrupted in epoch ") and \
        err.count("\n") == 1, err
    kept = json.loads(out.read_text())
    epochs = [h["epoch"] for h in kept["history"]]
    assert kept["status"] == "interrupted" and epochs[-1] >= 1000 and epochs == sorted(set(epochs))
    # a bounded history: every 300th of the 3,000,000 epochs, the log points, the last one finished
    assert all(e % 300 == 0 or e % 1000 == 0 for e in epochs[:-1])
    assert kept["timing"]["steps"] >= epochs[-1] and kept["flops"] is None
    assert children == []
    assert took < 5, took          # the old memory monitor alone took ~5 s to let go


# ------------------------------------------------------------ the process's surroundings

@pytest.mark.e2e
def test_a_deleted_working_directory_is_one_line(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    r = subprocess.run([sys.executable, "-m", "bpbench", "list"], cwd=gone, capture_output=True, text=True,
                       preexec_fn=lambda: os.rmdir(gone), timeout=60)   # runs after the child's chdir
    assert r.returncode == 2 and r.stderr == "bpbench: error: the current directory no longer exists: cd to one that does\n"



def test_closed_or_ascii_streams_do_not_raise(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)
    ascii_err = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stderr", ascii_err)
    cli_module._usable_streams()
    print("linreg · manual │ µs")           # a closed stdout: os.devnull
    sys.stderr.write("· µs")
    sys.stderr.flush()
    assert ascii_err.buffer.getvalue() == b"\\xb7 \\xb5s"


@pytest.mark.parametrize("where,what", [("counted_step", "the FLOP count, peak, bound and profile"),
                                        ("metrics", "the final metrics")])
def test_ctrl_c_after_training_keeps_the_trained_result(cli, tmp_path, monkeypatch, where, what):
    """The FLOP count and the first peak measurement take seconds after the loop: a Ctrl-C there
    lost the whole finished run."""
    from bpbench.measure import flops
    from bpbench.measure import run as runner

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    def interrupted_metrics(*a):
        task, learner, session = build(*a)
        task.metrics = interrupt
        return task, learner, session
    build = runner.build_session
    if where == "counted_step":
        monkeypatch.setattr(flops, "counted_step", interrupt)
    else:
        monkeypatch.setattr(runner, "build_session", interrupted_metrics)
    out = tmp_path / "r.json"
    r = cli("run", "linreg", "--epochs", "30", "--output", out)
    assert r.exit_code == 130 and r.stderr == (f"bpbench: error: interrupted after training, in {what}: the 30 "
                                               "epoch(s) are kept, without it\n")
    kept = json.loads(out.read_text())
    assert kept["status"] == "interrupted" and len(kept["history"]) == 30 and kept["flops"] is None
