"""The loop's records stay bounded however long the run: step times, history, the estimate."""

import random

import pytest
import torch

from bpbench.measure import loop
from bpbench.measure.loop import LoopConfig, run_loop
from bpbench.measure import records
from bpbench.measure.records import HistoryPlan, StepRecord

CPU = torch.device("cpu")


def fill(times: StepRecord, values, fold_at=()) -> None:
    for i, v in enumerate(values):
        times.append(v)
        if i in fold_at:
            times.fold()


def test_step_times_keep_every_step_while_they_fit():
    values = [float(i) for i in range(20)]
    t = StepRecord(skip=3, keep=32)
    fill(t, values, fold_at={1, 7})
    assert t.sample() == values[3:] and t.stride == 1
    assert (t.warmup_count, t.warmup_s) == (3, 0.0 + 1.0 + 2.0)
    assert (t.count, t.total_s, t.min_s, t.max_s) == (17, sum(values[3:]), 3.0, 19.0)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_step_times_beyond_the_bound_keep_an_evenly_spaced_ordered_sample(chunk):
    rng = random.Random(chunk)
    values = [rng.random() for _ in range(1000)]
    t = StepRecord(skip=5, keep=64)
    fill(t, values, fold_at=set(range(0, 1000, chunk)))
    steady = values[5:]
    sample = t.sample()
    assert 32 <= len(sample) <= 64 and t.stride == 16       # 995 steps: 2^4 apart
    assert sample == steady[::t.stride]                      # steps 0, 16, 32, ...: in order
    assert t.count == 995 and t.total_s == pytest.approx(sum(steady))   # the figures stay exact
    assert (t.min_s, t.max_s) == (min(steady), max(steady))


def test_step_times_memory_does_not_grow_with_the_run():
    t = StepRecord(keep=256)
    for n in range(200):              # 200 folds of 5,000 steps: a million steps
        t.extend([1e-6 * (n % 7)] * 5000)
        assert t.pending() == 5000
        t.fold()
        assert t.pending() == 0 and len(t._kept) <= 256
    assert t.count == 1_000_000 and 128 <= len(t.sample()) <= 256


def test_history_plan_keeps_log_points_evenly_spaced_points_and_the_last():
    plan = HistoryPlan(50_000_000, log_every=10_000_000, points=1000)
    assert plan.spacing == 50_000 and plan.kept_entries() <= 1000 + 5 + 2
    assert plan.keeps(50_000) and plan.keeps(10_000_000) and plan.keeps(50_000_000)
    assert not plan.keeps(1) and not plan.keeps(49_999)
    short = HistoryPlan(500, points=1000)
    assert all(short.keeps(e) for e in range(1, 501))       # a short run keeps every epoch


class Steps:
    """A Trainable with a constant loss; `stop_at` raises Ctrl-C inside that update."""

    def __init__(self, steps_per_epoch=1, stop_at=None):
        self.steps_per_epoch, self.samples_per_epoch = steps_per_epoch, 4 * steps_per_epoch
        self.stop_at, self.calls = stop_at, 0

    def begin_epoch(self, epoch):
        pass

    def step(self):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return torch.tensor(0.5)

    def evaluate(self):
        return {"score": 1.0}


@pytest.fixture
def small_bounds(monkeypatch):
    monkeypatch.setattr(records, "HISTORY_POINTS", 10)
    monkeypatch.setattr(records, "KEEP_STEPS", 64)
    monkeypatch.setattr(loop, "FOLD_EVERY", 16)


def test_the_loop_keeps_bounded_records(small_bounds):
    r = run_loop(Steps(), LoopConfig(epochs=1000, warmup_steps=4, log_every=300), CPU)
    assert [h["epoch"] for h in r.history] == sorted({*range(100, 1001, 100), 300, 600, 900})
    assert r.steps == 1000 and r.steady_steps == 996 and 32 <= len(r.steady_step_s) <= 64
    assert r.steady_stride == 16 and r.steady_total_s >= sum(r.steady_step_s)
    assert r.steady_samples == 996 * 4


def test_the_latest_epoch_is_kept_where_a_run_stops(small_bounds):
    r = run_loop(Steps(stop_at=457), LoopConfig(epochs=1000), CPU)
    assert r.interrupted_at == 457
    assert [h["epoch"] for h in r.history] == [100, 200, 300, 400, 456]   # 456: the last finished


def test_mini_batch_losses_are_kept_only_for_runs_that_stay_small(monkeypatch):
    kept = run_loop(Steps(steps_per_epoch=3), LoopConfig(epochs=2), CPU)
    assert [len(h["batch_losses"]) for h in kept.history] == [3, 3]
    monkeypatch.setattr(loop, "BATCH_LOSSES_MAX", 5)
    dropped = run_loop(Steps(steps_per_epoch=3), LoopConfig(epochs=2), CPU)
    assert all("batch_losses" not in h and h["loss"] == 0.5 for h in dropped.history)


def test_the_estimate_of_a_50_million_update_run_is_small():
    need = records.record_bytes(50_000_000, 50_000_000)
    assert need < 16 * 2**20                                 # was 400 + 200 bytes an update: 27.9 GiB
    assert records.record_bytes(10**12, 10**12, log_every=1) > 2**40   # the log points asked for stay
