"""What bounds a step: the ceilings, the dispatch-mode counter, the floors and the bound."""

import math

import pytest
import torch

from bpbench import api, experiments, variants
from bpbench.measure import ceilings, counts, peak
from bpbench.measure import run as runner
from bpbench.measure.flops import count_step as matmul_count
from bpbench.results import bounds, parity

CPU = torch.device("cpu")


def learner_for(experiment, variant=None, **flags):
    info, cfg = runner.resolve(experiment, None, {"variant": variant or experiments.get(experiment).default_variant,
                                                  **flags})
    task, learner, _ = runner.build_session(info, cfg, CPU)
    return task, learner


def first_batch(task):
    return task.batches.sample_batches()[0]


# ---------------------------------------------------------------- the counter, op by op

def counted(fn, *args):
    """The counts of running fn(*args) under the counter (its totals)."""
    mode = counts._mode_class()()
    with mode:
        fn(*args)
    return mode.totals


def test_views_move_nothing_and_an_op_reads_its_inputs_and_writes_its_output():
    x, y = torch.ones(3, 4), torch.ones(3, 4)
    assert counted(lambda: x.t()) == {"matmul_flops": 0, "elementwise_flops": 0, "bytes": 0, "aten_ops": 1}
    c = counted(torch.add, x, y)
    assert (c["bytes"], c["elementwise_flops"], c["aten_ops"]) == (3 * 48, 12, 1)


def test_a_broadcast_operand_is_read_once_and_an_out_buffer_is_not_read():
    x, b, out = torch.ones(100, 8), torch.ones(8), torch.empty(100, 8)
    assert counted(torch.add, x, b.expand(100, 8))["bytes"] == 3200 + 32 + 3200   # the expand: a view, 1 op
    assert counted(lambda: torch.add(x, b, out=out))["bytes"] == 3200 + 32 + 3200
    assert counted(lambda: x.add_(b))["bytes"] == 3200 + 32 + 3200              # in place: reads x too


def test_matrix_products_and_reductions_are_counted_apart():
    a, b = torch.ones(5, 7), torch.ones(7, 3)
    c = counted(torch.mm, a, b)
    assert (c["matmul_flops"], c["elementwise_flops"], c["bytes"]) == (2 * 5 * 7 * 3, 0, 4 * (35 + 21 + 15))
    c = counted(torch.sum, a)
    assert (c["matmul_flops"], c["elementwise_flops"], c["bytes"]) == (0, 35, 4 * 35 + 4)   # one per input element
    c = counted(torch.zeros_like, a)   # reads only a's shape; writes, computes nothing
    assert (c["elementwise_flops"], c["bytes"]) == (0, 4 * 35)


def test_an_in_place_op_that_returns_nothing_is_charged_for_what_it_mutates():
    ps = [torch.ones(10), torch.ones(20)]
    c = counted(torch._foreach_add_, ps, 1.0)
    assert (c["bytes"], c["elementwise_flops"]) == (2 * 4 * 30, 30)


def test_the_counted_step_is_rewound():
    task, learner = learner_for("width", width=40)
    before = {k: v.clone() for k, v in learner.params().items()}
    counts.count_step(learner, *first_batch(task))
    assert all(torch.equal(before[k], v) for k, v in learner.params().items())


# ---------------------------------------------------------------- counts against analytic ones

@pytest.mark.parametrize("experiment", list(experiments.REGISTRY))
def test_matmul_flops_per_phase_are_flopcountermodes(experiment):
    flags = {"width": 300} if experiment == "width" else {}
    task, learner = learner_for(experiment, **flags)
    x, y = first_batch(task)
    mine, theirs = counts.count_step(learner, x, y), matmul_count(learner, x, y)
    assert mine["matmul_flops"] == theirs["per_step"] and mine["flops_per_step"] > 0   # shopping: element-wise alone
    for p in ("forward", "backward", "update"):
        assert mine["phases"][p]["matmul_flops"] == theirs[p]
    for k in ("aten_ops_per_step", "bytes_per_step", "flops_per_step"):
        assert sum(mine["phases"][p][k] for p in mine["phases"]) + mine["outside_phases"][k] == mine[k]


@pytest.mark.parametrize("variant", ["autograd", "manual"])
def test_mnist01_gd_flops_and_bytes(variant):
    """Seed 004's 784-32-1 net on its 12,665 training images, one gradient-descent step: forward
    2N(784*32 + 32*1) FLOPs in matrix products, backward the same plus layer 2's input gradient
    2N*32; every element-wise op (ReLU, sigmoid, the loss, their gradients, the bias adds, the
    update) counts apart. The images are read at least twice: by the forward's product and by the
    backward's weight gradient."""
    task, learner = learner_for("mnist01", variant)
    x, y = first_batch(task)
    n = 12_665
    assert x.shape == (n, 784)
    c = counts.count_step(learner, x, y)
    assert c["phases"]["forward"]["matmul_flops"] == 2 * n * (784 * 32 + 32 * 1)
    assert c["phases"]["backward"]["matmul_flops"] == 2 * n * (784 * 32 + 32 + 32)
    assert c["phases"]["update"]["matmul_flops"] == 0 < c["phases"]["update"]["elementwise_flops"]
    # element-wise work: at least one op per hidden activation (ReLU) and per output, in forward
    assert c["phases"]["forward"]["elementwise_flops"] >= n * 32 + n
    assert c["flops_per_step"] == c["matmul_flops"] + c["elementwise_flops"]
    assert c["bytes_per_step"] >= n * 784 * 4 * 2
    assert sum(c["bytes_by_op_size"].values()) == c["bytes_per_step"]


def profiler_aten_calls(learner, x, y) -> int:
    """ATen calls torch.profiler records for one (rewound) step that reach a kernel from the
    step itself: the outermost aten:: events, with a CompositeImplicitAutograd op (aten::linear,
    aten::broadcast_tensors), which is only a function of other ATen calls, replaced by those."""
    from torch.profiler import ProfilerActivity, profile

    from bpbench.variants.base import rewound

    def composite(name):   # every overload but out= (TorchScript-only ones are not registered)
        packet = getattr(torch.ops.aten, name.removeprefix("aten::"))
        found = []
        for overload in (o for o in packet.overloads() if "out" not in o):
            try:
                found.append(torch._C._dispatch_has_kernel_for_dispatch_key(
                    getattr(packet, overload).name(), "CompositeImplicitAutograd"))
            except RuntimeError:
                pass
        return bool(found) and all(found)

    def counted(e):
        if not e.name.startswith("aten::") or composite(e.name):
            return False
        parent = e.cpu_parent
        while parent is not None and not (parent.name.startswith("aten::") and not composite(parent.name)):
            parent = parent.cpu_parent
        return parent is None

    with rewound(learner), profile(activities=[ProfilerActivity.CPU]) as prof:
        learner.step(x, y)
    return sum(map(counted, prof.events()))


@pytest.mark.parametrize("variant", experiments.REGISTRY["linreg"].variants[:3])   # manual, autograd, nn
def test_linreg_aten_calls_are_the_profilers(variant):
    task, learner = learner_for("linreg", variant)
    x, y = first_batch(task)
    learner.step(x, y)   # optimizer state exists, as after training
    assert counts.count_step(learner, x, y)["aten_ops_per_step"] == profiler_aten_calls(learner, x, y) > 10


# ---------------------------------------------------------------- the floors' arithmetic

# Recorded on this machine (2 cores): a bandwidth curve [bytes touched, GB/s], DRAM's 16 GB/s.
CURVE = [[262144, 104.0], [2097152, 173.0], [16777216, 155.0], [134217728, 14.9], [536870912, 16.0]]
CEIL = {"gflops": 180.0, "bandwidth_gbs": 16.0, "bandwidth_curve": CURVE, "op_overhead_us": 1.6}


def test_an_ops_bandwidth_is_the_best_measured_on_its_size_or_larger():
    assert bounds.bandwidth_at(2 ** 30, CURVE, 16.0) == 16.0          # beyond every cache: DRAM
    assert bounds.bandwidth_at(2 ** 28, CURVE, 16.0) == 16.0          # 128 MiB or more measured: 14.9, 16
    assert bounds.bandwidth_at(2 ** 24, CURVE, 16.0) == 155.0         # fits in L3
    assert bounds.bandwidth_at(2 ** 22, CURVE, 16.0) == 173.0         # 2 MiB's 173 is the best at >= 2 MiB
    assert bounds.bandwidth_at(100, CURVE, 16.0) == 173.0             # smaller than any: the best of all
    assert bounds.bandwidth_at(2 ** 22, [], 16.0) == 16.0             # no curve: the headline figure


def test_floors_bound_and_multiple_on_recorded_counts():
    """A bce-like step: 41 ATen calls of tiny tensors, 71 µs measured."""
    c = {"flops_per_step": 70, "matmul_flops": 28, "elementwise_flops": 42, "bytes_per_step": 556,
         "aten_ops_per_step": 41, "bytes_by_op_size": {"3": 100, "8": 456}}
    a = bounds.analyse(c, CEIL, 71e-6)
    assert a["floors_s"]["overhead"] == pytest.approx(41 * 1.6e-6)
    assert a["floors_s"]["compute"] == pytest.approx(70 / 180e9)
    assert a["floors_s"]["memory"] == pytest.approx(556 / 173e9)
    assert a["bound"] == "overhead" and a["step_over_bound"] == pytest.approx(71 / 65.6, rel=1e-9)
    assert a["arithmetic_intensity"] == pytest.approx(70 / 556) and a["achieved_gflops"] == pytest.approx(70 / 71e-6 / 1e9)


def test_a_large_step_is_memory_bound_at_drams_bandwidth():
    """width H=200,000's reference step as counted here: 0.94 GB, most of it in ops of 80-240 MB."""
    c = {"flops_per_step": 264_200_311, "matmul_flops": 200_000_000, "elementwise_flops": 64_200_311,
         "bytes_per_step": 936_004_552, "aten_ops_per_step": 78,
         "bytes_by_op_size": {"19": 4_858_004, "24": 30_000_000, "26": 341_146_548, "27": 400_000_000,
                              "28": 160_000_000}}
    fl = bounds.floors(c, CEIL)
    assert bounds.bound_of(fl) == "memory"
    expected = 4_858_004 / 173e9 + 30_000_000 / 155e9 + 341_146_548 / 155e9 + 400_000_000 / 16e9 + 160_000_000 / 16e9
    assert fl["memory"] == pytest.approx(expected)
    assert bounds.floors({**c, "bytes_by_op_size": {}}, CEIL)["memory"] == pytest.approx(936_004_552 / 16e9)


def test_a_step_below_its_own_floor_says_a_ceiling_is_too_low():
    c = {"flops_per_step": 70, "bytes_per_step": 556, "aten_ops_per_step": 41}
    assert bounds.floor_warning(bounds.analyse(c, CEIL, 71e-6)) is None
    w = bounds.floor_warning(bounds.analyse(c, CEIL, 50e-6))
    assert "0.76x its overhead floor" in w and "bpbench peak --remeasure" in w
    assert bounds.floor_warning(bounds.analyse(c, CEIL, 50e-6, eager_only=True)) is None   # a compiled step may


def test_a_missing_ceiling_leaves_its_floor_out():
    c = {"flops_per_step": 10, "bytes_per_step": 0, "aten_ops_per_step": 3}
    fl = bounds.floors(c, {"gflops": 1.0})
    assert fl == {"compute": 1e-8, "memory": None, "overhead": None} and bounds.bound_of(fl) == "compute"
    assert bounds.bound_of({"compute": None, "memory": None, "overhead": None}) is None


# ---------------------------------------------------------------- the ceilings

@pytest.fixture
def scripted(monkeypatch):
    """The three measurements replaced by scripted figures: the cache logic alone."""
    script = {"gflops": iter([50.0, 40.0]), "bandwidth_gbs": iter([20.0, 25.0]), "op_overhead_us": iter([2.0, 2.5])}
    calls = []

    def fake(name, extra):
        def measure(*a, **k):
            calls.append(name)
            return {name: next(script[name]), **extra}
        return measure
    monkeypatch.setattr(peak, "measure", fake("gflops", {"size": 8, "sizes": [8], "dtype": "float32",
                                                                "threads": 1, "measured": "m"}))
    monkeypatch.setattr(ceilings, "bandwidth", fake("bandwidth_gbs", {"bandwidth_curve": [[2 ** 29, 20.0]]}))
    monkeypatch.setattr(ceilings, "op_overhead", fake("op_overhead_us", {}))
    return calls


def test_all_three_ceilings_are_measured_once_and_cached(cache, scripted):
    a = peak.get(CPU, threads=1)
    assert (a["gflops"], a["bandwidth_gbs"], a["op_overhead_us"]) == (50.0, 20.0, 2.0)
    b = peak.get(CPU, threads=1)
    assert (b["gflops"], b["bandwidth_gbs"], b["op_overhead_us"]) == (50.0, 20.0, 2.0) and len(scripted) == 3
    assert b["measured_now"] == {}


def test_remeasuring_keeps_the_better_of_each_ceiling(cache, scripted):
    peak.get(CPU, threads=1)
    r = peak.get(CPU, threads=1, remeasure=True)   # 40 GFLOP/s (worse), 25 GB/s (better), 2.5 µs (worse)
    assert (r["gflops"], r["bandwidth_gbs"], r["op_overhead_us"]) == (50.0, 25.0, 2.0)
    assert r["measured_now"] == {"gflops": 40.0, "bandwidth_gbs": 25.0, "op_overhead_us": 2.5}


@pytest.mark.parametrize("broken", [None, float("nan"), -1.0, 0, "20", True, float("inf")])
def test_a_cached_ceiling_that_is_not_a_finite_positive_number_is_measured_again(cache, scripted, broken):
    import json
    peak.get(CPU, threads=1)
    doc = json.loads(cache.read_text())
    (entry,) = doc["entries"].values()
    entry["bandwidth_gbs"] = broken
    if broken is None:
        del entry["bandwidth_gbs"]   # an entry written before bandwidth was measured
    cache.write_text(json.dumps(doc))
    r = peak.get(CPU, threads=1)
    assert (r["gflops"], r["bandwidth_gbs"], r["op_overhead_us"]) == (50.0, 25.0, 2.0)
    assert scripted == ["gflops", "bandwidth_gbs", "op_overhead_us", "bandwidth_gbs"]
    assert r["source"].startswith("cache")     # the peak itself came from the cache


def test_the_bandwidth_and_op_cost_measurements_are_real():
    bw = ceilings.bandwidth(CPU, torch.float32, 1, mib=(0.125, 2), repeats=2)
    sizes = [s for s, _ in bw["bandwidth_curve"]]
    assert sizes == sorted(sizes) and len(sizes) == 4 and all(math.isfinite(g) and g > 0 for _, g in bw["bandwidth_curve"])
    assert bw["bandwidth_gbs"] == max(g for s, g in bw["bandwidth_curve"] if s >= 4 * 2 ** 20)
    op = ceilings.op_overhead(CPU, torch.float32, 1, calls=200, repeats=2)
    assert 0 < op["op_overhead_us"] < 1e4


# ---------------------------------------------------------------- the buffered variant

def test_buffered_is_autograds_arithmetic():
    def train(**flags):
        info, cfg = runner.resolve("width", None, {"width": 300, "epochs": 60, "flops": False, **flags})
        return api.execute(info, cfg)
    ref, fast = train(), train(variant="buffered")
    assert fast["reference_variant"] == "autograd" and parity.check(fast, ref) == []


def test_buffered_applies_to_relu_mlps_with_an_mse_loss_only():
    assert "buffered" in experiments.REGISTRY["width"].variants
    assert "buffered" not in experiments.REGISTRY["mnist01"].variants   # sigmoid output, BCE loss
    from bpbench.errors import BadInput
    task, _ = learner_for("mnist01")
    with pytest.raises(BadInput, match="Sequential of Linear and ReLU"):
        variants.get("buffered").load().learner(task.model, {}, CPU)


# ---------------------------------------------------------------- floors are lower bounds

def single_process_cpu_variants():
    """(experiment, variant) for every experiment in the registry and every variant of it that
    runs in this process on a CPU."""
    return [(name, v) for name, info in experiments.REGISTRY.items() for v in info.variants
            if not variants.get(v).distributed and variants.get(v).device in (None, "cpu")]


# A short run of each: enough steady steps for a median, seconds in all.
SHORT = {"linreg": {"epochs": 300}, "bce": {"epochs": 300}, "mnist01": {"epochs": 6, "warmup_steps": 1},
         "width": {"epochs": 40}}


@pytest.fixture(scope="module")
def quick_ceilings(tmp_path_factory):
    """The three ceilings measured once for this module, quickly, into a cache of its own (one
    thread, the thread count the runs below use). A ceiling is the best of its repeats, and a
    short measurement can only find less than a long one: the floors they give are, if anything,
    lower than a careful measurement's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BPBENCH_CACHE", str(tmp_path_factory.mktemp("ceilings")))
    mp.setattr(ceilings, "CPU_SIZES", (256, 512))
    mp.setattr(ceilings, "CURVE_MIB", (0.125, 1, 8, 64))
    entry = peak.get(CPU, torch.float32, threads=1)
    yield entry
    mp.undo()


@pytest.fixture
def threads_restored():
    """A run given --threads sets this process's thread count: give the next test back its own."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("experiment,variant", single_process_cpu_variants())
def test_no_step_runs_faster_than_any_of_its_floors(quick_ceilings, threads_restored, experiment, variant):
    task, learner = learner_for(experiment, variant)
    if not counts.counts_what_runs(learner):
        pytest.skip(f"{variant} runs kernels the counter cannot see: its floors are the eager step's")
    info, cfg = runner.resolve(experiment, None, {"variant": variant, "threads": 1, **SHORT.get(experiment, {})})
    r = api.execute(info, cfg)
    a = r["analysis"]
    assert a["counted_step"] == "step"
    if next(iter(learner.params().values())).dtype == torch.float32:   # shopping's float64 has its own
        assert a["ceilings"]["gflops"] == quick_ceilings["gflops"]
    step = r["timing"]["step_s_median"]
    for name, floor in a["floors_s"].items():
        assert 0 < floor <= step, (name, floor, step)
    assert a["step_over_bound"] >= 1 and a["bound"] in bounds.BOUNDS


# ---------------------------------------------------------------- what people read

import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

from synthetic import cell, document, run_result  # noqa: E402

# A bce step as counted here: 41 ATen calls of tiny tensors.
BCE_COUNTS = {"flops_per_step": 70, "matmul_flops": 28, "elementwise_flops": 42, "bytes_per_step": 556,
              "aten_ops_per_step": 41, "bytes_by_op_size": {"3": 100, "8": 456},
              "phases": {"forward": {"flops_per_step": 26, "matmul_flops": 12, "elementwise_flops": 14,
                                     "bytes_per_step": 188, "aten_ops_per_step": 17}}}


def analysed(experiment="bce", variant="manual", step=71e-6, counts_=BCE_COUNTS, ceil=CEIL, device="cpu"):
    r = run_result(experiment, variant, device, steps=[step] * 20)
    r["analysis"] = bounds.analyse(counts_, ceil, step)
    return r


def plain(blocks_or_print) -> str:
    from rich.console import Console
    console = Console(width=200, file=io.StringIO(), color_system=None)
    blocks_or_print(console)
    return console.file.getvalue()


def test_runs_table_says_what_bounds_the_step():
    from bpbench.report import print_run
    r = analysed()
    r["timing"]["eval_s"] = 0.0
    r["env"].update(torch="2.14.1", threads=2)
    text = plain(lambda con: print_run(r, con))
    assert re.search(r"│ bound +│ overhead · 41 ATen ops x 1.6 µs = 65.6 µs · step 71 µs = 1.1x the floor ", text)
    assert "70 FLOP (28 matrix products, 42 element-wise) · 556 B read and written · 41 ATen ops" in text
    assert "per phase (ops, bytes, FLOP): forward 17, 188 B, 26" in text


def test_a_compiled_steps_floor_is_named_the_eager_steps():
    from bpbench.report.format import fmt_bound
    a = bounds.analyse(BCE_COUNTS, CEIL, 30e-6, eager_only=True)
    assert a["step_over_bound"] < 1 and "of the eager step this variant compiles or replays" in fmt_bound(a)


def test_a_saved_result_with_an_analysis_is_valid_and_a_bad_bound_is_named():
    from bpbench.errors import BadInput
    from bpbench.results import schema
    r = analysed()
    schema.check(json.dumps(r), schema.RunResult, "r.json", "run result")
    r["analysis"]["bound"] = "fast"
    with pytest.raises(BadInput, match="analysis.bound"):
        schema.check(json.dumps(r), schema.RunResult, "r.json", "run result")


def test_compare_has_a_bound_column_and_writes_a_roofline(tmp_path):
    from bpbench import comparison as cmp
    from bpbench import report
    from bpbench.report import plots
    big = {**BCE_COUNTS, "flops_per_step": 1.27e9, "matmul_flops": 1.27e9, "bytes_per_step": 9.85e7,
           "bytes_by_op_size": {"26": 9.85e7}}
    doc = document([cell(analysed()), cell(analysed("mnist01", "autograd", 39e-3, big))])
    cmp.refresh(doc, None)
    assert [c["summary"]["bound"] for c in doc["cells"]] == ["overhead", "compute"]
    text = plain(lambda con: report.show(report.comparison_blocks(doc), con))
    assert "overhead 1.1x" in text and "compute 5.5x" in text
    assert [p.name for p in plots.write_all(doc, tmp_path)][-1] == "roofline.png"
    assert (tmp_path / "roofline.png").stat().st_size > 1000
    assert plots.roofline_plot(document([cell(run_result())]), tmp_path / "none") == []   # nothing analysed


def test_the_width_study_says_the_bound_per_h_and_why_the_gpu_crosses_over():
    from bpbench.studies import width
    gpu = {"gflops": 50_000.0, "bandwidth_gbs": 4_000.0, "bandwidth_curve": [], "op_overhead_us": 5.0}
    small = {**BCE_COUNTS, "aten_ops_per_step": 78}
    large = {"flops_per_step": 264_200_311, "matmul_flops": 200_000_000, "elementwise_flops": 64_200_311,
             "bytes_per_step": 936_004_552, "aten_ops_per_step": 78, "bytes_by_op_size": {"27": 936_004_552}}
    cells = []
    for dev, ceil, steps in (("cpu", CEIL, (3e-4, 0.4)), ("cuda", gpu, (6e-4, 1.4e-3))):
        for h, c, s in ((500, small, steps[0]), (200_000, large, steps[1])):
            r = analysed("width", "autograd", s, c, ceil, device=dev)
            cells.append(cell(r, study="width", label=f"H={h}", overrides={"width": h, "epochs": 20}))
    w = width.derive(cells)
    # 78 launches of 5 µs outlast 0.94 GB at 4 TB/s: the GPU's step stays overhead-bound
    assert [(r["width"], r["cpu_bound"], r["cuda_bound"]) for r in w["rows"]] == \
        [(500, "overhead", "overhead"), (200_000, "memory", "overhead")]
    text = "\n".join(b for b in width.render(w) if isinstance(b, str))
    assert "CPU bound by H = 500 overhead · H = 200,000 memory (one ATen call 1.6 µs, 16 GB/s, 180 GFLOP/s)" in text
    assert "CUDA bound by H = 500 overhead · H = 200,000 overhead (one ATen call 5 µs, 4,000 GB/s, 50,000 GFLOP/s)" in text
    assert "the GPU loses while both steps are overhead-bound" in text


def test_peak_shows_all_three_ceilings(cli, cache, scripted):
    entry = cli.json("peak", "--threads", "1")
    assert (entry["gflops"], entry["bandwidth_gbs"], entry["op_overhead_us"]) == (50.0, 20.0, 2.0)
    out = " ".join(cli("peak", "--threads", "1").stdout.split())
    assert "peak: 50 GFLOP/s" in out and "bandwidth: 20 GB/s" in out and "op overhead: 2 µs per eager ATen call" in out
    assert "this measurement: 25" in " ".join(cli("peak", "--threads", "1", "--remeasure").stdout.split())


def test_run_json_holds_the_analysis(cli, quick_ceilings):
    r = cli.json("run", "linreg", "--epochs", "50", "--threads", "1")
    a = r["analysis"]
    assert a["bound"] == "overhead" and set(a["floors_s"]) == {"compute", "memory", "overhead"}
    assert (a["flops_per_step"], a["aten_ops_per_step"]) == (52, 18) and a["bytes_per_step"] > 0
    assert set(a["phases"]) == {"forward", "backward", "update"}
    assert a["step_s"] == r["timing"]["step_s_median"]
