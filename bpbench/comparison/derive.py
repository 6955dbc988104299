"""What a comparison derives from its finished cells: summaries, parity, ratios, baseline changes, the
studies' sections. Idempotent: `report` derives again from a saved document.
"""

from __future__ import annotations

import json
from typing import Any

from bpbench import experiments, studies
from bpbench import variants as V
from bpbench.results import contention, figures, files, noise, parity
from bpbench.results.cells import cell_key
from bpbench.results.summary import summarize

# results.csv: its first columns are how a file bpbench may replace is recognised (files.CSV_HEAD)
CSV_COLUMNS = [*files.CSV_HEAD, "repeats",
               "setup_s", "step_s_median", "step_s_iqr", "noise", "train_s", "samples_per_s", "rss_peak_mib",
               "saved_for_backward_bytes",
               "cuda_peak_allocated_mib", "final_loss", "accuracy", "steps", "speed_vs_manual",
               "cuda_speedup", "compile_s", "break_even_steps", "baseline_change", "baseline_fast_change",
               "baseline_significant", "baseline_regression", "contended", "instructions_per_step",
               "error"] + figures.CSV_COLUMNS

# What a cell's cost is, per --metric: its summary's figure, the per-step samples a baseline is
# compared on, and the name of the baseline's figure in the summary.
METRICS = {"time": ("step_s_median", "step_s_all", "baseline_step_s"),
           "instructions": ("instructions_per_step", "instructions_all", "baseline_instructions_per_step")}


# Statuses that make `compare` exit non-zero (unless --keep-going).
FAILED = ("failed", "diverged", "mismatch")


def _config(cell: dict[str, Any]) -> str | None:
    """The run's full resolved config, canonical: what a baseline cell must match."""
    return json.dumps(cell["runs"][-1]["config"], sort_keys=True) if cell.get("runs") else None


def reference_variant(c: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(the variant this cell's runs must match, why its file cannot be trusted on that). The
    registry says which, from the variant and its run's config: a file's `reference_variant` that
    says otherwise (null, to skip the check) is no reason to skip it, and is itself a reason."""
    run = c["runs"][0]
    recorded = run.get("reference_variant")
    if c["variant"] not in V.REGISTRY:   # a variant this bpbench does not know: the file's word
        return recorded, []
    expected = V.reference_of(c["variant"], run.get("config") or {})[0]
    if recorded == expected:
        return expected, []
    return expected, [f"its result names reference variant {recorded!r}, but the {c['variant']} variant "
                      f"must match {expected!r}" if expected else
                      f"its result names reference variant {recorded!r}, but {c['variant']} is a reference itself"]


def _parity(c: dict[str, Any], ref_variant: str, by_key: dict[str, dict]) -> list[str]:
    """Why this cell's runs do not match its reference variant's (empty: they match)."""
    ref = by_key.get(c.get("reference_key") or   # documents written before cells named it: same label
                     cell_key(c["study"], c["experiment"], ref_variant, c["device"], c["label"]))
    if ref is None or not ref.get("runs"):
        return [f"not checkable: no {ref_variant} cell " + ("finished" if ref else "ran") + " to compare with"]
    if ref["status"] not in ("ok", "mismatch"):
        return [f"not checkable: the reference {ref_variant} cell {ref['status']}"]
    return [r for run in c["runs"] for r in parity.check(run, ref["runs"][0])]


def derive(cells: list[dict[str, Any]], baseline: dict[str, Any] | None = None,
           threshold: float = noise.MIN_CHANGE, metric: str = "time") -> list[str]:
    """Fill every cell's derived figures in place: parity status, speed vs the manual variant,
    CUDA speedup, compile break-even, change vs a baseline, each on `metric` (time: the median
    step time; instructions: instructions per step). Returns notes about the baseline.
    Idempotent: `report` runs it again on a saved document."""
    cost = METRICS[metric][0]
    by_key = {c["key"]: c for c in cells}
    for c in cells:   # parity first: a mismatching cell gets no ratio below
        if c["status"] not in ("ok", "mismatch") or not c.get("runs"):
            continue
        ref_variant, reasons = reference_variant(c)
        if ref_variant:
            reasons += _parity(c, ref_variant, by_key)
            c.setdefault("summary", {})["parity_reference"] = ref_variant
        if ref_variant or reasons:
            c["status"], c["error"] = ("mismatch", "; ".join(dict.fromkeys(reasons))) if reasons else ("ok", None)
    # Cells a ratio may be drawn from: finished, matching, and (step times) not measured on a busy
    # machine; instruction counts do not move with the machine's load.
    ok = {k: c for k, c in by_key.items() if c["status"] == "ok" and (c.get("summary") or {}).get(cost)
          and not (metric == "time" and c["summary"].get("contended"))}
    notes, baseline = _comparable(baseline, metric)
    base_cells = [b for b in (baseline or {}).get("cells", []) if b.get("runs") and b["status"] == "ok"]
    base = {(b["experiment"], b["variant"], b["device"], _config(b)): b for b in base_cells}
    for c in cells:
        s = c.setdefault("summary", {})
        for k in [k for k in s if k.startswith("baseline_") or k in ("speed_vs_manual", "speed_baseline", "cuda_speedup", "break_even_steps")]:
            del s[k]
        step = s.get(cost)
        if metric == "time" and s.get("contended") and c["status"] == "ok" and baseline is not None:
            notes += _busy_against_baseline(c, base, s["contention"])
        if c["key"] not in ok:
            continue
        base_variant = V.speed_baseline(experiments.REGISTRY[c["experiment"]].variants) \
            if c["experiment"] in experiments.REGISTRY else None
        ref = ok.get(cell_key(c["study"], c["experiment"], base_variant, c["device"], c["label"]))
        s["speed_vs_manual"] = ref["summary"][cost] / step if ref else None   # the key predates other baselines
        s["speed_baseline"] = base_variant if ref else None
        cpu = ok.get(cell_key(c["study"], c["experiment"], c["variant"], "cpu", c["label"]))
        s["cuda_speedup"] = cpu["summary"][cost] / step if c["device"] == "cuda" and cpu else None
        if s.get("compile_s") is not None and s.get("parity_reference") and metric == "time":
            ref = ok.get(cell_key(c["study"], c["experiment"], s["parity_reference"], c["device"], c["label"]))
            gain = ref["summary"][cost] - step if ref else None
            s["break_even_steps"] = None if gain is None else ("never" if gain <= 0 else s["compile_s"] / gain)
        if baseline is not None:
            notes += _against_baseline(c, base, base_cells, threshold, metric)
    return notes


def doc_metric(doc: dict[str, Any] | None) -> str:
    return (doc or {}).get("metric") or "time"


def _comparable(baseline: dict[str, Any] | None, metric: str) -> tuple[list[str], dict[str, Any] | None]:
    """A baseline measured by another metric compares with nothing here: its times, taken under
    callgrind, are valgrind's; a time baseline has no instruction counts."""
    if baseline is None or doc_metric(baseline) == metric:
        return [], baseline
    return [f"the baseline measured {doc_metric(baseline)} and this comparison {metric}: nothing is compared "
            f"(save a baseline with --metric {metric})"], None


def _against_baseline(c: dict[str, Any], base: dict, base_cells: list[dict], threshold: float,
                      metric: str = "time") -> list[str]:
    s = c["summary"]
    b = base.get((c["experiment"], c["variant"], c["device"], _config(c)))
    if b is None:
        same = [x for x in base_cells if (x["experiment"], x["variant"], x["device"]) ==
                (c["experiment"], c["variant"], c["device"])]
        if not same:
            return []
        mine, theirs = c["runs"][-1]["config"], same[0]["runs"][-1]["config"]
        diff = ", ".join(f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in sorted(set(mine) | set(theirs))
                         if mine.get(k) != theirs.get(k))
        return [f"{c['key']}: not compared with the baseline, whose config differs ({diff})"]
    cost, per_step, base_name = METRICS[metric]
    old = b["summary"].get(cost) if b.get("summary") else None
    old = old or summarize(b["runs"]).get(cost)
    busy = contention.reason(b["runs"]) if metric == "time" else None
    if busy:
        return _busy_against_baseline(c, base, f"the baseline's: {busy}")
    s.update(baseline_key=b["key"], **{base_name: old})
    new_samples, old_samples = noise.samples(c["runs"], per_step), noise.samples(b["runs"], per_step)
    if metric == "instructions":
        return _count_verdict(c["key"], s, noise.paired_ratio(new_samples, old_samples), old, threshold)
    r = noise.ratio(new_samples, old_samples)
    if r is None:   # too few steps (or a baseline from before step times were kept): no verdict
        s.update(baseline_change=s[cost] / old - 1 if old else None, baseline_ci=None,
                 baseline_fast_change=None, baseline_significant=False, baseline_regression=False)
        return [f"{c['key']}: too few recorded step times to tell a change from noise"]
    s.update(baseline_change=r.change, baseline_ci=[r.median.low - 1, r.median.high - 1],
             baseline_fast_change=r.fast.value - 1, baseline_significant=r.significant(threshold),
             baseline_regression=r.slower_beyond(threshold))
    return []


def _busy_against_baseline(c: dict[str, Any], base: dict, why: str) -> list[str]:
    """No change, significant or not, where either side was measured on a busy machine."""
    b = base.get((c["experiment"], c["variant"], c["device"], _config(c)))
    if b is None:
        return []
    c["summary"].update(baseline_key=b["key"], baseline_change=None, baseline_ci=None, baseline_fast_change=None,
                        baseline_significant=False, baseline_regression=False, baseline_not_comparable=why)
    return [f"{c['key']}: {contention.NOT_COMPARABLE} ({why})"]


def _count_verdict(key: str, s: dict[str, Any], r: noise.Interval | None, old: float | None,
                   threshold: float) -> list[str]:
    """Instructions per step against the baseline's, step by step (noise.paired_ratio). With fewer
    than noise.MIN_STEPS counted steps there is no interval, but counts repeat to within a fraction
    of a percent: the plain change against the threshold is the verdict."""
    if r is None:
        change = s["instructions_per_step"] / old - 1 if old else None
        s.update(baseline_change=change, baseline_ci=None, baseline_fast_change=None,
                 baseline_significant=change is not None and abs(change) > threshold,
                 baseline_regression=change is not None and change > threshold)
        return [] if change is not None else [f"{key}: no counted steps here or in the baseline to compare"]
    s.update(baseline_change=r.value - 1, baseline_ci=[r.low - 1, r.high - 1], baseline_fast_change=None,
             baseline_significant=r.beyond_noise() and abs(r.value - 1) > threshold,
             baseline_regression=r.low > 1 and r.value - 1 > threshold)
    return []


def regressions(doc: dict[str, Any]) -> list[str]:
    """One line per cell slower than its baseline (or executing more instructions per step, with
    --metric instructions) beyond the threshold and the noise."""
    out = []
    counted = doc_metric(doc) == "instructions"
    for c in doc["cells"]:
        s = c.get("summary") or {}
        if s.get("baseline_regression"):
            change = s["baseline_change"]
            line = f"{c['key']} " + (f"executes {change:+.1%} more instructions per step" if counted
                                     else f"is {change:+.1%} slower") + " than its baseline"
            if s.get("baseline_ci"):
                lo, hi = s["baseline_ci"]
                fast = s.get("baseline_fast_change")
                line += f" (95% interval {lo:+.1%} to {hi:+.1%}" + \
                    (f"; fast end {fast:+.1%})" if fast is not None else ", step by step)")
            out.append(line)
    return out


def failures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in doc["cells"] if c["status"] in FAILED]


def refresh(doc: dict[str, Any], baseline: dict[str, Any] | None, threshold: float = noise.MIN_CHANGE) -> None:
    """Every derived part of a comparison, from its cells: ratios, baseline changes, study sections."""
    notes = derive(doc["cells"], baseline, threshold, doc_metric(doc))
    if baseline is not None:
        doc["baseline"] = {"source": baseline.get("source"), "created": baseline.get("created"),
                           "saved": baseline.get("saved"), "threshold": threshold, "notes": notes}
    for study in studies.REGISTRY.values():
        doc[study.section] = study.load().derive([c for c in doc["cells"] if c["study"] == study.name])


def csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**{k: c.get(k) for k in ("key", "study", "experiment", "variant", "device", "label",
                                      "status", "error")}, **c.get("summary", {})} for c in doc["cells"]]
