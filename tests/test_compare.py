"""bpbench compare and report: the matrix, studies, files, baselines, failures and Ctrl-C."""

import copy
import csv
import json
import signal
import subprocess
import sys
import time

import pytest

from bpbench import compare as cmp
from bpbench import plots


def read(dir_):
    doc = json.loads((dir_ / "results.json").read_text())
    with (dir_ / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return doc, rows


@pytest.mark.e2e
def test_quick_preset_end_to_end(tmp_path):
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, "-m", "bpbench", "compare", "--preset", "quick", "--output-dir", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc, rows = read(out)
    keys = {(c["experiment"], c["variant"]) for c in doc["cells"]}
    assert keys == {("linreg", "manual"), ("linreg", "autograd"), ("linreg", "nn"), ("bce", "manual"),
                    ("bce", "autograd"), ("mnist01", "manual"), ("mnist01", "autograd"), ("width", "autograd")}
    assert all(c["status"] == "ok" for c in doc["cells"]) and len(rows) == len(doc["cells"])
    assert doc["isolation"].startswith("fresh process per cell")
    linreg = {c["variant"]: c["summary"] for c in doc["cells"] if c["experiment"] == "linreg"}
    assert linreg["manual"]["speed_vs_manual"] == 1.0
    assert linreg["autograd"]["speed_vs_manual"] == pytest.approx(
        linreg["manual"]["step_s_median"] / linreg["autograd"]["step_s_median"])
    assert "vs manual" in r.stdout and "linreg on cpu: fastest per step is" in r.stdout
    if plots.available():
        assert (out / "loss_linreg.png").stat().st_size > 1000 and (out / "width.png").exists()


def test_report_round_trip(cli, tmp_path):
    out = tmp_path / "c"
    r = cli("compare", "bce", "--variant", "manual", "--output-dir", out, "--set", "epochs=20", "--repeat", "2")
    assert r.exit_code == 0, r.stderr
    doc, rows = read(out)
    assert len(doc["cells"][0]["runs"]) == 2 and doc["cells"][0]["summary"]["repeats"] == 2
    again_vs_first = cli("compare", "bce", "--variant", "manual", "--set", "epochs=20", "--json",
                         "--baseline", out / "results.json")
    s = json.loads(again_vs_first.stdout)["cells"][0]["summary"]
    assert "baseline_change" in s and isinstance(s["baseline_significant"], bool)
    assert rows[0]["key"] == doc["cells"][0]["key"] == "matrix:bce/manual/cpu/data=xor"
    assert float(rows[0]["step_s_median"]) == pytest.approx(doc["cells"][0]["summary"]["step_s_median"])
    again = cli("report", out / "results.json", "--json")
    assert json.loads(again.stdout)["cells"] == doc["cells"]
    shown = cli("report", out / "results.json")
    assert "bce" in shown.stdout and "manual" in shown.stdout


def test_baseline_marks_changes_beyond_noise(cli, tmp_path):
    doc = {"schema": 1, "kind": "comparison", "preset": "quick", "notes": [], "planned": [], "cells": [
        {"key": k, "study": "matrix", "experiment": "linreg", "variant": v, "device": "cpu", "label": "",
         "status": "ok", "error": None, "runs": [], "overrides": {},
         "summary": {"step_s_median": s, "step_s_iqr": s * 0.01, "noise": 0.01}}
        for k, v, s in (("matrix:linreg/manual/cpu", "manual", 1e-4), ("matrix:linreg/nn/cpu", "nn", 3e-4))]}
    new = copy.deepcopy(doc)
    new["cells"][0]["summary"]["step_s_median"] = 1.5e-4       # 50 % slower: beyond noise
    new["cells"][1]["summary"]["step_s_median"] = 3.03e-4      # +1 %: within noise
    cmp.derive(new["cells"], doc)
    s0, s1 = new["cells"][0]["summary"], new["cells"][1]["summary"]
    assert s0["baseline_change"] == pytest.approx(0.5) and s0["baseline_significant"] is True
    assert s1["baseline_change"] == pytest.approx(0.01) and s1["baseline_significant"] is False
    (tmp_path / "old.json").write_text(json.dumps(doc))
    (tmp_path / "new.json").write_text(json.dumps(new))
    r = cli("report", tmp_path / "new.json", "--baseline", tmp_path / "old.json")
    assert r.exit_code == 0 and "+50.0% slower" in r.stdout and "+1.0%" in r.stdout


def test_unavailable_device_and_failing_cell(cli, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "c"
    r = cli("compare", "linreg", "bce", "--variant", "manual", "--device", "all", "--set", "lr=1",
            "--set", "epochs=300", "--output-dir", out)
    assert r.exit_code == 0, r.stderr
    doc, rows = read(out)
    status = {c["key"]: c["status"] for c in doc["cells"]}
    assert status["matrix:linreg/manual/cuda"] == "unavailable"
    assert status["matrix:linreg/manual/cpu"] == "diverged"       # lr 1 diverges on line4
    assert status["matrix:bce/manual/cpu/data=xor"] == "ok"        # ... and the rest still runs
    failed = next(c for c in doc["cells"] if c["status"] == "diverged")
    assert "epoch 17" in failed["error"] and failed["runs"][0]["status"] == "diverged"
    assert "CUDA is not available" in " ".join(doc["notes"])
    only_cuda = cli("compare", "--device", "cuda")
    assert only_cuda.exit_code == 2 and "CUDA is not available" in only_cuda.stderr


@pytest.mark.parametrize("args,msg", [(["compare", "nope"], "unknown experiment"),
                                      (["compare", "--preset", "huge"], "unknown preset"),
                                      (["compare", "--variant", "zzz"], "unknown variant"),
                                      (["compare", "--repeat", "0"], "--repeat"),
                                      (["compare", "--device", "tpu"], "unknown device"),
                                      (["compare", "width", "--widths", "10,-1"], "--widths"),
                                      (["compare", "bce", "--set", "init=zeros"], "init"),
                                      (["report", "/no/such/results.json"], "not found")])
def test_compare_bad_input(cli, args, msg):
    r = cli(*args)
    assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_verdicts_do_not_call_noise_a_winner():
    from bpbench.report import verdicts

    def cell(variant, step, noise):
        return {"study": "matrix", "experiment": "mnist01", "label": "", "device": "cpu", "status": "ok",
                "variant": variant, "summary": {"step_s_median": step, "noise": noise}}
    close = verdicts([cell("manual", 2.23e-3, 0.09), cell("autograd", 2.14e-3, 0.15)])
    assert close == ["[bold]mnist01 on cpu[/]: no variant is clearly faster per step "
                     "(autograd 2.14 ms, manual 2.23 ms: within the measured noise)"]
    clear = verdicts([cell("manual", 60e-6, 0.1), cell("autograd", 290e-6, 0.1), cell("nn", 63e-6, 0.02)])
    assert clear == ["[bold]mnist01 on cpu[/]: fastest per step is manual (60 µs); nn within noise, "
                     "autograd 4.8x slower"]


GOOD_DOC = {"schema": 1, "kind": "comparison", "preset": "quick", "notes": [], "planned": [], "cells": []}
CELL = {"key": "matrix:bce/manual/cpu", "study": "matrix", "experiment": "bce", "variant": "manual",
        "device": "cpu", "label": "", "overrides": {}, "status": "ok", "error": None}


@pytest.mark.parametrize("doc,msg", [
    ({**GOOD_DOC, "schema": 99}, "schema 99"),
    ({k: v for k, v in GOOD_DOC.items() if k != "preset"}, "missing preset"),
    ({**GOOD_DOC, "cells": [{"key": "x"}]}, "missing cells[0].study"),
    ({**GOOD_DOC, "cells": [{**CELL, "runs": "oops"}]}, "cells[0].runs (a list"),
    ({**GOOD_DOC, "cells": [{**CELL, "runs": [{"schema": 1, "timing": 3}]}]}, "cells[0].runs[0]."),
    ({**GOOD_DOC, "cells": {}}, "is not a bpbench comparison"),
])
def test_report_rejects_incomplete_comparisons(cli, tmp_path, doc, msg):
    f = tmp_path / "results.json"
    f.write_text(json.dumps(doc))
    r = cli("report", f)
    assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_width_study(cli, tmp_path):
    d = json.loads(cli("compare", "width", "--widths", "16,64", "--steps", "30", "--json").stdout)
    rows = d["width"]["rows"]
    assert [r["width"] for r in rows] == [16, 64] and all(r["cpu_step_s"] > 0 for r in rows)
    assert d["width"]["crossover_width"] is None   # no CUDA cells on a CPU-only run


def test_studies_default_to_the_sources_settings():
    """`compare width` alone runs seed 004's study (H = 500 ... 200,000, 1000 Adam steps);
    the matrix defaults to the quick smoke run."""
    assert cmp.default_preset(["width"]) == cmp.default_preset(["width", "gd-sgd"]) == "full"
    assert cmp.default_preset([]) == cmp.default_preset(["width", "bce"]) == "quick"
    cells = cmp.plan(["width"], ["cpu"], [], cmp.load_preset(cmp.default_preset(["width"])))
    runs = [dict(c.overrides) for c in cells]
    assert [r["width"] for r in runs] == [500, 2000, 10000, 50000, 200000]
    assert {r["epochs"] for r in runs} == {1000}
    full = cmp.load_preset("full")
    gd = [dict(c.overrides) for c in cmp.plan(["gd-sgd"], ["cpu"], [], full) if c.label == "batch=full"][0]
    assert (gd["updates"], gd["eval_every"]) == (700, 35)
    gd = [dict(c.overrides) for c in cmp.plan(["gd-sgd"], ["cpu"], [], full, updates=140)
          if c.label == "batch=full"][0]
    assert (gd["updates"], gd["eval_every"]) == (140, 7)     # still ~20 points on the GD curve


def test_gd_sgd_at_equal_updates(cli, tmp_path):
    r = cli("compare", "gd-sgd", "--updates", "14", "--batch-sizes", "full,2048,16384", "--output-dir", tmp_path)
    assert "16384 (= full)" in r.stdout and "holds all 12,665 training images" in r.stdout
    d, _ = read(tmp_path)
    rows = {r["batch_size"]: r for r in d["gd_sgd"]["rows"]}
    assert rows["full"]["updates"] == rows[2048]["updates"] == rows[16384]["updates"] == 14
    assert rows["full"]["epochs"] == 14 and rows[2048]["epochs"] == 2     # 7 updates per epoch
    # the shipped training split has 12,665 images: a batch of 16384 is gradient descent again
    assert [rows[b]["covers_train_set"] for b in ("full", 2048, 16384)] == [True, False, True]
    assert rows[16384]["final_loss"] == rows["full"]["final_loss"]
    if plots.available():
        assert (tmp_path / "gd_sgd.png").stat().st_size > 0
    assert all(p["test_accuracy"] is not None for p in rows[2048]["curve"])


def test_without_matplotlib_says_how_to_get_plots(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    r = cli("compare", "bce", "--variant", "manual", "--set", "epochs=5", "--output-dir", tmp_path)
    assert r.exit_code == 0 and "pip install 'bpbench[plot]'" in r.stderr
    assert (tmp_path / "results.json").exists() and not list(tmp_path.glob("*.png"))


@pytest.mark.e2e
def test_interrupt_keeps_finished_cells(tmp_path):
    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "bpbench", "compare", "linreg", "bce", "mnist01",
                             "--output-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        f = out / "results.json"
        if f.exists() and json.loads(f.read_text())["cells"]:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    doc, rows = read(out)
    assert doc["interrupted"] is True and 1 <= len(doc["cells"]) < len(doc["planned"])
    assert all(c["status"] == "ok" for c in doc["cells"]) and len(rows) == len(doc["cells"])
    assert "INTERRUPTED" in stdout
    assert not list(out.glob(".*tmp*"))
