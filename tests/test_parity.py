"""The parity guard: a fast variant's speed counts only when its numbers are the reference's."""

import dataclasses

import pytest
from synthetic import cell, document, run_result

from bpbench import comparison as cmp
from bpbench.results import parity

DIGEST = {"layer1.weight": {"norm": 2.5, "sum": -0.75, "head": [0.4352, 0.3545, 0.1951, 0.4835]},
          "layer1.bias": {"norm": 0.149, "sum": -0.098, "head": [-0.1419, 0.0439]}}


def nudged(digest, name, what, factor):
    d = {k: {**v, "head": list(v["head"])} for k, v in digest.items()}
    if what == "head":
        d[name]["head"][0] *= factor
    else:
        d[name][what] *= factor
    return d


def test_identical_runs_match():
    ref = run_result(variant="autograd", losses=(0.5368, 0.28), param_digest=DIGEST)
    fast = run_result(variant="compiled", losses=(0.5368 * (1 + 5e-5), 0.28), param_digest=DIGEST)
    assert parity.check(fast, ref) == []


@pytest.mark.parametrize("change,reason", [
    ({"losses": (0.5368 * (1 + 3e-4), 0.28)}, "loss differs at epoch 1"),
    ({"losses": (0.5368,)}, "1 epochs of loss history against the reference's 2"),
    ({"param_digest": nudged(DIGEST, "layer1.weight", "norm", 1 + 2e-4)}, "layer1.weight norm differs"),
    ({"param_digest": nudged(DIGEST, "layer1.bias", "head", 1.01)}, "layer1.bias head[0] differs"),
    ({"param_digest": {"layer1.weight": DIGEST["layer1.weight"]}}, "parameter names differ"),
    ({"param_digest": None}, "parameters not checkable: this run has no final.param_digest"),
])
def test_mismatches_are_named(change, reason):
    ref = run_result(variant="autograd", losses=(0.5368, 0.28), param_digest=DIGEST)
    kw = {"losses": (0.5368, 0.28), "param_digest": DIGEST, **change}
    if kw["param_digest"] is None:
        del kw["param_digest"]
    reasons = parity.check(run_result(variant="compiled", **kw), ref)
    assert any(reason in r for r in reasons), reasons


def test_a_sum_near_zero_is_judged_against_the_parameter_norm():
    """sum 1e-9 vs 2e-9 is a 100 % relative difference but noise next to a norm of 2.5."""
    a = nudged(DIGEST, "layer1.weight", "sum", 0)
    a["layer1.weight"]["sum"] = 1e-9
    b = nudged(a, "layer1.weight", "sum", 2.0)
    assert parity.check(run_result(param_digest=a), run_result(param_digest=b)) == []


def pair(fast_losses=(0.5, 0.25), fast_step=5e-5, ref_step=2e-4, compile_s=3.0):
    ref = run_result(variant="autograd", losses=(0.5, 0.25), param_digest=DIGEST, steps=[ref_step] * 30)
    fast = run_result(variant="compiled", losses=fast_losses, param_digest=DIGEST, steps=[fast_step] * 30,
                      reference_variant="autograd", compile_s=compile_s)
    return [cell(fast), cell(ref)]


def test_compare_credits_a_matching_fast_variant_with_its_break_even():
    cells = pair()
    cmp.derive(cells)
    s = cells[0]["summary"]
    assert cells[0]["status"] == "ok" and s["parity_reference"] == "autograd"
    assert s["compile_s"] == 3.0 and s["break_even_steps"] == pytest.approx(3.0 / (2e-4 - 5e-5))   # 20,000


def test_compare_marks_a_mismatch_and_gives_it_no_ratio():
    cells = pair(fast_losses=(0.5, 0.26))
    manual = cell(run_result(variant="manual", losses=(0.5, 0.25), steps=[1e-4] * 30))
    cmp.derive(cells + [manual])
    c = cells[0]
    assert c["status"] == "mismatch" and "loss differs at epoch 2" in c["error"]
    assert "speed_vs_manual" not in c["summary"] and "break_even_steps" not in c["summary"]
    assert cells[1]["summary"]["speed_vs_manual"] == pytest.approx(0.5)   # the reference keeps its ratio
    assert cmp.failures(document(cells)) == [c]
    cells[0]["runs"][0]["history"][1]["loss"] = 0.25        # fixed: derive again, status follows
    cmp.derive(cells)
    assert c["status"] == "ok" and c["error"] is None


def test_slower_fast_variant_never_breaks_even():
    cells = pair(fast_step=3e-4)
    cmp.derive(cells)
    assert cells[0]["summary"]["break_even_steps"] == "never"
    from bpbench.report import compile_lines
    assert "never pays off" in compile_lines(cells)[0]


def test_without_its_reference_cell_a_fast_variant_is_not_checkable():
    fast, _ = pair()
    cmp.derive([fast])
    assert fast["status"] == "mismatch" and "not checkable: no autograd cell ran" in fast["error"]


def test_runs_without_the_new_keys_are_left_alone():
    """Results written before reference_variant / param_digest existed: no parity check at all."""
    c = cell(run_result(variant="autograd"))
    cmp.derive([c])
    assert c["status"] == "ok" and "parity_reference" not in c["summary"]


def test_the_reference_cell_is_planned_before_its_fast_cell_when_not_asked_for():
    fast = cmp.make_cell("matrix", "linreg", "compiled", "cpu", {"epochs": 50, "compile_mode": "default"})
    planned = cmp.with_references([fast])
    ref = cmp.make_cell("matrix", "linreg", "autograd", "cpu", {"epochs": 50})    # less what only compiled takes
    assert planned == [ref, fast] and planned[1].reference == ref.key == "matrix:linreg/autograd/cpu"
    asked = cmp.with_references([ref, fast])        # already in the plan: planned once only
    assert asked == [ref, fast] and asked[1].reference == ref.key
    rec = cmp.run_cell(planned[1], 1, "no machine for it")
    assert rec["reference_key"] == ref.key and rec["status"] == "unavailable"


def test_ddp_cells_of_one_global_batch_share_one_reference_labelled_one_process():
    cells = [cmp.make_cell("scaling", "mnist01", "ddp", "cpu", {"nproc": n, "batch_size": "full"}, tag=f"strong N={n}")
             for n in (1, 2)]
    planned = cmp.with_references(cells)
    assert [c.variant for c in planned] == ["autograd", "ddp", "ddp"]
    assert planned[0].label == "1 process, batch=full" and {c.reference for c in planned[1:]} == {planned[0].key}


def test_a_variant_bound_to_another_device_is_unavailable_there():
    graphed = cmp.make_cell("matrix", "linreg", "graphed", "cpu", {})
    assert cmp.why_unavailable(graphed, set()) == "the graphed variant runs on cuda only"
    assert cmp.why_unavailable(dataclasses.replace(graphed, device="cuda"), {"cuda"}) == \
        "cuda is not available on this machine"
    assert cmp.why_unavailable(dataclasses.replace(graphed, device="cuda"), set()) is None


@pytest.mark.parametrize("value,checked", [("true", True), (True, True), ("false", False), (False, False)])
def test_an_implementation_option_is_checked_against_the_same_variant_without_it(value, checked):
    fused = cmp.make_cell("width", "width", "autograd", "cpu", {"width": 50, "fused": value})
    planned = cmp.with_references([fused])
    if checked:
        assert [c.overrides for c in planned] == [(("width", 50),), (("fused", value), ("width", 50))]
        assert planned[1].reference == planned[0].key
    else:
        assert planned == [fused] and planned[0].reference is None


def test_with_threads_each_fast_cell_has_the_reference_of_its_own_thread_count():
    planned = cmp.plan(["linreg"], ["cpu"], ["compiled"], {}, threads=[1, 2])
    by_key = {c.key: c for c in planned}
    fast = [c for c in planned if c.variant == "compiled"]
    assert len(fast) == 2 and all(by_key[c.reference].variant == "autograd" for c in fast)
    assert [dict(by_key[c.reference].overrides)["threads"] for c in fast] == [1, 2]
