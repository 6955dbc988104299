"""The harness on its own: it drives any Trainable and knows nothing of the experiments."""

import math
import time

import pytest
import torch

from bpbench.measure import memory
from bpbench.measure import run as runner
from bpbench.measure.loop import LoopConfig, run_loop
from bpbench.results import files as results
from bpbench.results import timing as stats


class Fake:
    """A Trainable whose loss follows a script: one value per update."""

    def __init__(self, losses, steps_per_epoch=1, sleep=0.0):
        self.losses = list(losses)
        self.steps_per_epoch = steps_per_epoch
        self.samples_per_epoch = 10 * steps_per_epoch
        self.sleep = sleep
        self.calls = 0
        self.epochs = []

    def begin_epoch(self, epoch):
        self.epochs.append(epoch)

    def step(self):
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
        return torch.tensor(self.losses[self.calls - 1])

    def evaluate(self):
        return {"score": float(self.calls)}


CPU = torch.device("cpu")


def test_warmup_is_timed_apart_and_counted():
    f = Fake([1.0] * 10)
    r = run_loop(f, LoopConfig(epochs=10, warmup_steps=3), CPU)
    assert r.steps == 10 and r.warmup_steps == 3
    assert len(r.steady_step_s) == 7 and r.steady_samples == 70
    assert r.warmup_s > 0 and r.train_s >= sum(r.steady_step_s)


def test_epoch_loss_is_the_mean_of_its_steps():
    f = Fake([1.0, 3.0, 5.0, 7.0], steps_per_epoch=2)
    r = run_loop(f, LoopConfig(epochs=2), CPU)
    assert [h["loss"] for h in r.history] == [2.0, 6.0]
    assert [h["updates"] for h in r.history] == [2, 4]


def test_divergence_stops_at_the_first_bad_epoch():
    f = Fake([1.0, 0.5, float("nan"), 0.1, 0.1])
    r = run_loop(f, LoopConfig(epochs=5), CPU)
    assert r.diverged_at == 3 and math.isnan(r.diverged_loss)
    assert f.calls == 3 and len(r.history) == 3


def test_max_updates_stops_mid_epoch():
    f = Fake([1.0] * 20, steps_per_epoch=3)
    r = run_loop(f, LoopConfig(epochs=100, max_updates=7), CPU)
    assert f.calls == 7 and r.history[-1]["epoch"] == 3 and r.history[-1]["updates"] == 7


def test_evaluation_and_logging_points():
    f = Fake([1.0] * 10)
    logged = []
    r = run_loop(f, LoopConfig(epochs=10, log_every=4, eval_every=5), CPU,
                 on_log=lambda entry, n: logged.append((entry["epoch"], n)))
    assert logged == [(4, 10), (8, 10), (10, 10)]
    assert [h["epoch"] for h in r.history if "score" in h] == [4, 5, 8, 10]
    assert all("time_s" in h for h in r.history if "score" in h)


@pytest.mark.parametrize("warmup", [0, 2])
def test_evaluation_time_is_excluded_from_train_time(warmup):
    class SlowEval(Fake):
        def evaluate(self):
            time.sleep(0.05)
            return {}
    f = SlowEval([1.0] * 6, sleep=0.001)
    r = run_loop(f, LoopConfig(epochs=6, eval_every=1, warmup_steps=warmup), CPU)
    assert r.eval_s >= 0.3
    assert 0 < r.train_s < 0.04


def test_stats():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0)
    assert stats.iqr([1.0]) == 0.0 and stats.median([]) is None


def test_peak_rss_sees_a_freed_allocation():
    import mmap
    with memory.PeakRss() as rss:
        start = memory.rss_mib()
        # 64 MiB of fresh anonymous pages, every one touched, unmapped before the block ends (an
        # allocator's cached, already-resident memory could not show a rise)
        block = mmap.mmap(-1, 64 * 1024 * 1024)
        for i in range(0, len(block), mmap.PAGESIZE):
            block[i] = 1
        block.close()
    assert rss.peak >= start + 50 and rss.source


def test_line_profile_of_a_method():
    class Thing:
        def work(self, n):
            a = [0] * n
            return len(a)
    t = Thing()
    prof = memory.LineProfile()
    prof.attach(t, "work")
    assert t.work(10) == 10 and t.work(5) == 5
    table = prof.table()
    assert "Mem usage" in table and "a = [0] * n" in table


def test_atomic_write_replaces_whole_file_and_cleans_up(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    results.write_json(p, {"schema": 1, "experiment": "x", "a": 1})    # a bpbench result: the next write may replace it
    import os

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        results.write_json(p, {"schema": 1, "experiment": "x", "a": 2})
    assert results.json.loads(p.read_text()) == {"schema": 1, "experiment": "x", "a": 1}     # the old file, whole
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]  # no temp file left


def test_small_params():
    ps = {"w": torch.tensor([[2.0]]), "b": torch.tensor([1.0, 2.0])}
    assert runner.small_params(ps) == {"w": 2.0, "b": [1.0, 2.0]}
    assert runner.small_params({"big": torch.zeros(100)}) is None


def test_line_profile_increments_never_exceed_the_peak():
    """memory_profiler measured a nested profiled function's first line from the caller's lines
    or from zero (the whole footprint again at every call) and summed a line's rises over its
    occurrences; here each call is measured in its own frame and a line keeps its largest rise."""
    import re

    from bpbench.measure.memory import LineProfile, rss_mib

    class Net:
        def inner(self):
            block = bytearray(20 * 2**20)
            block[::4096] = b"\1" * len(range(0, len(block), 4096))   # touched: resident
            del block

        def outer(self):
            self.inner()
            return 1

    net, lines = Net(), LineProfile()
    lines.attach(net, "inner")
    lines.attach(net, "outer")
    for _ in range(10):
        net.outer()
    table = lines.table()
    rows = [tuple(map(float, m.groups())) for m in re.finditer(r"^\s*\d+\s+([\d.]+) MiB\s+(-?[\d.]+) MiB\s+(\d+)", table, re.M)]
    assert len(rows) == 7 and all(n in (10, 20) for _, _, n in rows)      # both functions, every call
    assert max(inc for _, inc, _ in rows) < 25                            # one block, not ten, not the footprint
    assert max(mem for mem, _, _ in rows) <= rss_mib() + 25
    assert "Increment: the most one execution" in table
