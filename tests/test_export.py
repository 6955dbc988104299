"""`report --format github-action-benchmark | bencher`: the JSON that CI dashboards read, and the
gate on instruction counts, on comparisons recorded under callgrind (tests/data)."""

import json

import pytest
from synthetic import DATA, cell, document, run_result, write

from bpbench import comparison as cmp
from bpbench.report.export import EXPORTERS, bencher, github_action_benchmark
from bpbench.results import noise, saved

# The same compare command recorded three times (see each file's "about"): twice as it is, once
# with one more tensor operation in every step (tests/inject/sitecustomize.py).
RECORDED = {name: DATA / f"instructions_{name}.json" for name in ("a", "a_again", "injected")}


def timed_doc():
    steps = [1e-4 * (1 + 0.01 * (i % 7)) for i in range(40)]
    runs = [run_result(steps=steps), run_result(steps=[s * 1.1 for s in steps])]
    runs[1]["memory"]["rss_peak_mib"] = 530.0
    c = cell(runs[0])
    c["runs"] = runs
    c["summary"] = cmp.summarize(runs)
    return document([c])


def test_github_action_benchmark_is_a_list_of_smaller_is_better_entries():
    entries = github_action_benchmark(timed_doc())
    assert [e["name"] for e in entries] == ["matrix:linreg/manual/cpu (latency)", "matrix:linreg/manual/cpu (peak-rss)"]
    assert all(set(e) == {"name", "unit", "value", "range"} for e in entries)
    latency, rss = entries
    samples = [r["timing"]["step_s_all"] for r in timed_doc()["cells"][0]["runs"]]
    assert latency["unit"] == "ns/step" and latency["value"] == pytest.approx(noise.pooled(samples) * 1e9)
    low, high = noise.median_interval([[s * 1e9 for s in r] for r in samples])
    assert latency["range"] == f"± {(high - low) / 2:.6g}"
    assert rss == {"name": rss["name"], "unit": "MiB", "value": 521.0, "range": "± 9"}   # repeats 512, 530


def test_bencher_metric_format_has_the_bootstrap_interval():
    out = bencher(timed_doc())
    latency = out["matrix:linreg/manual/cpu"]["latency"]
    assert latency["lower_value"] < latency["value"] < latency["upper_value"]
    assert out["matrix:linreg/manual/cpu"]["peak-rss"] == {"value": 521.0, "lower_value": 512.0, "upper_value": 530.0}


def test_a_single_run_has_no_interval_of_its_peak_and_failed_cells_export_nothing():
    doc = document([cell(run_result()), cell(run_result("bce"), status="failed")])
    out = bencher(doc)
    assert list(out) == ["matrix:linreg/manual/cpu"]
    assert out["matrix:linreg/manual/cpu"]["peak-rss"] == {"value": 512.0}
    assert [e["range"] for e in github_action_benchmark(doc) if e["unit"] == "MiB"] == [""]


def recorded(name):
    return saved.load(RECORDED[name])


def test_recorded_instruction_cells_export_instructions_only():
    doc = recorded("a")
    out = bencher(doc)
    assert out and all(list(measures) == ["instructions"] for measures in out.values())
    for c in doc["cells"]:
        m = out[c["key"]]["instructions"]
        assert m["value"] == c["summary"]["instructions_per_step"]
        assert m["lower_value"] <= m["value"] <= m["upper_value"]
    assert {e["unit"] for e in github_action_benchmark(doc)} == {"instructions/step"}


@pytest.mark.parametrize("new,regressed", [("a_again", False), ("a", False), ("injected", True)])
def test_the_recorded_gate_fails_the_extra_operation_only(new, regressed):
    """An A/A rerun never fails at 2 %; the extra operation per step always does, in every cell."""
    doc, base = recorded(new), recorded("a")
    cmp.refresh(doc, base, 0.02)
    lines = cmp.regressions(doc)
    assert len(lines) == (len(doc["cells"]) if regressed else 0), lines
    for c in doc["cells"]:
        change = c["summary"]["baseline_change"]
        assert (change > 0.02) if regressed else abs(change) < 0.005, (c["key"], change)


def test_report_exports_and_gates_from_the_command_line(cli, tmp_path):
    r = cli("report", RECORDED["injected"], "--format", "bencher", "--baseline", RECORDED["a"],
            "--fail-on-regression", "2")
    assert r.exit_code == 4, r.stderr
    assert set(json.loads(r.stdout)) == {c["key"] for c in recorded("injected")["cells"]}
    assert "more instructions per step than its baseline" in r.stderr
    r = cli("report", RECORDED["a_again"], "--format", "github-action-benchmark", "--baseline", RECORDED["a"],
            "--fail-on-regression", "2")
    assert r.exit_code == 0, r.stderr
    assert isinstance(json.loads(r.stdout), list)
    r = cli("report", RECORDED["a"], "--format", "nope")
    assert r.exit_code == 2 and "github-action-benchmark" in r.stderr


def test_a_baseline_of_the_other_metric_compares_nothing(cli, tmp_path):
    timed = write(tmp_path / "timed.json", timed_doc())
    r = cli("report", RECORDED["a"], "--baseline", timed, "--fail-on-regression", "2")
    assert r.exit_code == 0 and "the baseline measured time and this comparison instructions" in r.stdout


def test_every_format_is_reachable():
    assert set(EXPORTERS) == {"github-action-benchmark", "bencher"}
