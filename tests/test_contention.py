"""A busy machine is seen: the kernel's counts read, judged, and one contention induced for real."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bpbench.measure.contention import Probe, read_psi, read_threads
from bpbench.results import contention
from bpbench.results.contention import judge

PSI = "some avg10={a10} avg60=1.00 avg300=0.50 total={total}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


def write_psi(path: Path, avg10: float, total: int) -> None:
    path.write_text(PSI.format(a10=avg10, total=total))


def write_threads(task_dir: Path, threads: dict[str, tuple[int, int]]) -> None:
    for tid, (ran, waited) in threads.items():
        (task_dir / tid).mkdir(parents=True, exist_ok=True)
        (task_dir / tid / "schedstat").write_text(f"{ran} {waited} 17\n")


def test_psi_file_is_read_and_anything_else_is_none(tmp_path):
    f = tmp_path / "cpu"
    write_psi(f, 49.12, 13_550_042)
    assert read_psi(f) == (49.12, 13_550_042)
    f.write_text("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert read_psi(f) is None
    f.write_text("some avg10=x total=y\n")
    assert read_psi(f) is None
    assert read_psi(tmp_path / "absent") is None


def test_thread_counts_are_read_per_thread(tmp_path):
    write_threads(tmp_path, {"101": (5, 7), "102": (11, 13)})
    (tmp_path / "103").mkdir()        # a thread that ended between listing and reading
    assert read_threads(tmp_path) == {"101": (5, 7), "102": (11, 13)}
    assert read_threads(tmp_path / "absent") is None


def probe_over(tmp_path, before: dict, after: dict, psi=((10.0, 0), (40.0, 0)), switches=(0, 0),
               wall=1.0, load=0.5, cpus=2) -> dict:
    """The figures a Probe gives for a loop between two recorded states of /proc."""
    psi_file, tasks = tmp_path / "cpu", tmp_path / "task"
    clock, counts = iter([0.0, wall]), iter(switches)
    p = Probe(psi_path=psi_file, task_dir=tasks, switches=lambda: next(counts), loadavg=lambda: load,
              cpus=lambda: cpus, clock=lambda: next(clock))
    write_psi(psi_file, *psi[0])
    write_threads(tasks, before)
    with p:
        write_psi(psi_file, *psi[1])
        write_threads(tasks, after)
    return p.figures(steps=1000, threads=2)


def test_probe_differences_a_busy_loop(tmp_path):
    # The main thread ran 0.6 s and waited 0.3 s; an OpenMP worker born inside the loop waited 0.1 s.
    c = probe_over(tmp_path, {"1": (2_000_000_000, 50_000_000)},
                   {"1": (2_600_000_000, 350_000_000), "2": (300_000_000, 100_000_000)},
                   psi=((40.0, 5_000_000), (61.5, 5_800_000)), switches=(100, 350), wall=1.25)
    assert c["cpu_s"] == pytest.approx(0.9) and c["run_queue_wait_s"] == pytest.approx(0.4)
    assert c["wait_share"] == pytest.approx(0.4 / 1.3)
    assert c["psi_some_total_us"] == 800_000 and c["psi_some_share"] == pytest.approx(0.64)
    assert c["psi_some_avg10"] == 61.5
    assert c["involuntary_switches"] == 250 and c["involuntary_switches_per_step"] == 0.25
    assert c["involuntary_switches_per_s"] == pytest.approx(200.0) and c["load_per_cpu"] == 0.25
    assert "waited for a CPU 31%" in judge(c)


def test_a_quiet_loop_is_not_contended(tmp_path):
    c = probe_over(tmp_path, {"1": (0, 0)}, {"1": (1_000_000_000, 20_000_000)},
                   psi=((0.0, 10), (0.0, 30_010)), switches=(3, 5))
    assert c["wait_share"] == pytest.approx(0.02 / 1.02) and judge(c) is None


def test_judgement_falls_back_to_what_exists():
    busy_psi = {"wait_share": None, "psi_some_share": 0.45}
    assert "during 45% of the loop" in judge(busy_psi)
    assert judge({"wait_share": None, "psi_some_share": 0.05}) is None
    # run-queue counts decide over PSI: the machine's other tasks waited, this process did not
    assert judge({"wait_share": 0.01, "psi_some_share": 0.9}) is None
    load_only = {"load_per_cpu": 2.0, "involuntary_switches_per_s": 250.0}
    assert "load average 2.0 per CPU" in judge(load_only)
    assert judge({**load_only, "involuntary_switches_per_s": 3.0}) is None   # a stale load average
    assert judge({"load_per_cpu": 2.0, "involuntary_switches_per_s": None}) is None
    assert judge(None) is None and judge({}) is None
    limit = contention.WAIT_SHARE_LIMIT
    assert judge({"wait_share": limit}) is None and judge({"wait_share": limit + 0.01})


INDUCED = """
import json, os, subprocess, sys, time
from bpbench.measure.contention import Probe
from bpbench.results.contention import judge
cpu = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})
spin = "import os, sys; os.sched_setaffinity(0, {%d}); print(1, flush=True)\\nwhile True: pass" % cpu
rival = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE)
try:
    rival.stdout.readline()                       # the rival spins on our CPU now
    with Probe() as p:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.5:     # a CPU-bound loop, half a second of wall time
            pass
    c = p.figures(steps=1, threads=1)
finally:
    rival.kill()
print(json.dumps({"figures": c, "reason": judge(c)}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not Path("/proc/self/task").is_dir()
                    or read_threads() is None, reason="needs Linux affinity and per-thread schedstat")
def test_induced_contention_is_seen():
    """This process and a spinning rival pinned to one CPU: the scheduler shares it, so the loop
    waits about half of the time whatever else the machine runs."""
    out = subprocess.run([sys.executable, "-c", INDUCED], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["figures"]["wait_share"] > 0.25 and "waited for a CPU" in got["reason"], got
    assert got["figures"]["involuntary_switches"] > 0


# ------------------------------------------------------------ run says it; compare keeps it out

BUSY = "its threads waited for a CPU 61% of their runnable time, over 10%"


def test_run_records_the_figures_and_warns_once(cli, monkeypatch):
    monkeypatch.setattr(contention, "judge", lambda figures: BUSY if figures["wall_s"] > 0 else None)
    d = cli.json("run", "linreg", "--epochs", "50")
    t = d["timing"]
    assert t["contended"] is True and t["contention"]["reason"] == BUSY
    assert {"wait_share", "psi_some_share", "involuntary_switches", "load_avg_1m", "cpus"} <= set(t["contention"])
    out = " ".join(cli("run", "linreg", "--epochs", "50").stdout.split())   # rich wraps at 80 columns
    assert out.count("warning: measured on a busy machine") == 1 and BUSY in out


def test_a_quiet_run_is_not_flagged(cli, quiet_machine):
    d = cli.json("run", "linreg", "--epochs", "50")
    assert d["timing"]["contended"] is False and d["timing"]["contention"]["reason"] is None
    assert not any("busy machine" in w for w in d["warnings"])


def busy(run, reason=BUSY):
    run["timing"].update(contended=True, contention={"wait_share": 0.61, "reason": reason})
    return run


def busy_bce_doc():
    """What a busy machine made of bce: manual alone at 120 µs a step; autograd, while two other
    jobs held the cores, at 31.9 ms (alone the same step takes about 120 µs too)."""
    from synthetic import cell, document, run_result
    return document([cell(run_result("bce", "manual", steps=[120e-6] * 40)),
                     cell(busy(run_result("bce", "autograd", steps=[31.9e-3] * 40)))])


def test_compare_keeps_a_busy_cell_out_of_ratios_and_verdicts(cli, tmp_path):
    from synthetic import write
    r = cli("report", write(tmp_path / "busy.json", busy_bce_doc()), "--json")
    cells = {c["variant"]: c["summary"] for c in json.loads(r.stdout)["cells"]}
    assert cells["autograd"]["contended"] and cells["autograd"]["contention"] == BUSY
    assert cells["autograd"].get("speed_vs_manual") is None and cells["manual"]["speed_vs_manual"] == 1.0
    shown = cli("report", tmp_path / "busy.json").stdout
    assert "bce on cpu: autograd not comparable: measured on a busy machine" in shown
    assert not re.search(r"x slower|clearly faster|fastest per step", shown) and "265.8x" not in shown
    assert "busy" in shown and "warning: 1 of 2 cells not comparable" in shown


@pytest.mark.parametrize("side", ["new", "baseline"])
def test_a_busy_side_gets_no_regression_verdict(cli, tmp_path, side):
    """The recorded A/A runs, the new one doctored 50 % slower: a regression at 10 %, unless either
    side was measured on a busy machine, when it is not comparable (never 'slower' or 'faster')."""
    from synthetic import aa_doc, write
    old, new = aa_doc(0), aa_doc(1, scale=1.5)
    for c in (new if side == "new" else old)["cells"]:
        busy(c["runs"][0])
    old_f, new_f = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    r = cli("report", new_f, "--baseline", old_f, "--fail-on-regression", "10")
    assert r.exit_code == 0 and "regression" not in r.stderr, r.stderr
    assert not re.search(r"% (slower|faster)", r.stdout) and "not comparable" in r.stdout   # the column says it
    summaries = [c["summary"] for c in json.loads(cli("report", new_f, "--baseline", old_f, "--json").stdout)["cells"]]
    assert all(s["baseline_regression"] is False and s["baseline_change"] is None for s in summaries)
    assert all("busy machine" in s["baseline_not_comparable"] or BUSY in s["baseline_not_comparable"]
               for s in summaries)


def test_a_world_is_busy_when_any_rank_was():
    """A data-parallel step lasts as long as its slowest rank's: one rank on a busy CPU spoils it."""
    from bpbench.measure.distributed import _merge_contention
    result = {"timing": {"contended": False}, "warnings": []}
    ranks = [{"rank": 0, "contended": False, "contention_reason": None},
             {"rank": 1, "contended": True, "contention_reason": BUSY}]
    _merge_contention(result, ranks)
    assert result["timing"]["contended"] is True and f"rank 1: {BUSY}" in result["warnings"][0]
    quiet = {"timing": {"contended": False}, "warnings": []}
    _merge_contention(quiet, [ranks[0]])
    assert quiet == {"timing": {"contended": False}, "warnings": []}
