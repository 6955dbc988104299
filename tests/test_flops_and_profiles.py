"""Explaining the numbers: FLOPs per phase, the measured peak, op profiles, memory above setup,
and what keeps the measurements valid."""

import json
import math

import pytest
import torch

from bpbench import variants
from bpbench.comparison import sections
from bpbench.measure import peak
from bpbench.measure import run as runner
from bpbench.measure.flops import count_step, throughput
from bpbench.measure.timer import CudaBlockTimer
from bpbench.report import plots
from bpbench.results import figures
from bpbench.results.timing import StepTimes
from bpbench.training import ResidentBatches
from bpbench.variants import phases

CPU = torch.device("cpu")


def learner_for(experiment, variant, **flags):
    info, cfg = runner.resolve(experiment, None, {"variant": variant, **flags})
    task = info.load().build(cfg, CPU)
    return task, variants.get(variant).load().learner(task.model, cfg, CPU)


def linear_flops(n, layers):
    """Analytic matrix-product FLOPs of a stack of linear layers [(in, out), ...] on n samples:
    forward 2n*in*out per layer; backward the weight gradient of every layer plus the input
    gradient of every layer but the first (its input is data: nobody asks for that gradient)."""
    fwd = sum(2 * n * i * o for i, o in layers)
    bwd = fwd + sum(2 * n * i * o for i, o in layers[1:])
    return fwd, bwd


# (experiment, variant, flags, samples in the counted batch, layers (in, out))
CASES = [
    ("linreg", "manual", {}, 4, [(1, 1)]),                  # seed 000: x = 1..4
    ("linreg", "autograd", {}, 4, [(1, 1)]),
    ("linreg", "nn", {}, 4, [(1, 1)]),
    ("linreg", "manual", {"data": "scatter30"}, 30, [(1, 1)]),   # seed 003: 30 points
    ("bce", "manual", {}, 1, [(2, 2), (2, 1)]),              # seed 002: the 2-2-1 net on x = [1, 1]
    ("bce", "autograd", {}, 1, [(2, 2), (2, 1)]),
    ("mnist01", "manual", {}, 12665, [(784, 32), (32, 1)]),   # seed 004's 784-32-1 on its 12,665 training images
    ("mnist01", "autograd", {}, 12665, [(784, 32), (32, 1)]),
    ("mnist01", "autograd", {"batch_size": "64"}, 64, [(784, 32), (32, 1)]),
    ("width", "autograd", {"width": 50}, 100, [(1, 50), (50, 1)]),   # seed 004: 100 points, 1-H-1
]


@pytest.mark.parametrize("experiment,variant,flags,n,layers", CASES)
def test_flops_per_phase_match_the_analytic_count(experiment, variant, flags, n, layers):
    task, learner = learner_for(experiment, variant, **flags)
    x, y = task.batches.sample_batches()[0]
    before = {k: v.clone() for k, v in learner.params().items()}
    f = count_step(learner, x, y)
    fwd, bwd = linear_flops(n, layers)
    assert (f["samples"], f["forward"], f["backward"], f["update"]) == (n, fwd, bwd, 0)
    assert f["per_step"] == fwd + bwd == sum(f["counted_ops"].values()) and f["unattributed"] == 0
    assert "element-wise" in f["note"]
    # Counted on a rewound step: the learner is exactly where it was.
    assert all(torch.equal(before[k], v) for k, v in learner.params().items())


@pytest.mark.parametrize("variant", ["manual", "autograd"])
def test_mnist01_gd_on_the_full_training_split_is_1_27_gflop(variant):
    """Seed 004 prints len(X)/2048 = 6.18408203125: its training split holds 12,665 images. One
    gradient-descent step of the 784-32-1 net on them: forward 2*N*(784*32 + 32*1), backward the
    same plus layer 2's input gradient (layer 1's input gradient is skipped): ~1.27 GFLOP."""
    n = round(6.18408203125 * 2048)
    assert n == 12665
    _, learner = learner_for("mnist01", variant)
    x, y = torch.rand(n, 784), torch.randint(0, 2, (n, 1)).float()
    f = count_step(learner, x, y)
    assert f["forward"] == 2 * n * (784 * 32 + 32 * 1)
    assert f["backward"] == 2 * n * (784 * 32 + 32 + 32)
    assert f["backward"] == 2 * f["forward"] - 2 * n * 784 * 32     # ~2x forward, less layer 1's dx
    assert f["per_step"] / 1e9 == pytest.approx(1.27, abs=0.005)


@pytest.mark.parametrize("variant", ["manual", "autograd"])
def test_seed_001_ten_digit_net_counts_784_50_10_on_a_batch_of_100(mnist_dir, variant):
    """Seed 001's softmax net (--digits 0-9: 784-50-10, batches of 100) on full MNIST."""
    task, learner = learner_for("mnist01", variant, digits="0-9", data_dir=str(mnist_dir), updates=5)
    x, y = task.batches.sample_batches()[0]
    f = count_step(learner, x, y)
    fwd, bwd = linear_flops(100, [(784, 50), (50, 10)])
    assert (f["samples"], f["forward"], f["backward"], f["update"]) == (100, fwd, bwd, 0)


def test_compiled_counts_its_eager_twin():
    """FlopCounterMode sees eager aten ops: compiling variants are counted on the textbook step."""
    task, learner = learner_for("bce", "compiled")
    assert learner.eager_step.__func__ is variants.base.TorchLearner.step
    f = count_step(learner, *task.batches.sample_batches()[0])
    assert (f["forward"], f["backward"]) == linear_flops(1, [(2, 2), (2, 1)])


def test_phase_marks_are_off_unless_recording():
    assert phases.phase("forward") is phases.phase("backward")      # one shared no-op context
    grow = iter(range(0, 100, 10))
    with phases.Recorder(flops=lambda: next(grow)) as rec:
        with phases.phase("forward"):
            pass
        with phases.phase("backward"):
            pass
        with pytest.raises(RuntimeError):
            phases.Recorder().__enter__()
    assert rec.flops == {"forward": 10, "backward": 10}
    assert phases._active is None


def test_phase_memory_peaks_reset_at_every_boundary():
    state = {"alloc": 100, "peak": 100}

    def reset():
        state["peak"] = state["alloc"]

    with phases.Recorder(memory=(reset, lambda: state["alloc"], lambda: state["peak"])) as rec:
        with phases.phase("forward"):
            state["peak"], state["alloc"] = 180, 120       # a transient 80 above the start
        with phases.phase("backward"):
            state["peak"] = 150                             # 30 above its own start, not 50
    assert rec.peak_bytes == {"forward": 80, "backward": 30}


def test_throughput_is_flops_over_the_median_step():
    t = throughput(2_000_000, 0.001, {"gflops": 40.0, "source": "cache"})
    assert t == {"achieved_gflops": 2.0, "peak_gflops": 40.0, "peak_source": "cache", "percent_of_peak": 5.0}
    assert throughput(None, 0.001, None)["achieved_gflops"] is None


def test_run_reports_flops_throughput_and_memory_above_setup(cli):
    r = cli.json("run", "linreg", "--manual")
    assert r["final"]["params"]["w"] == 2.0048611164093018      # seed 000, after counting too
    assert r["flops"]["per_step"] == 16 and r["flops"]["forward"] == 8
    t = r["throughput"]
    assert t["achieved_gflops"] == pytest.approx(16 / r["timing"]["step_s_median"] / 1e9)
    assert t["peak_gflops"] > 0 and t["percent_of_peak"] == pytest.approx(100 * t["achieved_gflops"] / t["peak_gflops"])
    m = r["memory"]
    assert m["rss_start_mib"] <= m["rss_setup_mib"] + 1 and m["rss_train_above_setup_mib"] >= 0
    assert m["rss_peak_mib"] >= m["rss_setup_mib"] + m["rss_train_above_setup_mib"] - 1
    assert r["profile"] is None and r["timing"]["analysis_s"] > 0
    off = cli.json("run", "linreg", "--manual", "--no-flops")
    assert off["flops"] is None and off["throughput"] is None and off["final"] == r["final"]
    shown = cli("run", "linreg", "--manual").stdout
    assert "FLOPs/step" in shown and "% of the measured peak" in shown and "after setup" in shown


def test_profile_ops_names_phases_and_writes_a_trace(cli, tmp_path):
    out = tmp_path / "r.json"
    args = ["run", "mnist01", "--manual", "--batch-size", "256", "--epochs", "1", "--warmup-steps", "0"]
    r = cli(*args, "--profile-ops", "--output", out)
    assert r.exit_code == 0, r.stderr
    assert "top ops by self CPU time" in r.stdout and "inside ATen ops" in r.stdout
    res = json.loads(out.read_text())
    p = res["profile"]
    assert set(p["phases"]) == set(phases.PHASES) and all(v["cpu_s"] > 0 for v in p["phases"].values())
    assert {"aten::mm", "aten::addmm"} & {o["name"] for o in p["top_ops"]}
    assert p["split"]["in_aten_ops_s"] <= p["split"]["step_s"]
    trace = tmp_path / "r.trace.json"                             # beside --output by default
    assert p["trace_file"] == str(trace)
    names = {e.get("name") for e in json.loads(trace.read_text())["traceEvents"]}
    assert set(phases.PHASES) <= names
    # Profiled steps are rewound and never timed: the run is the unprofiled run.
    plain = cli.json(*args)
    assert plain["final"]["param_digest"] == res["final"]["param_digest"]
    assert len(plain["timing"]["step_s_all"]) == len(res["timing"]["step_s_all"]) == res["timing"]["steps"]


def test_trace_file_implies_profiling_and_refuses_a_directory(cli, tmp_path):
    r = cli("run", "linreg", "--manual", "--epochs", "20", "--trace-file", tmp_path, "--json")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "not a regular file" in r.stderr
    t = tmp_path / "t.json"
    res = cli.json("run", "linreg", "--manual", "--epochs", "20", "--trace-file", t)
    assert res["profile"]["trace_file"] == str(t) and json.loads(t.read_text())["traceEvents"]


def test_profile_ops_without_a_place_for_the_trace_says_how_to_get_one(cli, tmp_path):
    r = cli("run", "linreg", "--epochs", "20", "--profile-ops")
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stdout.split())         # the line may wrap at the console's width
    assert "top ops by self CPU time" in text and "trace:" not in text
    assert "no trace written: --trace-file PATH (or --output, which puts it beside the result) writes a " \
           "Perfetto trace" in text
    t = tmp_path / "t.json"
    r = cli("run", "linreg", "--epochs", "20", "--trace-file", t)
    text = " ".join(r.stdout.split())
    assert f"trace: {t}" in text and "no trace written" not in text and t.exists()


# ---------------------------------------------------------------- the peak

@pytest.fixture
def fake_measure(monkeypatch):
    """peak.measure replaced by a scripted one: the cache logic alone, in milliseconds."""
    calls = []
    figures_ = iter([50.0, 30.0, 70.0, 60.0])

    def measure(device, dtype, threads, **kw):
        calls.append(threads)
        return {"gflops": next(figures_), "size": 8, "sizes": [8], "dtype": "float32", "threads": threads,
                "measured": f"m{len(calls)}"}
    monkeypatch.setattr(peak, "measure", measure)
    # The other two ceilings (tests/test_bounds.py measures them for real): fixed figures.
    from bpbench.measure import ceilings
    monkeypatch.setattr(ceilings, "bandwidth", lambda *a, **k: {"bandwidth_gbs": 20.0, "bandwidth_curve": [[2**29, 20.0]]})
    monkeypatch.setattr(ceilings, "op_overhead", lambda *a, **k: {"op_overhead_us": 1.5})
    return calls


def test_peak_is_measured_once_per_key_and_cached(cache, fake_measure):
    a = peak.get(CPU, threads=1)
    assert a["source"] == "measured now" and a["gflops"] == 50.0 and a["cache"] == str(cache)
    b = peak.get(CPU, threads=1)
    assert b["source"].startswith("cache") and b["gflops"] == 50.0 and fake_measure == [1]
    assert peak.get(CPU, threads=2)["gflops"] == 30.0 and fake_measure == [1, 2]   # threads: another key
    doc = json.loads(cache.read_text())
    assert {k.split("|")[2] for k in doc["entries"]} == {"threads=1", "threads=2"}
    assert all(f"torch={torch.__version__}" in k for k in doc["entries"])


def test_remeasure_keeps_the_higher_figure(cache, fake_measure):
    peak.get(CPU, threads=1)                                       # 50
    r = peak.get(CPU, threads=1, remeasure=True)                   # measures 30: slower, not kept
    assert r["gflops"] == 50.0 and r["measured_now_gflops"] == 30.0 and "higher" in r["source"]
    r = peak.get(CPU, threads=1, remeasure=True)                   # 70: kept
    assert r["gflops"] == 70.0 and r["source"] == "measured now"
    assert peak.get(CPU, threads=1)["gflops"] == 70.0


def test_a_broken_or_unwritable_cache_never_stops_a_measurement(cache, fake_measure):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert peak.get(CPU, threads=1)["gflops"] == 50.0              # measured, file rewritten
    assert json.loads(cache.read_text())["kind"] == "bpbench-peak-cache"
    cache.unlink()
    cache.mkdir()                                                  # not a regular file: left alone
    r = peak.get(CPU, threads=1)
    assert r["gflops"] == 30.0 and r["cache"] is None and cache.is_dir()


def test_peak_measurement_is_a_real_matmul_benchmark():
    m = peak.measure(CPU, torch.float32, 1, sizes=(64, 128), min_run_time=0.05)
    assert m["size"] in (64, 128) and math.isfinite(m["gflops"]) and m["gflops"] > 0.01


def test_peak_command(cli, cache, fake_measure):
    r = cli("peak", "--threads", "1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["gflops"] == 50.0
    shown = cli("peak", "--threads", "1")
    assert "peak: 50 GFLOP/s (float32, 1 threads" in shown.stdout and "source: cache" in shown.stdout
    assert "this measurement: 30" in cli("peak", "--threads", "1", "--remeasure").stdout
    for args, msg in ((["--device", "gpu"], "unknown device"), (["--dtype", "int8"], "unknown dtype"),
                      (["--threads", "0"], "positive integer")):
        r = cli("peak", *args)
        assert r.exit_code == 2 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr


# ---------------------------------------------------------------- measurement validity

class FakeEvent:
    """A CUDA event on a fake clock: record() stamps the time, elapsed_time() is in ms."""
    clock = 0.0
    made = 0
    synced = 0

    def __init__(self):
        FakeEvent.made += 1
        self.t = None

    def record(self):
        self.t = FakeEvent.clock

    def synchronize(self):
        FakeEvent.synced += 1

    def elapsed_time(self, end):
        return (end.t - self.t) * 1000.0


def test_cuda_block_timer_reuses_a_fixed_ring_of_events():
    FakeEvent.made = FakeEvent.synced = 0
    FakeEvent.clock = 0.0
    timer = CudaBlockTimer("cuda", block=4, ring=3, event=FakeEvent)
    durations = [1.0] * 4 + [2.0] * 4 + [3.0] * 2 + [5.0] * 4 + [7.0] * 4 + [9.0] * 4
    for i, d in enumerate(durations):
        timer.start()
        FakeEvent.clock += d
        timer.stop()               # every 4th step closes its block
        if i == 9:
            timer.split()          # e.g. the end of warm-up: blocks never mix the two
        if i in (3, 7, 9, 13, 17, 21):
            FakeEvent.clock += 100.0   # host-side pauses between blocks are never counted
    got = timer.seconds()
    assert FakeEvent.made == 6                      # 3 pairs, allocated once, for 6 blocks
    assert FakeEvent.synced >= 3                    # the ring wrapped: old blocks read before reuse
    assert got == pytest.approx(durations)          # each step: its block's mean, in step order


def test_minibatch_order_comes_from_a_cpu_generator_whatever_the_device():
    """CPU and CUDA runs of one seed see the same batches: the permutation is drawn on the CPU and
    moved. The meta device stands in for CUDA here (no data, same code path)."""
    x, y = torch.arange(10.0).view(-1, 1), torch.zeros(10, 1)
    cpu = ResidentBatches(x, y, 4, seed=3)
    meta = ResidentBatches(x.to("meta"), y.to("meta"), 4, seed=3)
    assert cpu.gen.device.type == meta.gen.device.type == "cpu"
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    assert torch.cat([b for b, _ in cpu.epoch()]).view(-1).long().tolist() == expected.tolist()
    assert [b.shape[0] for b, _ in meta.epoch()] == [4, 4, 2]
    assert all(b.device.type == "meta" for b, _ in meta.epoch())


def test_a_noisy_measurement_is_flagged_as_torch_utils_benchmark_does():
    assert StepTimes.of([1.0, 1.0, 1.0, 1.0]).warning() is None
    assert StepTimes.of([1.0, 1.02, 0.98, 1.05, 0.97]).warning() is None
    w = StepTimes.of([1.0, 1.5, 1.0, 1.5, 1.0, 1.5, 2.0, 1.0]).warning()
    assert w and "of the median" in w and "over 10%" in w


def test_env_records_what_changes_a_measurement(cli, monkeypatch):
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    from bpbench.measure import env as envinfo
    env = envinfo.collect(CPU)
    assert env["cuda_launch_blocking"] == "1"
    assert env["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    assert {"tf32", "cuda_driver", "cuda_capability"} <= set(env)


# ---------------------------------------------------------------- comparisons

def test_thread_planning_and_cell_figures():
    from bpbench import comparison as cmp
    cells = cmp.plan(["linreg"], ["cpu", "cuda"], ["manual"], cmp.load_preset("quick"))
    swept = figures.plan_threads(cells, [1, 2])
    assert [(c.device, c.label, dict(c.overrides).get("threads")) for c in swept] == \
        [("cpu", "threads=1", 1), ("cpu", "threads=2", 2), ("cuda", "", None)]
    assert swept[0].argv()[-2:] == ["--set", "threads=1"]
    runs = [{"flops": {"per_step": 16}, "throughput": {"achieved_gflops": g, "percent_of_peak": p,
                                                       "peak_gflops": 40.0}, "env": {"threads": 2}}
            for g, p in ((1.0, 2.5), (3.0, 7.5), (2.0, 5.0))]
    f = figures.cell_figures(runs)
    assert (f["achieved_gflops"], f["percent_of_peak"], f["flops_per_step"], f["threads"]) == (2.0, 5.0, 16, 2)
    cols = dict(figures.table_columns())
    assert cols["GFLOP/s\n(% peak)"](f) == "2 (5%)" and cols["GFLOP/s\n(% peak)"]({}) == "-"


def test_compare_threads_end_to_end(cli, tmp_path):
    """`compare --threads 1,2`: each CPU cell once per thread count, each in its own process."""
    out = tmp_path / "t"
    r = cli("compare", "linreg", "--variant", "manual", "--threads", "1,2", "--set", "epochs=50",
            "--output-dir", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads((out / "results.json").read_text())
    assert [c["runs"][0]["env"]["threads"] for c in doc["cells"]] == [1, 2]
    assert all(c["summary"]["achieved_gflops"] > 0 and c["summary"]["percent_of_peak"] > 0 for c in doc["cells"])
    assert "GFLOP/s" in r.stdout and "(% peak)" in r.stdout and "threads=2" in r.stdout
    header = (out / "results.csv").read_text().splitlines()[0]
    assert "achieved_gflops" in header and "percent_of_peak" in header
    scaling = figures.thread_scaling(doc["cells"])     # labelled with the --set key too
    assert list(scaling) == ["linreg manual epochs=50"] and [n for n, _ in scaling["linreg manual epochs=50"]] == [1, 2]
    if plots.available():
        assert (out / "threads.png").stat().st_size > 1000
    bad = cli("compare", "linreg", "--threads", "0,2")
    assert bad.exit_code == 2 and "--threads" in bad.stderr


def test_width_crossover_is_never_below_the_smallest_width_measured():
    from bpbench.studies import width as study

    def cell(w, dev, step, pct):
        return {"study": "width", "variant": "autograd", "label": f"H={w}", "overrides": {"width": w}, "device": dev,
                "summary": {"step_s_median": step, "percent_of_peak": pct}}
    gpu_always = study.derive([cell(500, "cpu", 2.0, 1.0), cell(500, "cuda", 1.0, 0.1),
                               cell(2000, "cpu", 4.0, 2.0), cell(2000, "cuda", 1.0, 0.4)])
    assert gpu_always["crossover_width"] == 500 and gpu_always["crossover_at_or_below"] is True
    assert gpu_always["rows"][1]["cuda_percent_of_peak"] == 0.4
    later = study.derive([cell(500, "cpu", 1.0, 1.0), cell(500, "cuda", 2.0, 0.1),
                          cell(2000, "cpu", 4.0, 2.0), cell(2000, "cuda", 1.0, 0.4)])
    assert later["crossover_width"] == 2000 and later["crossover_at_or_below"] is False


def test_width_plot_shows_percent_of_peak(tmp_path):
    if not plots.available():
        pytest.skip("matplotlib is not installed")
    doc = {"cells": [], "gd_sgd": None,
           "width": {"rows": [{"width": 500, "cpu_step_s": 6e-4, "cpu_percent_of_peak": 0.5},
                              {"width": 2000, "cpu_step_s": 8e-4, "cpu_percent_of_peak": 1.5}],
                     "crossover_width": None}}
    (path,) = plots.write_all(doc, tmp_path, sections.plots(doc))
    assert path.name == "width.png" and path.stat().st_size > 1000


def width_cell(variant, device, w, step, pct=None, extra=""):
    """A finished width-study cell as compare records it; `extra`: the rest of its label."""
    from synthetic import cell, run_result
    c = cell(run_result("width", variant, device, steps=[step] * 5), study="width",
             label=f"H={w}" + (f", {extra}" if extra else ""), overrides={"width": w, "epochs": 30})
    c["summary"]["percent_of_peak"] = pct
    return c


def width_table(w):
    from bpbench.report import Tab
    from bpbench.studies import width as study
    blocks = study.render(w)
    return next(b for b in blocks if isinstance(b, Tab)), [b for b in blocks if isinstance(b, str)]


def test_width_rows_are_one_per_series_and_width():
    """Two variants at one width are two rows, each with its own step time (the last cell used to
    overwrite the others: compiled's 52 ms shown unlabelled in place of autograd's 660 µs)."""
    from bpbench.studies import width as study
    w = study.derive([width_cell("autograd", "cpu", 300, 660e-6), width_cell("compiled", "cpu", 300, 52e-3)])
    assert [(r["series"], r["width"], r["cpu_step_s"]) for r in w["rows"]] == \
        [("autograd", 300, 660e-6), ("compiled", 300, 52e-3)]
    assert w["series"] == ["autograd", "compiled"]
    tab, _ = width_table(w)
    assert tab.columns[:3] == ["series", "H", "CPU step"]
    assert [r[:3] for r in tab.rows] == [["autograd", "300", "660 µs"], ["compiled", "300", "52 ms"]]
    one, _ = width_table(study.derive([width_cell("autograd", "cpu", 300, 660e-6)]))
    assert one.columns[0] == "H" and one.rows[0][:2] == ["300", "660 µs"]   # one series: no series column
    # --set keys and --threads tell series apart too; CUDA (no threads) is every thread count's GPU side
    t = study.derive([width_cell("autograd", "cpu", 300, 1e-3, extra="lr=0.1, threads=1"),
                      width_cell("autograd", "cpu", 300, 4e-3, extra="lr=0.1, threads=2"),
                      width_cell("autograd", "cuda", 300, 5e-4, extra="lr=0.1")])
    assert [(r["series"], r["cpu_step_s"], r["cuda_step_s"], r["cuda_speedup"]) for r in t["rows"]] == \
        [("autograd lr=0.1, threads=1", 1e-3, 5e-4, 2.0), ("autograd lr=0.1, threads=2", 4e-3, 5e-4, 8.0)]


def test_width_crossover_per_series():
    from bpbench.studies import width as study
    cells = []
    for h, (a_cpu, a_gpu, c_cpu, c_gpu) in ((500, (1.0, 2.0, 2.0, 1.0)), (2000, (4.0, 1.0, 4.0, 0.5))):
        cells += [width_cell("autograd", "cpu", h, a_cpu, 1.0), width_cell("autograd", "cuda", h, a_gpu, 0.1),
                  width_cell("compiled", "cpu", h, c_cpu, 2.0), width_cell("compiled", "cuda", h, c_gpu, 0.2)]
    w = study.derive(cells)
    assert w["crossovers"] == {"autograd": {"width": 2000, "at_or_below": False},
                               "compiled": {"width": 500, "at_or_below": True}}
    assert (w["crossover_width"], w["crossover_at_or_below"]) == (2000, False)   # the first series'
    assert [(r["series"], r["width"], r["cuda_speedup"], r["cuda_percent_of_peak"]) for r in w["rows"]] == \
        [("autograd", 500, 0.5, 0.1), ("autograd", 2000, 4.0, 0.1),
         ("compiled", 500, 2.0, 0.2), ("compiled", 2000, 8.0, 0.2)]
    _, lines = width_table(w)
    assert "crossover (autograd): GPU faster from H = 2,000" in lines
    assert any(x.startswith("crossover (compiled): GPU faster from H = 500 (already") for x in lines)


def test_width_plot_one_line_per_series_and_device_one_legend(tmp_path, monkeypatch):
    """Seconds on the log axis (a scale set after the formatter replaced it), % of peak with its
    own marker, visible at a single width, and one legend for both axes (they overlapped)."""
    if not plots.available():
        pytest.skip("matplotlib is not installed")
    from matplotlib.ticker import EngFormatter

    from bpbench.studies import width as study
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.append(fig) or path)
    study.plot(study.derive([width_cell("autograd", "cpu", 300, 660e-6, 0.5),
                             width_cell("compiled", "cpu", 300, 52e-3, 0.01)]), tmp_path)
    (fig,) = figs
    ax, ax2 = fig.axes
    assert ax.get_yscale() == "log" and isinstance(ax.yaxis.get_major_formatter(), EngFormatter)
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert shown and all(t.endswith("s") for t in shown), shown
    steps = {line.get_label(): line for line in ax.get_lines()}
    assert [steps[k].get_ydata().tolist() for k in ("CPU autograd here (test cpu)", "CPU compiled here (test cpu)")] \
        == [[660e-6], [52e-3]]
    assert steps["CPU autograd here (test cpu)"].get_marker() != steps["CPU compiled here (test cpu)"].get_marker()
    peak = ax2.get_lines()
    assert [line.get_label() for line in peak] == ["CPU autograd % of peak", "CPU compiled % of peak"]
    assert all(line.get_marker() not in ("x", "None", "", None) for line in peak)   # the seed's points are crosses
    assert ax2.get_legend() is None and not fig.legends
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "CPU autograd % of peak" in legend and "CPU compiled here (test cpu)" in legend
    plots.pyplot().close(fig)
