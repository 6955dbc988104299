"""The command line: bad input, JSON schema, config precedence, output files, startup cost."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bpbench import experiments
from bpbench.results import files as results

BAD_INPUT = [
    (["run", "nope"], "unknown experiment"),
    (["run", "linreg", "--variant", "zzz"], "unknown variant"),
    (["run", "linreg", "--manual", "--autograd"], "choose one variant"),
    (["run", "linreg", "--device", "tpu"], "unknown --device"),
    (["run", "linreg", "--batch-size", "0"], "--batch-size"),
    (["run", "linreg", "--batch-size", "many"], "--batch-size"),
    (["run", "linreg", "--epochs", "0"], "epochs"),
    (["run", "linreg", "--epochs", "-3"], "epochs"),
    (["run", "linreg", "--epochs", "abc"], "--epochs"),
    (["run", "linreg", "--lr", "0"], "lr"),
    (["run", "linreg", "--lr", "-0.1"], "lr"),
    (["run", "linreg", "--lr", "nan"], "lr"),
    (["run", "linreg", "--lr", "inf"], "lr"),
    (["run", "linreg", "--config", "/no/such/file.toml"], "config file not found"),
    (["run", "linreg", "--data", "nowhere"], "unknown data set"),
    (["run", "linreg", "--data", "/no/such.csv"], "data file not found"),
    (["run", "linreg", "--trace"], "--trace"),
    (["run", "linreg", "--loader", "resident"], "does not apply"),
    (["run", "linreg", "--set", "nonsense"], "KEY=VALUE"),
    (["run", "linreg", "--set", "colour=blue"], "does not take colour"),
    (["run", "linreg", "--no-such-flag"], "No such option"),
    (["run", "mnist01", "--loader", "magic"], "loader"),
    (["run", "linreg", "--init", "ones"], "init"),
]


@pytest.mark.parametrize("args,msg", BAD_INPUT)
def test_bad_input_is_one_line_exit_2(cli, args, msg):
    r = cli(*args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpbench: error:"), r.stderr
    assert msg in lines[0]
    assert "Traceback" not in r.stderr


def test_cuda_without_cuda_says_so(cli):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli("run", "linreg", "--device", "cuda")
    assert r.exit_code == 2 and "CUDA is not available" in r.stderr


@pytest.mark.parametrize("content,msg", [("lr = [", "not valid TOML"), ("colour = 1", "unknown key 'colour'"),
                                         ("epochs = 0", "epochs"), ("lr = 'fast'", "lr"),
                                         ("[linreg]\nlr = 1", "unknown key")])
def test_bad_config_files(cli, tmp_path, content, msg):
    f = tmp_path / "c.toml"
    f.write_text(content)
    r = cli("run", "linreg", "--config", f)
    assert r.exit_code == 2 and msg in r.stderr


@pytest.mark.parametrize("content", ["", "x,y\n", "x,y\n1,2\n3,oops\n", "a,b\n1,2\n", "x,y\n1,nan\n"])
def test_bad_csv(cli, tmp_path, content):
    f = tmp_path / "d.csv"
    f.write_text(content)
    r = cli("run", "linreg", "--data", f)
    assert r.exit_code == 2 and str(f) in r.stderr


def test_config_precedence(cli, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("lr = 0.02\nepochs = 7\n")
    built_in = cli.json("run", "linreg")["config"]
    from_file = cli.json("run", "linreg", "--config", f)["config"]
    flag = cli.json("run", "linreg", "--config", f, "--epochs", "3")["config"]
    assert (built_in["lr"], built_in["epochs"]) == (0.01, 1000)
    assert (from_file["lr"], from_file["epochs"]) == (0.02, 7)
    assert (flag["lr"], flag["epochs"]) == (0.02, 3)
    # The data set picks its own defaults (seed 003: lr 0.001, 10000 epochs) unless overridden.
    s = cli.json("run", "linreg", "--data", "scatter30", "--epochs", "5")["config"]
    assert (s["lr"], s["epochs"]) == (0.001, 5)


def test_json_schema(cli):
    d = cli.json("run", "linreg", "--epochs", "50")
    assert results.missing_keys(d) == []
    assert d["schema"] == 1 and d["experiment"] == "linreg" and d["variant"] == "manual" and d["device"] == "cpu"
    assert set(d["final"]["params"]) == {"w", "b"}
    assert d["history"][0] == {"epoch": 1, "loss": d["history"][0]["loss"], "updates": 1}
    t = d["timing"]
    assert t["steps"] == 50 and t["warmup_steps"] == 5 and t["step_s_median"] > 0 and t["samples_per_s"] > 0
    assert t["total_s"] >= t["setup_s"] + t["train_s"]
    assert d["memory"]["rss_peak_mib"] >= d["memory"]["rss_start_mib"] > 0
    assert d["memory"]["cuda_peak_allocated_mib"] is None and d["env"]["cuda_device"] is None
    assert d["env"]["torch"] and d["env"]["threads"] >= 1


@pytest.mark.parametrize("name", list(experiments.REGISTRY))
def test_every_experiment_fills_the_schema(cli, name):
    d = cli.json("run", name, "--epochs", "3")
    assert results.missing_keys(d) == [], name


def test_json_is_exactly_one_object_and_logs_go_to_stderr(cli):
    r = cli("run", "linreg", "--json", "--log-every", "100")
    assert r.exit_code == 0
    json.loads(r.stdout)
    assert "Epoch [100/1000], Loss: 0.0076" in r.stderr


def test_log_every_prints_like_the_source(cli):
    out = cli("run", "linreg", "--manual", "--log-every", "100").stdout
    assert "Epoch [100/1000], Loss: 0.0076" in out and "Epoch [1000/1000], Loss: 0.0000" in out
    assert "2.004861" in out


def test_output_file_and_same_command_same_numbers(cli, tmp_path):
    out = tmp_path / "sub" / "r.json"
    r = cli("run", "linreg", "--data", "scatter30", "--batch-size", "5", "--epochs", "30", "--output", out)
    assert r.exit_code == 0 and f"result written to {out}" in r.stdout
    assert r.stderr == ""          # no progress bar when stdout is not a terminal
    first = json.loads(out.read_text())
    cli("run", "linreg", "--data", "scatter30", "--batch-size", "5", "--epochs", "30", "--output", out)
    second = json.loads(out.read_text())
    assert first["history"] == second["history"] and first["final"] == second["final"]
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]   # no temp file left behind
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()         # an ordinary file, not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("cmd", [["run", "linreg", "--output"], ["compare", "bce", "--output-dir"],
                                 ["report", "{results}", "--plot-dir"]])
def test_unwritable_output_fails_before_any_work(cli, tmp_path, monkeypatch, cmd):
    from bpbench import api
    from bpbench import comparison as compare
    from bpbench.report import plots
    results_file = tmp_path / "results.json"
    results.write_json(results_file, {"schema": 1, "kind": "comparison", "preset": "quick", "notes": [],
                                      "planned": [], "cells": []})
    for module, name in ((api, "execute"), (compare, "execute"), (plots, "write_all")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("work started before the check"))
    blocker = tmp_path / "a-file"             # a file where a directory should be
    blocker.write_text("")
    args = [str(results_file) if a == "{results}" else a for a in cmd]
    r = cli(*args, blocker / "out")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "cannot write" in r.stderr, r.stderr


def test_divergence_exits_3_and_keeps_what_it_has(cli, tmp_path):
    out = tmp_path / "d.json"
    r = cli("run", "linreg", "--lr", "1", "--output", out)
    assert r.exit_code == 3
    assert "diverged" in r.stderr and "epoch 17" in r.stderr and "Traceback" not in r.stderr
    d = json.loads(out.read_text())
    assert d["status"] == "diverged" and d["history"][-1]["epoch"] == 17
    assert d["history"][-1]["loss"] is None and d["final"]["loss"] is None   # strict JSON: inf -> null
    # every epoch before the divergence has a real, finite number (NaN would have become null)
    assert all(isinstance(h["loss"], float) and math.isfinite(h["loss"]) for h in d["history"][:-1])


def test_profile_lines_shows_memory_profiler_table(cli):
    r = cli("run", "linreg", "--epochs", "20", "--profile-lines")
    assert r.exit_code == 0, r.stderr
    assert "Mem usage" in r.stdout and "Increment" in r.stdout and "dw = 2 * x.t().mm(predictions - y)" in r.stdout


def test_list_and_version(cli):
    r = cli("list", "--json")
    names = [e["name"] for e in json.loads(r.stdout)]
    assert names == list(experiments.REGISTRY)
    assert "seed 002" in cli("list").stdout
    assert cli("--version").stdout.strip().startswith("bpbench 0.")


def bpbench_exe() -> str:
    exe = Path(sys.executable).with_name("bpbench")
    return str(exe) if exe.exists() else shutil.which("bpbench")


@pytest.mark.e2e
@pytest.mark.parametrize("args", [["--help"], ["list"]])
def test_help_and_list_do_not_import_torch(args):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "bpbench", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert "typer" in imported and "torch" not in imported


@pytest.mark.e2e
def test_installed_command_end_to_end(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([bpbench_exe(), "run", "linreg", "--manual", "--output", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["final"]["params"]["w"] == pytest.approx(2.0048611164093018, abs=1e-6)
    r = subprocess.run([bpbench_exe(), "run", "nope"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.mark.e2e
def test_python_dash_m_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bpbench", "run", "bce", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert json.loads(r.stdout)["trace"]["forward"]["loss"] == pytest.approx(0.536884, abs=5e-7)
