"""Reading a comparison: tables that fit 100 columns, markdown, plots, progress, saved runs."""

import io
import json
import os
import re

import pytest
from synthetic import aa_doc, cell, document, run_result, write

from bpbench import comparison as cmp
from bpbench import report
from bpbench.comparison import sections
from bpbench.report import plots
from bpbench.results import saved


def widest_doc():
    """Every column a default table can show at once: two devices, two runs, accuracy, ratios."""
    cells = []
    for label, data in (("data=line4", "line4"), ("data=scatter30, epochs=10000", "scatter30")):
        for variant, step in (("manual", 6.3e-5), ("autograd", 2.79e-4), ("nn", 3.82e-4)):
            for device, k in (("cpu", 1.0), ("cuda", 0.25)):
                run = run_result("linreg", variant, device, steps=[step * k * (1 + 0.01 * (i % 5)) for i in range(400)],
                                 config={"data": data}, losses=(1.0, 3.432052e-05), metrics={"accuracy": 0.99527})
                cells.append(cell(run, label=label, overrides={"data": data}))
    return document(cells, preset="full")


def test_table_fits_100_columns_without_cutting_a_number(cli, tmp_path):
    doc = widest_doc()
    old = write(tmp_path / "old.json", doc)
    new = widest_doc()
    for c in new["cells"]:      # 30 % slower: every cell gets a "+30.0% slower" in the change column
        c["runs"][0]["timing"]["step_s_all"] = [s * 1.3 for s in c["runs"][0]["timing"]["step_s_all"]]
    r = cli.runner.invoke(report_app(), ["report", str(write(tmp_path / "new.json", new)), "--baseline", str(old)],
                          env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100 and "…" not in r.stdout
    assert "3.432e-05" in r.stdout and "+30% slower" in r.stdout and "4.00x" in r.stdout   # CUDA x
    assert "data=scatter30," in r.stdout and "epochs=10000" in r.stdout      # a long label folds
    assert "CUDA peak" not in r.stdout and "setup" not in r.stdout           # --wide only
    # what did not fit is named, and is in the markdown (which has no width)
    assert "left out to fit 100 columns: IQR, peak RSS, acc. (--wide" in r.stdout
    md = cli("report", tmp_path / "new.json", "--baseline", old, "--format", "markdown").stdout
    assert "| acc. |" in md and "| 0.9953 |" in md and "| peak RSS |" in md
    wide = cli.runner.invoke(report_app(), ["report", str(old), "--wide"], env={"COLUMNS": "100"})
    assert "setup" in wide.stdout and "samples/s" in wide.stdout and "…" not in wide.stdout


def report_app():
    from bpbench.cli import app
    return app


def study_doc(devices):
    """A comparison of the three studies' cells on `devices`, with ranks up to 16 (the widest
    numbers a scaling row has: 8-digit samples/s, 'comm (share)', '19.75x'). Each ddp cell has its
    parity reference (autograd, one process), which it matches."""
    cells = []
    digest = {"param_digest": {"w": {"norm": 1.0, "sum": 1.0, "head": [1.0]}}}
    for device in devices:
        for mode in ("strong", "weak"):
            for n in (1, 2, 4, 16):
                batch = 12665 if mode == "strong" else 128 * n
                step = 1.35e-2 / (n if mode == "strong" else 1) * (1 + 0.1 * (n > 1))   # 91% efficient
                run = run_result("mnist01", "ddp", device, steps=[step] * 20, reference_variant="autograd",
                                 distributed={"global_batch": batch, "per_rank_batch": batch // n,
                                              "comm_s_median": 1.23e-3 if n > 1 else None,
                                              "comm_share": 0.12 if n > 1 else None}, **digest)
                run["env"].update(cpu_count=16, threads=1)
                cells.append(cell(run_result("mnist01", "autograd", device, steps=[step * n] * 20, **digest),
                                  study="scaling", label=f"{mode} N={n}", overrides={"batch_size": batch}))
                cells.append(cell(run, study="scaling", label=f"{mode} N={n}",
                                  overrides={"nproc": n, "batch_size": batch}))
        for h, s in ((500, 6e-4), (200_000, 8.4e-2)):
            s *= 0.01 if device == "cuda" and h > 500 else 1
            cells.append(cell(run_result("width", "autograd", device, steps=[s] * 20), study="width",
                              label=f"H={h}", overrides={"width": h, "epochs": 1000}))
        for bs in ("full", 16384, 256):
            run = run_result("mnist01", "autograd", device, steps=[1e-3] * 700, metrics={"test_accuracy": 0.99527})
            run["data"]["n_train"] = 12665
            cells.append(cell(run, study="gd-sgd", label=f"batch={bs}",
                              overrides={"batch_size": bs, "updates": 700, "eval_every_updates": 35}))
    doc = document(cells, preset="full")
    cmp.refresh(doc, None)
    return doc


@pytest.mark.parametrize("devices", [["cpu"], ["cpu", "cuda"]])
def test_study_tables_fit_100_columns(devices):
    """Issue: `compare scaling` at 100 columns folded 'device' and 'scaling' to a letter a line."""
    from rich.console import Console
    console = Console(width=100, file=io.StringIO(), color_system=None)
    doc = study_doc(devices)
    report.show(report.comparison_blocks(doc, sections=sections.blocks(doc)), console)
    out = console.file.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 100 and "…" not in out
    assert "scaling study: ddp, data-parallel ranks" + (" on cpu" if len(devices) == 1 else "") in out
    rows = re.findall(r"^│ (?:(cpu|cuda) +│ )?(strong|weak) +│ +(\d+) │", out, re.M)   # words whole, one line
    assert [(d, m, int(n)) for d, m, n in rows] == \
        [(d if len(devices) > 1 else "", m, n) for d in devices for m in ("strong", "weak") for n in (1, 2, 4, 16)]
    # every number whole; with two devices the per-rank batch (global batch / N) makes room
    assert "│ 13,645,791 │ 1.23 ms (12%) │  14.55x │        91% │" in out
    assert ("left out to fit 100 columns: per rank" in out) == (len(devices) > 1)
    assert "│ 200,000 │" in out and ("100.00x" in out) == (len(devices) > 1)     # the width study's table
    assert "│ 16384 (= full) │" in out and "│   0.9953 │" in out        # and gd-sgd's


def test_a_table_too_wide_for_its_spares_keeps_words_and_numbers_whole():
    """The last resort: wider lines, rather than 'strong' a letter a line or a number cut off."""
    from rich.console import Console
    tab = report.Tab("", ["device", "scaling"] + list("abcde"), text=2)
    tab.rows = [[d, m] + ["1,234,567,890,12"] * 5 for d in ("cpu", "cuda") for m in ("strong", "weak")]
    console = Console(width=100, file=io.StringIO(), color_system=None)
    report.show([tab], console)
    out = console.file.getvalue()
    assert "│ cuda   │ weak    │ 1,234,567,890,12 │" in out and out.count("1,234,567,890,12 │\n") == 4


def test_columns_empty_for_the_devices_that_ran_are_dropped():
    doc = document([cell(run_result(variant=v, steps=[s] * 20)) for v, s in (("manual", 1e-4), ("nn", 3e-4))])
    cmp.refresh(doc, None)
    tab = report.comparison_blocks(doc)[1]
    assert tab.columns == ["variant", "step", "IQR", "vs\nmanual", "final\nloss", "peak\nRSS"]
    assert tab.title == "linreg" and report.comparison_blocks(doc)[0].endswith("· cpu")


def test_markdown_report_is_a_table_to_paste(cli, tmp_path):
    doc = aa_doc(0)
    r = cli("report", write(tmp_path / "r.json", doc), "--format", "markdown")
    assert r.exit_code == 0, r.stderr
    md = r.stdout
    assert md.startswith("### bpbench compare · preset quick · cpu\n")
    assert "**mnist01**\n\n| variant | step | IQR | final loss | peak RSS |\n| :-- | --: | --: | --: | --: |\n" in md
    row = re.search(r"^\| autograd \| (\S+ \S+) \|", md.split("**mnist01**")[1], re.M)
    assert row and row.group(1) == report.fmt_s(doc["cells"][1]["summary"]["step_s_median"])
    assert "[" not in md.replace("[1/", "")          # no rich markup left


def test_report_reads_a_single_run_file(cli, tmp_path, quiet_machine):
    out = tmp_path / "run.json"
    assert cli("run", "linreg", "--epochs", "30", "--output", out).exit_code == 0
    r = cli("report", out)
    assert r.exit_code == 0, r.stderr
    assert "preset single run" in r.stdout and "manual" in r.stdout
    d = json.loads(cli("report", out, "--baseline", out, "--json").stdout)
    assert d["cells"][0]["summary"]["baseline_change"] == 0.0       # itself: no change


def test_bce_shows_the_output_before_and_after_the_step_beside_its_loss(cli):
    out = cli("run", "bce").stdout
    # seed 002: sigma3 = 0.4154 and loss = 0.5368 before its one SGD step (lr 1)
    assert re.search(r"before the step\s+│ loss 0\.5368842 · output 0\.4154332", out), out
    assert re.search(r"after the step\s+│ loss 0\.2804214 · output 0\.2445347", out), out
    assert "final loss" not in out


def test_eval_every_records_linreg_and_bce_metrics(cli):
    lin = cli.json("run", "linreg", "--epochs", "20", "--eval-every", "10")["history"]
    assert [sorted(h) for h in lin if "mse" in h] == [["epoch", "loss", "mse", "time_s", "updates"]] * 2
    bce = cli.json("run", "bce", "--data", "xor", "--epochs", "4", "--eval-every", "2")["history"]
    assert {"accuracy", "train_loss", "output"} <= bce[1].keys() and "accuracy" not in bce[0]


def test_confusion_matrices_print_as_tables(cli):
    out = cli("run", "mnist01", "--batch-size", "256", "--epochs", "1").stdout
    assert "confusion matrices (rows: true class, columns: predicted class)\ntraining set" in out
    assert "held-out set" in out
    assert re.search(r"│ +0 │ +\d+ │ +\d+ │", out) and "pred 1" in out and "{'train'" not in out


def test_compare_progress_shows_elapsed_and_what_is_left():
    stream = io.StringIO()
    progress = report.CellProgress(stream)
    ticks = iter([12.0, 16.0])
    progress.clock = lambda: next(ticks)
    progress.t0 = 10.0
    c = cmp.make_cell("matrix", "linreg", "manual", "cpu", {})
    for i, secs in ((1, 2.0), (2, 4.0)):
        progress(i, 3, c, None, 0.0)
        progress(i, 3, c, {"status": "ok", "error": None}, secs)
    lines = stream.getvalue().splitlines()
    assert lines == ["[1/3] matrix:linreg/manual/cpu: ok in 2.0 s · 2 s elapsed · about 4 s left",
                     "[2/3] matrix:linreg/manual/cpu: ok in 4.0 s · 6 s elapsed · about 3 s left"]


def test_run_progress_shows_loss_and_time_per_update():
    from bpbench.cli.run import _LazyProgress
    p = _LazyProgress("linreg manual")
    p.mark = (1.0, 100)
    assert p._now(1.5, {"loss": 0.0076, "updates": 600}) == "loss 0.0076 · 1 ms/update wall"
    # the bar starts at t = 10 and takes 0.5 s to import and draw: the next figure leaves that out
    p = _LazyProgress("linreg manual", after_s=0.0)
    ticks = iter([10.0, 10.5, 11.5, 11.5])
    p.clock, p.t0 = (lambda: next(ticks)), 0.0
    shown = []
    p._now = lambda now, entry, real=p._now: shown.append(real(now, entry)) or shown[-1]
    try:
        p.update(1, 3, {"loss": 0.5, "updates": 100})
        p.update(2, 3, {"loss": 0.25, "updates": 1100})
    finally:
        p.close()
    assert shown == ["loss 0.5", "loss 0.25 · 1 ms/update wall"]


def test_help_is_dash_h_and_completion_is_offered(cli):
    r = cli("-h")
    assert r.exit_code == 0 and "--install-completion" in r.stdout and "--show-completion" in r.stdout
    r = cli.runner.invoke(report_app(), ["compare", "-h"], env={"COLUMNS": "300"})
    assert r.exit_code == 0
    # the help's list of studies is the registry's, so a new study cannot be left out of it
    from bpbench import comparison as compare
    from bpbench import studies
    names = list(studies.REGISTRY)
    assert "full when only studies are named (" + ", ".join(names) + ")" in " ".join(r.stdout.split())
    assert "a study: " + " | ".join(names) + " (default" in " ".join(r.stdout.split())
    assert "scaling" in names and all(compare.default_preset([n]) == "full" for n in names)


def test_saved_runs_by_name_and_last(cli, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("BPBENCH_RUNS_DIR", str(runs))
    first = saved.save(aa_doc(0), "main", runs)
    os.utime(first, (1, 1))                   # older than the next one
    saved.save(aa_doc(1, scale=1.5), "pr-7", runs)
    meta = json.loads(first.read_text())["saved"]
    assert meta["name"] == "main" and len(meta["commit"]) == 40 and meta["machine"]["node"]
    new = write(tmp_path / "new.json", aa_doc(1))
    by_name = json.loads(cli("report", new, "--baseline", "main", "--json").stdout)
    assert by_name["baseline"]["source"] == "main"
    assert all(c["summary"]["baseline_significant"] is False for c in by_name["cells"])
    last = json.loads(cli("report", new, "--baseline", "last", "--json").stdout)
    assert last["baseline"]["source"] == "last (pr-7)"
    assert all(c["summary"]["baseline_change"] < -0.2 for c in last["cells"])   # pr-7 was 50 % slower
    r = cli("report", new, "--baseline", "nope")
    assert r.exit_code == 2 and "(saved: main, pr-7)" in r.stderr


def test_loss_axes_are_linear_for_a_narrow_band():
    plt = plots.pyplot()
    fig, (a, b) = plt.subplots(1, 2)
    plots.loss_scale(a, [0.7075, 0.7071, 0.7069])
    plots.loss_scale(b, [1.0, 0.01])
    assert (a.get_yscale(), b.get_yscale()) == ("linear", "log")
    plt.close(fig)


def test_seconds_axis_keeps_its_unit_on_a_narrow_log_scale():
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    ax.plot([1, 2], [2.1e-3, 4.8e-3])
    ax.set_yscale("log")
    plots.seconds_axis(ax.yaxis)   # after the scale, which replaces formatters
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert shown and all(t.endswith(" ms") for t in shown), shown
    plt.close(fig)


def test_a_short_loss_curve_has_markers(tmp_path, monkeypatch):
    """A one-update run's loss is one point: a line without markers draws nothing."""
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.append(fig) or path)
    plots.loss_plot("bce", [cell(run_result("bce", "manual", losses=(0.69,))),
                            cell(run_result("bce", "autograd", losses=[1 / (i + 1) for i in range(100)]))], tmp_path)
    (ax,) = figs[0].axes
    one, many = ax.get_lines()
    assert (len(one.get_xdata()), one.get_marker()) == (1, "o") and many.get_marker() in ("None", None, "")
    plots.pyplot().close(figs[0])


def test_plots_per_update_losses_panels_and_step_times(tmp_path):
    runs = [run_result("mnist01", v, losses=(0.7, 0.6)) for v in ("autograd", "manual")]
    for r in runs:      # two mini-batch epochs of 3 updates each
        for h, batch in zip(r["history"], ([0.72, 0.70, 0.68], [0.62, 0.60, 0.58])):
            h.update(updates=h["epoch"] * 3, batch_losses=batch)
    assert plots._curve(runs[0]) == ([1, 2, 3, 4, 5, 6], [0.72, 0.70, 0.68, 0.62, 0.60, 0.58],
                                     "loss of each mini-batch update")
    doc = document([cell(r, label="batch=32") for r in runs] + [cell(run_result("mnist01", "autograd"), label="batch=full")])
    cmp.refresh(doc, None)
    written = plots.write_all(doc, tmp_path)
    assert [p.name for p in written] == ["loss_mnist01.png", "steps_mnist01.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_study_plots(tmp_path):
    """The width plot names what ran and carries seed 004's own figures; gd-sgd marks crossings."""
    from bpbench.studies import width
    w = [cell(run_result("width", "autograd", steps=[s] * 20), study="width", label=f"H={h}",
              overrides={"width": h, "epochs": 50}) for h, s in ((500, 6e-4), (2000, 8e-4))]
    doc = document(w)
    cmp.refresh(doc, None)
    assert doc["width"]["steps"] == [50] and doc["width"]["hardware"] == {"cpu": "test cpu"}
    assert width.SEED_STEP_S["cuda"][200_000] == pytest.approx(1.373826026916504e-3)   # seed: 1.37 s / 1000
    assert "seed 004's own machine, per step: H = 500: CPU 369 µs, GPU 580 µs; H = 200,000: CPU 84.1 ms, GPU 1.37 ms" \
        in " ".join(b for b in report.comparison_blocks(doc, sections=sections.blocks(doc)) if isinstance(b, str))
    assert [p.name for p in plots.write_all(doc, tmp_path, sections.plots(doc))] == ["width.png"]


def test_plot_writers_never_share_a_temporary_file(tmp_path, monkeypatch):
    """Parallel `report --plot-dir` runs collided on one fixed temporary name."""
    plt = plots.pyplot()
    moves = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moves.append((a, b)), real(a, b)))
    for _ in range(2):
        plots.save(plt.figure(), tmp_path / "x.png")
    assert len({a for a, _ in moves}) == 2 and [p.name for p in tmp_path.iterdir()] == ["x.png"]
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "x.png")
    plots.save(plt.figure(), link)
    assert link.is_symlink()                   # written through the link, not replacing it
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(Exception, match="not a regular file"):
        plots.save(plt.figure(), tmp_path / "dir.png")


def test_noisy_cells_are_named_in_one_warning():
    from bpbench.report import noise_warning
    quiet = {"key": "matrix:linreg/manual/cpu", "status": "ok", "summary": {"step_s_median": 1e-4, "step_s_iqr": 5e-6}}
    noisy = {"key": "matrix:linreg/autograd/cpu", "status": "ok", "summary": {"step_s_median": 3e-4, "step_s_iqr": 1e-4}}
    assert noise_warning([quiet]) == []
    [line] = noise_warning([quiet, noisy])
    assert "noisy in 1 of 2 cells" in line and "linreg/autograd/cpu" in line and "manual" not in line


def test_the_source_figures_say_how_they_were_computed():
    from rich.console import Console
    from synthetic import run_result

    from bpbench.api import print_run     # with the experiment's own names for its metrics
    r = run_result("mnist01", variant="manual")
    r["final"]["metrics"] = {"train_accuracy": 0.9952626, "source_updates": 699, "source_train_accuracy": 0.9953415}
    for k in ("warmup_s", "eval_s", "total_s", "setup_s", "train_s"):
        r["timing"].setdefault(k, 0.1)
    r["memory"] = {"rss_start_mib": 500.0, "rss_peak_mib": 520.0, **r.get("memory", {})}
    r["env"] = {"torch": "2.14.1", "threads": 2, "cpu": "x86", **r.get("env", {})}
    con = Console(width=120, record=True)
    print_run(r, con)
    text = con.export_text()
    assert "train accuracy the source's way" in text and "updates before the source's last forward pass" in text


def _doc_with(steps, **timing):
    fast = cell(run_result(variant="manual", steps=[1e-4] * 19))
    run = run_result(variant="autograd", steps=steps)
    run["timing"].update(timing)
    doc = document([fast, cell(run)])
    cmp.refresh(doc, None)
    return doc


@pytest.mark.parametrize("bad,why", [(float("nan"), "a step time is nan"), (float("inf"), "a step time is inf"),
                                     (-1e-4, "a step time is -0.0001"), (0.0, "a step time is 0.0"),
                                     (5.0, "a step of 5 s is longer than the whole run (0.0039 s)")])
def test_report_renders_times_that_are_no_measurement_as_invalid(cli, tmp_path, bad, why):
    """A damaged or edited results.json (negative or zero step times, a step longer than its run),
    or a document from Python (NaN, inf: JSON has neither, and the reader refuses them in a file),
    were shown as "nan µs", "infx" and compared."""
    from rich.console import Console
    doc = _doc_with([1e-4] * 18 + [bad], total_s=0.0039)
    if bad == bad and abs(bad) != float("inf"):
        r = cli("report", write(tmp_path / "results.json", doc))
        assert r.exit_code == 0, r.stderr
        out = r.stdout
    else:
        console = Console(width=100, file=io.StringIO(), color_system=None)
        report.print_comparison(doc, console)
        out = console.file.getvalue()
    row = next(line for line in out.splitlines() if "autograd" in line and "│" in line)
    assert "invalid" in row and not any(w in out for w in ("nan µs", "nanx", "inf µs", "infx", "-100 µs"))
    assert f"timing invalid ({why})" in " ".join(out.split())
    assert "fastest per step" not in out and "clearly faster" not in out   # no verdict from it


def test_a_huge_step_is_never_within_the_noise(cli, tmp_path):
    """1e308 s against 1e-4 s: the bootstrap's ratios overflowed to NaN, read as 'within the noise'."""
    path = write(tmp_path / "results.json", _doc_with([1e308] * 19, train_s=1e308, total_s=1e308))
    r = cli("report", path)
    text = " ".join(r.stdout.split())
    assert r.exit_code == 0 and "within the measured noise" not in text
    assert "fastest per step is manual (100 µs); autograd far slower (1e+308 s a step)" in text


def test_a_fast_variant_whose_file_names_no_reference_is_not_left_unchecked(cli, tmp_path):
    """`reference_variant: null` in a compiled cell's result skipped its parity check silently:
    the registry says it must match autograd, so it is checked, and the file's word is a reason."""
    digest = {"param_digest": {"w": {"norm": 1.0, "sum": 1.0, "head": [1.0]}}}
    ref = cell(run_result(variant="autograd", **digest))
    fast = cell(run_result(variant="compiled", reference_variant=None, **digest))
    path = write(tmp_path / "results.json", document([ref, fast]))
    r = cli("report", path, "--json")
    compiled = next(c for c in json.loads(r.stdout)["cells"] if c["variant"] == "compiled")
    assert compiled["status"] == "mismatch" and compiled["summary"]["parity_reference"] == "autograd"
    assert compiled["error"] == "its result names reference variant None, but the compiled variant must match 'autograd'"


@pytest.mark.parametrize("profiled,says,never", [
    (3e-4, "100 µs in the timed loop: the difference is mostly the profiler's own cost", "longer"),
    (5e-5, "100 µs in the timed loop, longer: these steps repeat one batch", "profiler's own cost")])
def test_profile_ops_explains_the_difference_with_the_timed_loop_either_way(profiled, says, never):
    """'the rest is the profiler's own cost' was said when the profiled step was the shorter."""
    from rich.console import Console
    from bpbench.report.run import print_profile
    profile = {"top_ops": [], "phases": {}, "steps": 5, "trace_file": None,
               "split": {"step_s": profiled, "in_aten_ops_s": profiled / 2, "outside_ops_s": profiled / 2}}
    console = Console(width=200, file=io.StringIO(), color_system=None)
    print_profile(profile, console, timed_step_s=1e-4)
    out = console.file.getvalue()
    assert says in out and never not in out


def _rendered(blocks, width):
    from rich.console import Console
    console = Console(width=width, file=io.StringIO(), color_system=None)
    report.show(blocks, console)
    return console.file.getvalue()


def test_a_ten_class_confusion_matrix_fits_80_columns_with_every_count_whole():
    """It was cut at 80 columns ("5,8…"): its narrow form heads each column by the bare class."""
    from bpbench import experiments
    matrix = [[(7 * i + 13 * j) * 61 % 6743 for j in range(10)] for i in range(10)]
    matrix[1][1] = 60000
    exp = experiments.get("mnist01").load()
    out = _rendered(exp.run_tables({"confusion": {"train": matrix}}), 80)
    assert max(map(len, out.splitlines())) <= 80
    assert all(re.search(rf"│ +{i} │" + "".join(rf" +{n} │" for n in row), out) for i, row in enumerate(matrix))
    wide = _rendered(exp.run_tables({"confusion": {"train": matrix}}), 100)
    assert "pred 9" in wide and "60,000" in wide         # where it fits: as it always was


def test_a_table_that_cannot_fit_is_printed_whole_never_with_digits_cut():
    tab = report.Tab("wide", ["name"] + [f"c{i}" for i in range(12)], [["x"] + ["123,456,789"] * 12])
    out = _rendered([tab], 80)
    assert out.count("123,456,789") == 12


def test_gradcheck_fits_80_columns_with_every_number_whole():
    """A header was cut to "numeric…" and mnist01's "256/25088" to "256/250…"."""
    from rich.console import Console
    from bpbench.report.run import print_gradcheck
    check = {"param": "layer1.weight", "numel": 25088, "checked": 256, "manual_vs_autograd": 0.0,
             "manual_vs_numerical": 8.55e-11, "autograd_vs_numerical": 8.55e-11, "rel_error": 8.55e-11, "ok": True}
    rep = {"experiment": "mnist01", "note": "4 samples", "tol": 1e-6, "ok": True, "checks": [check]}
    for width, header in ((80, "autograd-"), (100, "autograd vs")):
        console = Console(width=width, file=io.StringIO(), color_system=None)
        print_gradcheck(rep, console)
        out = console.file.getvalue()
        assert max(map(len, out.splitlines())) <= width and "…" not in out
        assert "256/25088" in out and header in out and "8.55e-11" in out


@pytest.mark.parametrize("args", [["list"], ["run", "linreg", "--epochs", "5", "--no-flops"]])
def test_piped_output_is_100_columns_for_every_command(args):
    """`run` printed at 80 columns into a pipe, `compare` and `report` at 100."""
    from typer.testing import CliRunner
    from bpbench.cli import app
    r = CliRunner().invoke(app, args, env={"COLUMNS": None})
    assert r.exit_code == 0, r.stderr
    assert 80 < max(map(len, r.stdout.splitlines())) <= 100


def _figures(monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.append((path.name, fig)) or path)
    return figs


def _labels(axis) -> list[str]:
    axis.axes.figure.canvas.draw()
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_plots_read_in_units_say_when_they_are_logarithmic_and_draw_the_baseline(monkeypatch, tmp_path):
    """threads.png read "2.6x10^-4" seconds; a steps plot turned logarithmic without saying so;
    a comparison with --baseline drew no baseline."""
    if not plots.available():
        pytest.skip("matplotlib is not installed")
    cells = [cell(run_result("linreg", v, steps=[s * k] * 20), label=f"threads={n}", overrides={"threads": n})
             for n, s in ((1, 2.6e-4), (2, 1.6e-4)) for v, k in (("manual", 1.0), ("autograd", 3.0))]
    cells += [cell(run_result("mnist01", "autograd", steps=[2e-2] * 20)), cell(run_result("mnist01", "manual", steps=[1e-3] * 20))]
    doc = document(cells)
    cmp.refresh(doc, document([cell(run_result("mnist01", "autograd", steps=[3e-2] * 20))]))
    figs = _figures(monkeypatch)
    plots.write_all(doc, tmp_path, sections.plots(doc))
    by_name = dict(figs)
    (threads,) = by_name["threads.png"].axes
    ticks = _labels(threads.yaxis)
    assert all(t.endswith(" s") or t.endswith("µs") for t in ticks) and "200 µs" in ticks and threads.get_ylim()[0] == 0
    (steps,) = by_name["steps_mnist01.png"].axes
    assert steps.get_xscale() == "log" and steps.get_xlabel().endswith("(log scale)")
    (mark,) = [line for line in steps.get_lines() if line.get_label() == "baseline median"]
    assert list(mark.get_xdata()) == [3e-2]
    (linear,) = by_name["steps_linreg.png"].axes
    assert linear.get_xscale() == "linear" and "log" not in linear.get_xlabel()


def test_the_width_plot_labels_widths_and_shares_plainly(monkeypatch, tmp_path):
    """Two log axes labelled 10^3 and 10^-2: the widths and the % of peak are written out."""
    if not plots.available():
        pytest.skip("matplotlib is not installed")
    from bpbench.studies import width as study
    from test_flops_and_profiles import width_cell
    figs = _figures(monkeypatch)
    study.plot(study.derive([width_cell("autograd", "cpu", h, s, p) for h, s, p in
                             ((500, 6e-4, 0.3), (2000, 1.2e-3, 0.9), (200_000, 0.19, 4.1))]), tmp_path)
    ax, ax2 = figs[0][1].axes
    assert {"500", "2,000", "200,000"} <= set(_labels(ax.xaxis)) and ax.get_xlabel().endswith("(log scale)")
    assert _labels(ax2.yaxis) and all(label.endswith("%") for label in _labels(ax2.yaxis))
