"""The harness's evaluation grid in updates and the per-update losses it keeps."""

from test_harness import CPU, Fake

from bpbench.measure.loop import LoopConfig, run_loop


def test_every_batching_is_evaluated_on_the_same_update_counts():
    """7 updates per epoch or 1: the grid of every 5 updates is the same, mid-epoch included."""
    points = {}
    for per_epoch in (1, 7):
        f = Fake([1.0] * 21, steps_per_epoch=per_epoch)
        r = run_loop(f, LoopConfig(epochs=21 // per_epoch, eval_every_updates=5), CPU)
        points[per_epoch] = [(e["updates"], e["score"]) for e in r.evaluations]
    # evaluate() sees the model right after update 5, 10, ... and after the last one (21)
    assert points[1] == points[7] == [(5, 5.0), (10, 10.0), (15, 15.0), (20, 20.0), (21, 21.0)]


def test_grid_evaluations_are_not_training_time():
    f = Fake([1.0] * 6, steps_per_epoch=3)
    slow = {"n": 0}

    def evaluate():
        import time
        time.sleep(0.05)
        slow["n"] += 1
        return {}
    f.evaluate = evaluate
    r = run_loop(f, LoopConfig(epochs=2, eval_every_updates=2), CPU)
    assert slow["n"] == 3 and r.eval_s >= 0.15 and r.train_s < 0.1
    assert [e["time_s"] < 0.05 for e in r.evaluations] == [True] * 3


def test_mini_batch_epochs_keep_each_updates_loss():
    f = Fake([1.0, 3.0, 5.0, 7.0, 9.0], steps_per_epoch=2)
    r = run_loop(f, LoopConfig(epochs=3, max_updates=5), CPU)
    assert [h.get("batch_losses") for h in r.history] == [[1.0, 3.0], [5.0, 7.0], None]
    assert [h["loss"] for h in r.history] == [2.0, 6.0, 9.0]


def test_on_epoch_gets_the_latest_entry():
    seen = []
    run_loop(Fake([0.5, 0.25]), LoopConfig(epochs=2), CPU, on_epoch=lambda e, n, entry: seen.append(entry["loss"]))
    assert seen == [0.5, 0.25]
