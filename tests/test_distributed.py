"""Data parallelism: the ddp and allreduce variants on 2 gloo ranks, their launcher,
failures, the torchrun form, and the scaling study.

Ranks are forked from the process that launches them (pytest here, in-process CliRunner runs), so
a 2-rank run costs about a second; the failure tests run `bpbench` in a subprocess to kill it."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from bpbench import api
from bpbench.measure import run as runner
from bpbench.results import parity
from bpbench.studies import scaling


def train(experiment, **flags):
    info, cfg = runner.resolve(experiment, None, flags)
    return api.execute(info, cfg)


# ---------------------------------------------------------------- equal to one process

@pytest.mark.parametrize("variant,reference,batch", [
    ("ddp", "autograd", 301),        # 150 + 151 per batch; the last batch of 23: 11 + 12
    ("allreduce", "manual", 301),
    ("ddp", "autograd", "full"),     # seed 004's gradient descent: 6,332 + 6,333
])
def test_two_ranks_equal_one_process_on_the_global_batch(variant, reference, batch):
    """The issue's bar: parameters within 1e-5 of a single process training on the same global
    batches, after 20 updates (parity compares the loss of every epoch and the parameters)."""
    dist = train("mnist01", variant=variant, nproc=2, batch_size=batch, updates=20)
    one = train("mnist01", variant=reference, batch_size=batch, updates=20)
    assert dist["reference_variant"] == reference
    assert parity.check(dist, one, rtol=1e-5, atol=0) == []
    assert dist["timing"]["steps"] == 20 and dist["history"][-1]["updates"] == 20
    d = dist["distributed"]
    assert (d["world_size"], d["backend"]) == (2, "gloo")
    assert d["global_batch"] == (12665 if batch == "full" else 301)
    assert d["per_rank_batch"] == (6333 if batch == "full" else 151)
    ranks = d["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    assert all(r["threads"] == 1 and r["comm_s_median"] > 0 for r in ranks)
    # the step time is the slowest rank's, step by step: never below either rank's own median
    assert dist["timing"]["step_s_median"] >= max(r["step_s_median"] for r in ranks)
    assert 0 < d["comm_s_median"] < dist["timing"]["step_s_median"]
    assert d["comm_share"] == pytest.approx(d["comm_s_median"] / dist["timing"]["step_s_median"])
    assert "comm_s_all" not in dist["variant_details"] and d["launch_s"] > 0
    assert dist["config"]["nproc"] == 2 and one["distributed"] is None


def test_nproc_from_set_and_from_a_config_file(cli, tmp_path):
    """linreg on seed 000's 4 points, 2 per rank: w and b as one process computes them, to 1e-5."""
    one = cli.json("run", "linreg", "--manual", "--epochs", "20")["final"]["params"]
    f = tmp_path / "c.toml"
    f.write_text('variant = "allreduce"\nnproc = 2\n')
    for args in (["--config", f], ["--variant", "ddp", "--set", "nproc=2"]):
        r = cli.json("run", "linreg", "--epochs", "20", *args)
        assert r["distributed"]["world_size"] == 2, args
        assert r["final"]["params"] == pytest.approx(one, abs=1e-5)


# ---------------------------------------------------------------- bad input and divergence

@pytest.mark.parametrize("args,msg", [
    (["mnist01", "--variant", "ddp", "--nproc", "0"], "--nproc must be a positive integer, got 0"),
    (["mnist01", "--variant", "ddp", "--set", "nproc=-2"], "--nproc must be a positive integer"),
    (["mnist01", "--variant", "ddp", "--backend", "nccl"], "--backend nccl all-reduces CUDA tensors"),
    (["mnist01", "--variant", "ddp", "--backend", "mpi"], "unknown --backend 'mpi'"),
    (["mnist01", "--variant", "allreduce", "--nproc", "2", "--batch-size", "1"],
     "--nproc 2 is more ranks than the batch has samples (1); every rank needs at least one: use fewer ranks "
     "or a larger --batch-size"),
    (["mnist01", "--nproc", "2"], "--nproc does not apply to the autograd variant (variants that take it: ddp, allreduce)"),
    (["shopping", "--variant", "allreduce"], "unknown variant 'allreduce' for shopping"),   # one purchase to split
    # bounded by the machine (one core or GPU a rank) and by the batch, before a rank starts
    (["mnist01", "--variant", "ddp", "--nproc", "100000"],
     "--nproc 100000 is more ranks than this machine can run (one core per rank; this process may use "),
    (["mnist01", "--variant", "allreduce", "--nproc", "99999999999999999999"],
     "--nproc 99999999999999999999 is more ranks than this machine can run"),
    (["bce", "--variant", "allreduce", "--nproc", "2"],            # seed 002: one sample
     "--nproc 2 is more ranks than the batch has samples (1, the whole training set); every rank needs "
     "at least one: use fewer ranks"),
    (["mnist01", "--variant", "ddp", "--nproc", "2", "--profile-ops"],
     "--profile-ops and --trace-file profile one process; the ddp variant trains with 2 rank(s): profile its "
     "reference variant (autograd) instead"),
    (["mnist01", "--variant", "allreduce", "--nproc", "2", "--trace-file", "t.json"],
     "profile its reference variant (manual) instead"),
])
def test_bad_input_is_one_line_before_any_rank_starts(cli, args, msg, monkeypatch):
    from bpbench.measure import distributed
    monkeypatch.setattr(distributed, "launch", lambda *a: pytest.fail("ranks were started"))
    r = cli("run", *args)
    assert r.exit_code == 2, r.stdout
    assert r.stderr.strip().splitlines() == [f"bpbench: error: {r.stderr.split('error: ', 1)[1].strip()}"]
    assert msg in r.stderr


def test_nccl_or_cuda_without_gpus_is_bad_input(cli):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for args in (["--device", "cuda"], ["--device", "cuda", "--backend", "nccl"]):
        r = cli("run", "mnist01", "--variant", "ddp", "--nproc", "2", *args)
        assert r.exit_code == 2 and "CUDA is not available" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("args,msg", [
    (["mnist01", "--variant", "ddp", "--nproc", "2", "--batch-size", "12664"],   # 12,665 = 12,664 + 1
     "--nproc 2 is more ranks than the last batch of each epoch (after the full ones of 12664) has samples (1)"),
])
def test_bad_input_found_by_the_ranks_is_one_line_too(cli, args, msg):
    """What only the data reveals is found by every rank alike; the launcher reports it once."""
    r = cli("run", *args)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [f"bpbench: error: {msg}; every rank needs at least one: "
                                             "use fewer ranks or another batch size"]


def test_divergence_ends_every_rank_exit_3(cli, tmp_path):
    """lr 1 diverges on seed 000's line at epoch 17 in one process; 2 ranks sum the same global
    loss, so both see it at the same epoch, stop together and keep the partial result."""
    out = tmp_path / "r.json"
    r = cli("run", "linreg", "--variant", "allreduce", "--nproc", "2", "--lr", "1", "--output", out)
    assert r.exit_code == 3
    assert r.stderr.strip().splitlines()[-1] == "bpbench: error: loss became inf at epoch 17: the run " \
                                                 "diverged (try a smaller --lr)"
    saved = json.loads(out.read_text())
    assert saved["status"] == "diverged" and saved["history"][-1]["epoch"] == 17
    assert saved["distributed"]["world_size"] == 2


def test_a_launch_leaves_no_folder_in_the_temp_dir(cli, tmp_path, monkeypatch):
    """torch elastic's logs and error files go to a folder of the launch's own, removed with it
    (by default each launch left a torchelastic_* folder in the temp dir)."""
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.json("run", "linreg", "--variant", "allreduce", "--nproc", "2", "--epochs", "3")["status"] == "ok"
    # (torch's own compile cache, torchinductor_USER, is a cache meant to stay)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("torchinductor_")] == []


def test_a_launch_removes_the_folders_of_killed_launchers(cli, tmp_path, monkeypatch):
    """A SIGKILLed launcher runs no cleanup: the next launch removes its folder (named after its
    pid, which no longer lives), never one of a launcher that still runs."""
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / f"bpbench-launch-{gone.pid}-abcd" / "attempt_0").mkdir(parents=True)
    (tmp_path / f"bpbench-launch-{os.getpid()}-live").mkdir()
    (tmp_path / "bpbench-launch-notapid").mkdir()
    assert cli.json("run", "linreg", "--variant", "allreduce", "--nproc", "2", "--epochs", "3")["status"] == "ok"
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith("bpbench-")} == \
        {"bpbench-launch-notapid", f"bpbench-launch-{os.getpid()}-live"}


@pytest.mark.parametrize("env,msg", [
    ({"LOCAL_RANK": "0"}, "TORCHELASTIC_RUN_ID is set, as torchrun sets it for its ranks, but RANK, WORLD_SIZE, "
                          "LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not: start the run with torchrun, "
                          "or unset TORCHELASTIC_RUN_ID"),
    ({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "localhost",
      "MASTER_PORT": "29500"}, "torchrun's WORLD_SIZE must be a non-negative integer, got 'two'"),
    ({"RANK": "3", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "localhost",
      "MASTER_PORT": "29500"}, "torchrun's environment does not describe a world (RANK 3 of WORLD_SIZE 2"),
])
def test_a_partial_torchrun_environment_is_one_line(cli, monkeypatch, env, msg):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "leftover")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = cli("run", "mnist01", "--variant", "ddp")
    assert r.exit_code == 2 and r.stderr.startswith(f"bpbench: error: {msg}") and r.stderr.count("\n") == 1, r.stderr


# ---------------------------------------------------------------- failures of a running job

LONG_RUN = ["run", "mnist01", "--variant", "ddp", "--nproc", "2", "--batch-size", "64", "--epochs", "100000"]


def _all_gone(processes, within=5.0) -> bool:
    gone, alive = psutil.wait_procs(processes, timeout=within)
    return not alive


def test_a_rank_that_dies_stops_every_rank_and_is_named(cli):
    """Rank 1 is SIGKILLed while training: rank 0's collective breaks, the launcher stops it and
    names rank 1 (not rank 0, whose error only says its peer vanished)."""
    seen: dict = {}

    def kill_rank_1():
        me = psutil.Process()
        deadline = time.time() + 60
        while time.time() < deadline:
            ranks = {p.name(): p for p in me.children()}     # ranks are named after themselves
            if "bpbench:rank1" in ranks:
                time.sleep(1.0)                              # setup done: into the training loop
                seen["family"] = me.children(recursive=True)
                seen["t"] = time.time()
                ranks["bpbench:rank1"].kill()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank_1)
    killer.start()
    r = cli(*LONG_RUN)
    killer.join()
    assert time.time() - seen["t"] < 10
    assert r.exit_code == 1
    assert r.stderr == "bpbench: error: rank 1 was killed by SIGKILL; the launcher stopped every other rank\n"
    assert _all_gone(seen["family"])   # no hung rank, no orphaned RSS monitor


def _start_long_run(*extra, **popen):
    """`bpbench run` in a subprocess, returned once rank 0 has logged its first epoch."""
    proc = subprocess.Popen([sys.executable, "-m", "bpbench", *LONG_RUN, "--log-every", "1", *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    assert proc.stdout.readline().startswith("Epoch [1/100000]")
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda: out.extend(proc.stdout)),   # keep the pipes flowing
               threading.Thread(target=lambda: err.extend(proc.stderr))]
    for t in readers:
        t.start()
    return proc, psutil.Process(proc.pid).children(recursive=True), readers, (out, err)


@pytest.mark.e2e
@pytest.mark.parametrize("to,sig", [("launcher", signal.SIGTERM), ("process group", signal.SIGINT)])
def test_ctrl_c_or_sigterm_keeps_what_rank_0_finished(tmp_path, to, sig):
    """As in one process: the epochs rank 0 finished are shown and written to --output (status
    "interrupted"), exit 130, whether the signal reaches the launcher alone (kill) or every rank
    too (Ctrl-C in a terminal); every rank stops, and the launch leaves no folder in the temp dir
    (torch elastic's torchelastic_* logs would stay there)."""
    temp, out = tmp_path / "tmp", tmp_path / "r.json"
    temp.mkdir()
    proc, family, readers, (stdout, stderr) = _start_long_run(
        "--output", out, env={**os.environ, "TMPDIR": str(temp)}, start_new_session=True)
    (os.killpg if to == "process group" else os.kill)(proc.pid, sig)
    proc.wait(timeout=30)
    for t in readers:
        t.join(timeout=10)
    assert _all_gone(family)
    assert proc.returncode == 130 and len(stderr) == 1 and stderr[0].startswith("bpbench: error: interrupted in epoch ")
    kept = json.loads(out.read_text())
    assert kept["status"] == "interrupted" and kept["distributed"]["world_size"] == 2
    assert [h["epoch"] for h in kept["history"]] == list(range(1, len(kept["history"]) + 1)) and kept["history"]
    assert any("INTERRUPTED" in line for line in stdout) and f"result written to {out}\n" in stdout
    assert list(temp.iterdir()) == []


@pytest.mark.e2e
def test_a_killed_launcher_leaves_no_orphans():
    proc, family, readers, _ = _start_long_run()
    proc.kill()
    proc.wait(timeout=10)
    assert len(family) == 2 and _all_gone(family)    # 2 ranks (peak RSS is the kernel's mark: no monitor process)


# ---------------------------------------------------------------- the torchrun form

def _cli_rank(args):
    """A rank started by torch elastic's agent, as torchrun would (RANK, LOCAL_RANK, ... set),
    running the `bpbench` command line in-process."""
    from typer.testing import CliRunner

    from bpbench.cli import app
    r = CliRunner().invoke(app, args)
    return r.exit_code, r.stdout, r.stderr


def test_under_torchrun_bpbench_is_one_rank_of_its_world(tmp_path):
    """What `torchrun --nproc-per-node 2 -m bpbench run ...` does, minus starting new interpreters
    (torchrun's agent and environment, ranks forked): rank 0 prints the one result."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    # torchrun's own log folder (it is the launcher here, not bpbench) goes in the test's tmp_path.
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="test-torchrun", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, start_method="fork",
                          logs_specs=DefaultLogsSpecs(log_dir=str(tmp_path)))
    out = elastic_launch(config, _cli_rank)(["run", "linreg", "--variant", "allreduce", "--epochs", "20", "--json"])
    (code0, stdout0, _), (code1, stdout1, _) = out[0], out[1]
    assert (code0, code1) == (0, 0) and stdout1 == ""
    r = json.loads(stdout0)
    assert r["distributed"]["launcher"] == "torchrun" and r["distributed"]["world_size"] == 2
    assert r["final"]["params"] == pytest.approx({"w": 2.037538766860962, "b": 0.7116230726242065}, abs=1e-5)
    bad = elastic_launch(config, _cli_rank)(["run", "linreg", "--variant", "ddp", "--nproc", "3"])
    assert bad[0][0] == 2 and "under torchrun the ranks are torchrun's (--nproc-per-node 2)" in bad[0][2]


# ---------------------------------------------------------------- the scaling study

def test_scaling_plans_strong_and_weak_cells_up_to_the_cores(monkeypatch):
    monkeypatch.setattr(scaling, "usable_cores", lambda: 6)
    assert scaling.default_nprocs("cpu") == [1, 2, 4, 6]
    cells = scaling.plan(["cpu"], [], {"weak_batch": 100, "updates": 7}, {"nprocs": [1, 2]})
    got = [(c.tag, c.variant, dict(c.overrides)["batch_size"], dict(c.overrides)["nproc"]) for c in cells]
    assert got == [("strong N=1", "ddp", "full", 1), ("strong N=2", "ddp", "full", 2),
                   ("weak N=1", "ddp", 100, 1), ("weak N=2", "ddp", 200, 2)]
    assert all(dict(c.overrides)["updates"] == 7 for c in cells)
    assert scaling.plan(["cpu"], ["allreduce"], {}, {"nprocs": [2]})[0].variant == "allreduce"


def test_scaling_table_speedup_and_efficiency():
    def cell(mode, n, step, batch):
        run = {"distributed": {"global_batch": batch, "per_rank_batch": batch // n, "comm_s_median": step / 4,
                               "comm_share": 0.25}, "env": {"cpu_count": 2, "threads": 1}}
        return {"study": "scaling", "status": "ok", "device": "cpu", "variant": "ddp", "label": f"{mode} N={n}",
                "overrides": {"nproc": n}, "runs": [run], "summary": {"step_s_median": step}}
    t = scaling.derive([cell("strong", 1, 4e-3, 12665), cell("strong", 2, 2.5e-3, 12665),
                       cell("weak", 1, 1e-3, 128), cell("weak", 2, 1.25e-3, 256)])
    rows = {(r["mode"], r["nproc"]): r for r in t["rows"]}
    assert rows["strong", 2]["speedup"] == pytest.approx(1.6) and rows["strong", 2]["efficiency"] == pytest.approx(0.8)
    assert rows["weak", 2]["efficiency"] == pytest.approx(0.8) and rows["weak", 2]["speedup"] == pytest.approx(1.6)
    assert rows["weak", 2]["samples_per_s"] == pytest.approx(256 / 1.25e-3)
    assert rows["strong", 1]["efficiency"] == 1.0


def test_scaling_set_must_not_override_what_it_varies(cli):
    r = cli("compare", "scaling", "--set", "nproc=2")
    assert r.exit_code == 2 and "the scaling study sets nproc itself (use --nprocs" in r.stderr
    r = cli("compare", "scaling", "--variant", "manual")
    assert r.exit_code == 2 and "trains with a distributed variant (ddp, allreduce)" in r.stderr


def test_compare_scaling(cli, tmp_path, in_process_cells, quiet_machine):
    out = tmp_path / "s"
    r = cli("compare", "scaling", "--nprocs", "1,2", "--updates", "8", "--output-dir", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads((out / "results.json").read_text())
    # each ddp cell after its parity reference (autograd, one process, the same global batches),
    # one reference for both strong cells (one global batch)
    ddp = [c for c in doc["cells"] if c["variant"] == "ddp"]
    assert [c["label"] for c in ddp] == ["strong N=1, batch=full", "strong N=2, batch=full",
                                         "weak N=1, batch=128", "weak N=2, batch=256"]
    assert [c["variant"] for c in doc["cells"]] == ["autograd", "ddp", "ddp", "autograd", "ddp", "autograd", "ddp"]
    assert [c["label"] for c in doc["cells"] if c["variant"] == "autograd"] == \
        ["1 process, batch=full", "1 process, batch=128", "1 process, batch=256"]
    assert "mismatch" not in r.stdout        # each ddp cell was checked as it finished
    assert all(c["status"] == "ok" and c["runs"][0]["distributed"]["world_size"] == c["overrides"]["nproc"]
               for c in ddp)
    assert all(c["status"] == "ok" for c in doc["cells"])     # every ddp cell matched its reference
    rows = doc["scaling"]["rows"]
    assert [(x["mode"], x["nproc"], x["global_batch"], x["per_rank_batch"]) for x in rows] == \
        [("strong", 1, 12665, 12665), ("strong", 2, 12665, 6333), ("weak", 1, 128, 128), ("weak", 2, 256, 128)]
    assert all(x["efficiency"] > 0 and x["comm_s"] > 0 for x in rows)
    assert "scaling study: ddp" in r.stdout and "efficiency" in r.stdout
    from bpbench.report import plots
    if plots.available():
        assert (out / "scaling.png").stat().st_size > 1000


@pytest.mark.parametrize("level", ["info", "", "verbose"])
def test_a_loglevel_torch_elastic_cannot_take_is_one_line(cli, monkeypatch, level):
    """torch elastic passes $LOGLEVEL to logging as it is when imported ("info": a traceback)."""
    monkeypatch.setenv("LOGLEVEL", level)
    r = cli("run", "linreg", "--variant", "allreduce", "--nproc", "2")
    assert r.exit_code == 2 and r.stderr == (f"bpbench: error: LOGLEVEL={level!r} is not a logging level (torch "
                                             "elastic reads it): use one of CRITICAL, FATAL, ERROR, WARN, WARNING, "
                                             "INFO, DEBUG, NOTSET, or unset it\n")


@pytest.mark.parametrize("value,msg", [("abc", "must be a positive integer, got 'abc'"),
                                       ("100000", "must be at most ")])
def test_omp_num_threads_for_the_ranks_is_checked_before_they_start(cli, monkeypatch, value, msg):
    """Each rank takes OMP_NUM_THREADS threads: text was a ValueError traceback, 100,000 a rank
    failing with "Resource temporarily unavailable"."""
    from bpbench.measure import distributed
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr(distributed, "_run_ranks", lambda *a: pytest.fail("ranks were started"))
    r = cli("run", "linreg", "--variant", "allreduce", "--nproc", "2")
    assert r.exit_code == 2 and r.stderr.startswith(f"bpbench: error: OMP_NUM_THREADS {msg}") and \
        r.stderr.count("\n") == 1
