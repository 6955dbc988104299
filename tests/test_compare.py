"""bpbench compare and report: the matrix, studies, files, baselines, failures and Ctrl-C."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
from synthetic import AA, aa_doc, cell, document, run_result, write

from bpbench import comparison as cmp
from bpbench.report import plots


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
    if not (linreg["manual"]["contended"] or linreg["autograd"]["contended"]):
        assert linreg["manual"]["speed_vs_manual"] == 1.0
        assert linreg["autograd"]["speed_vs_manual"] == pytest.approx(
            linreg["manual"]["step_s_median"] / linreg["autograd"]["step_s_median"])
    else:   # a machine this busy: the cells measured the queue, and no ratio is drawn from them
        assert linreg["autograd"].get("speed_vs_manual") is None
        assert "not comparable: measured on a busy machine" in r.stdout
    assert "manual" in r.stdout and "linreg on cpu: " in r.stdout
    assert all(row["contended"] in ("True", "False") for row in rows)
    assert all(len(run["timing"]["step_s_all"]) == run["timing"]["steps"] - run["timing"]["warmup_steps"]
               for c in doc["cells"] for run in c["runs"])
    if plots.available():
        assert (out / "loss_linreg.png").stat().st_size > 1000 and (out / "width.png").exists()
        assert (out / "steps_mnist01.png").exists()


def test_report_round_trip(cli, tmp_path, in_process_cells):
    out = tmp_path / "c"
    r = cli("compare", "bce", "--variant", "manual", "--output-dir", out, "--set", "epochs=20", "--repeat", "2")
    assert r.exit_code == 0, r.stderr
    doc, rows = read(out)
    assert len(doc["cells"][0]["runs"]) == 2 and doc["cells"][0]["summary"]["repeats"] == 2
    again_vs_first = cli("compare", "bce", "--variant", "manual", "--set", "epochs=20", "--json",
                         "--baseline", out / "results.json")
    s = json.loads(again_vs_first.stdout)["cells"][0]["summary"]
    assert "baseline_change" in s and isinstance(s["baseline_significant"], bool)
    assert rows[0]["key"] == doc["cells"][0]["key"] == "matrix:bce/manual/cpu/data=xor, epochs=20"
    assert float(rows[0]["step_s_median"]) == pytest.approx(doc["cells"][0]["summary"]["step_s_median"])
    again = cli("report", out / "results.json", "--json")
    assert json.loads(again.stdout)["cells"] == json.loads(json.dumps(doc["cells"]))
    shown = cli("report", out / "results.json")
    assert "bce" in shown.stdout and "manual" in shown.stdout


def test_baseline_marks_changes_beyond_noise(cli, tmp_path):
    """Recorded step times: the same code (A/A) is no change; the same steps 50 % slower is."""
    old = write(tmp_path / "old.json", aa_doc(0))
    same = write(tmp_path / "same.json", aa_doc(1))
    slower = write(tmp_path / "slower.json", aa_doc(1, scale=1.5))
    r = cli("report", same, "--baseline", old, "--json")
    assert r.exit_code == 0, r.stderr
    summaries = [c["summary"] for c in json.loads(r.stdout)["cells"]]
    assert all("baseline_change" in s and s["baseline_significant"] is False for s in summaries)
    assert max(abs(s["baseline_change"]) for s in summaries) > 0.3    # medians moved (a busy neighbour)
    r = cli("report", slower, "--baseline", old)
    assert r.exit_code == 0 and r.stdout.count("slower") >= 3, r.stdout


def test_regression_gate_exits_4_naming_each_slow_cell(cli, tmp_path):
    old = write(tmp_path / "old.json", aa_doc(0))
    slower = aa_doc(1, scale=1.5)
    slower["cells"][0]["runs"][0]["timing"]["step_s_all"] = AA["linreg_manual"]["runs"][1]   # this one unchanged
    new = write(tmp_path / "new.json", slower)
    r = cli("report", new, "--baseline", old, "--fail-on-regression", "10")
    assert r.exit_code == 4, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("bpbench: regression: matrix:") for line in lines)
    assert "mnist01/autograd" in lines[0] and "bce/autograd" in lines[1] and "slower than its baseline" in lines[0]
    assert cli("report", new, "--baseline", old, "--fail-on-regression", "80").exit_code == 0   # +50 % < 80 %
    assert cli("report", write(tmp_path / "aa.json", aa_doc(1)), "--baseline", old,
               "--fail-on-regression", "10").exit_code == 0                                 # A/A passes the gate


def test_baseline_matches_on_the_full_config_never_on_the_label(cli, tmp_path):
    """A 50-step run is not compared with a 200-step one, whatever their labels say."""
    old = write(tmp_path / "old.json", document([cell(run_result(config={"epochs": 200}, steps=[1e-4] * 200))]))
    new = write(tmp_path / "new.json", document([cell(run_result(config={"epochs": 50}, steps=[8e-5] * 50))]))
    d = json.loads(cli("report", new, "--baseline", old, "--json").stdout)
    assert "baseline_change" not in d["cells"][0]["summary"]
    assert "epochs 200 there, 50 here" in d["baseline"]["notes"][0]


def test_unavailable_device_and_failing_cell(cli, tmp_path, in_process_cells):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "c"
    r = cli("compare", "linreg", "bce", "--variant", "manual", "--device", "all", "--set", "lr=1",
            "--set", "epochs=300", "--output-dir", out)
    assert r.exit_code == 1, r.stderr          # a diverged cell fails the comparison ...
    assert r.stderr.strip().splitlines()[-1] == (
        "bpbench: error: 1 of 4 cell(s) failed, diverged or mismatched: matrix:linreg/manual/cpu/epochs=300, "
        "lr=1 (--keep-going exits 0 anyway)")
    doc, rows = read(out)
    status = {c["key"]: c["status"] for c in doc["cells"]}
    assert status["matrix:linreg/manual/cuda/epochs=300, lr=1"] == "unavailable"
    assert status["matrix:linreg/manual/cpu/epochs=300, lr=1"] == "diverged"       # lr 1 diverges on line4
    assert status["matrix:bce/manual/cpu/data=xor, epochs=300, lr=1"] == "ok"        # ... and the rest still runs
    failed = next(c for c in doc["cells"] if c["status"] == "diverged")
    assert "epoch 17" in failed["error"] and failed["runs"][0]["status"] == "diverged"
    assert "CUDA is not available" in " ".join(doc["notes"])
    only_cuda = cli("compare", "--device", "cuda")
    assert only_cuda.exit_code == 2 and "CUDA is not available" in only_cuda.stderr


def test_keep_going_exits_0_with_failed_cells(cli, tmp_path):
    """(Recorded documents: the exit code logic is the same for compare and report.)"""
    from bpbench.cli.compare import _verdict
    bad = document([cell(run_result(), status="diverged")])
    with pytest.raises(SystemExit) as e:
        _verdict(bad, keep_going=False, gate=False)
    assert e.value.code == 1
    _verdict(bad, keep_going=True, gate=False)       # returns: exit 0


@pytest.mark.parametrize("args,msg", [(["compare", "nope"], "unknown experiment"),
                                      (["compare", "--preset", "huge"], "unknown preset"),
                                      (["compare", "--variant", "zzz"], "unknown variant"),
                                      (["compare", "--repeat", "0"], "--repeat"),
                                      (["compare", "--device", "tpu"], "unknown device"),
                                      (["compare", "width", "--widths", "10,-1"], "--widths"),
                                      (["compare", "bce", "--set", "init=zeros"], "init"),
                                      # checked once, up front, as `run` checks them
                                      (["compare", "--set", "lr=-1"], "lr must be a positive finite number"),
                                      (["compare", "bce", "--set", "epochs=0"], "epochs must be a positive"),
                                      (["compare", "--set", "seed=many"], "seed must be an integer"),
                                      (["compare", "--set", "variant=nn"], "use --variant"),
                                      (["compare", "--set", "device=cuda"], "use --device"),
                                      (["compare", "width", "--set", "width=10"], "use --widths"),
                                      (["compare", "gd-sgd", "--set", "batch_size=8"], "use --batch-sizes"),
                                      # a flag that does not apply is bad input
                                      (["compare", "linreg", "--widths", "500"], "--widths applies only to the width study"),
                                      (["compare", "width", "--batch-sizes", "32"], "--batch-sizes applies only to the gd-sgd"),
                                      (["compare", "bce", "--steps", "5"], "--steps applies only"),
                                      (["compare", "width", "--updates", "5"], "--updates applies only"),
                                      (["compare", "--save", "a/b"], "--save"),
                                      (["compare", "--save", "last"], "--save"),
                                      (["compare", "--fail-on-regression", "10"], "needs --baseline"),
                                      (["compare", "--baseline", "x.json", "--fail-on-regression", "-5"], "positive"),
                                      (["compare", "--baseline", "nosuch"], "no comparison saved as 'nosuch'"),
                                      (["compare", "--baseline", "a" * 300], "File name too long"),
                                      (["compare", "--baseline", "/"], "is a directory"),
                                      (["compare", "--format", "xml"], "unknown --format"),
                                      (["report", "/no/such/results.json"], "not found")])
def test_compare_bad_input(cli, args, msg, tmp_path, monkeypatch):
    monkeypatch.setenv("BPBENCH_RUNS_DIR", str(tmp_path / "runs"))
    r = cli(*args)
    assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


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
RUN = run_result("bce")


@pytest.mark.parametrize("doc,msg", [
    ({**GOOD_DOC, "schema": 99}, "schema 99"),
    ({k: v for k, v in GOOD_DOC.items() if k != "preset"}, "missing preset"),
    ({**GOOD_DOC, "cells": [{"key": "x"}]}, "missing cells[0].study"),
    ({**GOOD_DOC, "cells": [{**CELL, "runs": "oops"}]}, "cells[0].runs: input should be a valid list"),
    ({**GOOD_DOC, "cells": [{**CELL, "runs": [{"schema": 1, "timing": 3}]}]}, "cells[0].runs[0]."),
    ({**GOOD_DOC, "cells": {}}, "cells: input should be a valid list"),
    ({**GOOD_DOC, "kind": "zzz"}, "kind: input should be 'comparison'"),
    ([1, 2], "is not a bpbench comparison"),
    # the right keys with the wrong types
    ({**GOOD_DOC, "notes": 5}, "notes: input should be a valid list, got 5"),
    ({**GOOD_DOC, "cells": [{**CELL, "runs": [], "summary": None}]}, "cells[0].summary: input should be a valid dictionary"),
    ({**GOOD_DOC, "cells": [{**CELL, "runs": [{**RUN, "timing": {**RUN["timing"], "step_s_median": "1e-4"}}]}]},
     "cells[0].runs[0].timing.step_s_median: input should be a valid number, got \"1e-4\""),
    ({**GOOD_DOC, "cells": [{**CELL, "runs": [{**RUN, "timing": {**RUN["timing"], "step_s_all": [1e-4, None]}}]}]},
     "cells[0].runs[0].timing.step_s_all[1]: input should be a valid number"),
    ({**GOOD_DOC, "cells": [{**CELL, "status": "fine"}]}, "cells[0].status: input should be"),
    ({**RUN, "history": [{"epoch": "1", "loss": 0.5, "updates": 1}]}, "history[0].epoch: input should be a valid integer"),
])
def test_report_rejects_incomplete_comparisons(cli, tmp_path, doc, msg):
    f = tmp_path / "results.json"
    f.write_text(json.dumps(doc))
    for args in (["report", f], ["report", write(tmp_path / "ok.json", GOOD_DOC), "--baseline", f]):
        r = cli(*args)
        assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_width_study(cli, tmp_path, in_process_cells):
    d = json.loads(cli("compare", "width", "--widths", "16,64", "--steps", "30", "--json").stdout)
    rows = d["width"]["rows"]
    assert [r["width"] for r in rows] == [16, 64] and all(r["cpu_step_s"] > 0 for r in rows)
    assert d["width"]["crossover_width"] is None   # no CUDA cells on a CPU-only run
    assert {r["series"] for r in rows} == {"autograd"} and d["width"]["crossovers"] == \
        {"autograd": {"width": None, "at_or_below": False}}


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
    assert (gd["updates"], gd["eval_every_updates"]) == (700, 35)
    gd = [dict(c.overrides) for c in cmp.plan(["gd-sgd"], ["cpu"], [], full, {"updates": 140})
          if c.label == "batch=full"][0]
    assert (gd["updates"], gd["eval_every_updates"]) == (140, 7)     # still ~20 points on the GD curve


def test_gd_sgd_rows_share_one_evaluation_grid():
    """Every batch size is evaluated at the same update counts (mid-epoch where needed), so a row's
    "updates to 0.99" cannot depend on how often it happened to be evaluated."""
    cells = cmp.plan(["gd-sgd"], ["cpu"], [], cmp.load_preset("full"))
    assert {dict(c.overrides)["eval_every_updates"] for c in cells} == {35}
    assert all("eval_every" not in dict(c.overrides) for c in cells)


def test_set_changes_key_label_and_config():
    """--set shows in every cell's label and key (the CSV row, legend and baseline match follow)."""
    quick = cmp.load_preset("quick")
    bce = cmp.plan(["bce"], ["cpu"], ["manual"], quick, extra={"data": "source"})
    assert [c.label for c in bce] == ["data=source"]                 # not the preset's data=xor
    mnist = cmp.plan(["mnist01"], ["cpu"], ["manual"], quick, extra={"batch_size": "64"})
    assert mnist[0].label == "batch=64" and dict(mnist[0].overrides)["batch_size"] == "64"
    lin = cmp.plan(["linreg"], ["cpu"], ["manual"], quick, extra={"epochs": "50"})
    assert lin[0].key == "matrix:linreg/manual/cpu/epochs=50" and lin[0].argv()[-1] == "epochs=50"
    # a study keeps the keys it owns: the width cells keep their steps, linreg takes epochs=50
    both = cmp.plan(["linreg", "width"], ["cpu"], [], quick, extra={"epochs": "50"})
    assert {dict(c.overrides)["epochs"] for c in both if c.study == "width"} == {200}


def test_gd_sgd_at_equal_updates(cli, tmp_path, in_process_cells):
    r = cli("compare", "gd-sgd", "--updates", "14", "--batch-sizes", "full,2048,16384", "--output-dir", tmp_path)
    assert "16384 (= full)" in r.stdout and "holds all 12,665 training images" in r.stdout
    d, _ = read(tmp_path)
    rows = {r["batch_size"]: r for r in d["gd_sgd"]["rows"]}
    assert rows["full"]["updates"] == rows[2048]["updates"] == rows[16384]["updates"] == 14
    assert rows["full"]["epochs"] == 14 and rows[2048]["epochs"] == 2     # 7 updates per epoch
    # the shipped training split has 12,665 images: a batch of 16384 is gradient descent again
    assert [rows[b]["covers_train_set"] for b in ("full", 2048, 16384)] == [True, False, True]
    assert rows[16384]["final_loss"] == rows["full"]["final_loss"]
    # one grid for every row: 14 // 20 -> every update, batch 2048 evaluated mid-epoch too
    assert [p["updates"] for p in rows[2048]["curve"]] == [p["updates"] for p in rows["full"]["curve"]] == list(range(1, 15))
    assert rows[16384]["curve"] == [{**p, "time_s": q["time_s"]} for p, q in zip(rows["full"]["curve"], rows[16384]["curve"])]
    if plots.available():
        assert (tmp_path / "gd_sgd.png").stat().st_size > 0
    assert all(p["test_accuracy"] is not None for p in rows[2048]["curve"])


def test_without_matplotlib_says_how_to_get_plots(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    r = cli("compare", "bce", "--variant", "manual", "--set", "epochs=5", "--output-dir", tmp_path)
    assert r.exit_code == 0 and "pip install 'bpbench[plot]'" in r.stderr
    assert (tmp_path / "results.json").exists() and not list(tmp_path.glob("*.png"))


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_interrupt_keeps_finished_cells(tmp_path, sig):
    """SIGTERM (bpbench turns it into Ctrl-C's KeyboardInterrupt, tested with both signals on
    `run` in test_bad_input_and_signals.py): exit 130, finished cells kept, `interrupted: true`, and the cell
    that was running does not outlive compare."""
    import psutil
    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "bpbench", "compare", "linreg", "bce", "mnist01",
                             "--output-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    children = []
    while time.time() < deadline:
        f = out / "results.json"
        if f.exists() and json.loads(f.read_text())["cells"]:
            children = psutil.Process(proc.pid).children(recursive=True)
            if children:
                break
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    doc, rows = read(out)
    assert doc["interrupted"] is True and 1 <= len(doc["cells"]) < len(doc["planned"])
    assert all(c["status"] == "ok" for c in doc["cells"]) and len(rows) == len(doc["cells"])
    assert "INTERRUPTED" in stdout
    assert not list(out.glob(".*tmp*"))
    assert children and not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]




def test_a_stopped_cell_writing_into_its_pipe_ends_without_sigkill():
    """compare stops reading a cell when it stops it; a cell that answers SIGTERM by printing
    (its partial result, more than a pipe holds) must fail at once on the closed pipe, not block
    until the SIGKILL that follows 5 s later."""
    from bpbench import processes
    child = ("import signal, sys, time\n"
             "def stop(signum, frame):\n"
             "    sys.stdout.write('x' * 2**20)\n"
             "    sys.stdout.flush()\n"
             "    sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, stop)\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    proc = processes.start_child([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
    assert proc.stdout.readline() == "ready\n"
    processes.stop_group(proc)
    assert proc.returncode not in (None, -signal.SIGKILL) and proc.stdout.closed
