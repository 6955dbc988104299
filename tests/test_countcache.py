"""The default run's counts come from a per-shape cache: they must be FlopCounterMode's."""

import json

import pytest
import torch

from bpbench import experiments, variants
from bpbench.measure import run as runner
from bpbench.measure.flops import count_step, counted_step
from bpbench.measure import countcache

CPU = torch.device("cpu")


def cpu_variants():
    for name, info in experiments.REGISTRY.items():
        for v in info.variants:
            vi = variants.get(v)
            if not vi.distributed and vi.device in (None, "cpu"):
                yield name, v


def counted(name, variant, **flags):
    """(cached-or-counted figures, FlopCounterMode's own count) of one step of a fresh session."""
    info, cfg = runner.resolve(name, None, {"variant": variant, **flags})
    _, learner, session = runner.build_session(info, cfg, CPU)
    x, y = session.sample_batches()[0]
    got = counted_step(name, cfg, learner, x, y)
    return got, count_step(learner, x, y)


@pytest.mark.parametrize("name,variant", list(cpu_variants()))
def test_cached_counts_are_flop_counter_modes(name, variant, tmp_path, monkeypatch):
    monkeypatch.setenv("BPBENCH_CACHE", str(tmp_path))
    first, fresh = counted(name, variant, epochs=3)
    assert first.pop("source") == "counted now" and first == fresh
    # Another run of the same model (length, seed, logging differ): read back, and still the count.
    again, fresh = counted(name, variant, epochs=7, seed=5, log_every=2, warmup_steps=1)
    assert again.pop("source").startswith("cache (counted ") and again == fresh


def test_a_different_shape_is_counted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("BPBENCH_CACHE", str(tmp_path))
    full, _ = counted("linreg", "manual")
    batch, fresh = counted("linreg", "manual", batch_size=2)        # 2 rows a step, not 4
    assert batch.pop("source") == "counted now" and batch == fresh and batch["per_step"] < full["per_step"]
    wide, fresh = counted("width", "autograd", width=64)
    assert wide.pop("source") == "counted now" and wide == fresh
    doc = json.loads((tmp_path / "counts.json").read_text())
    assert doc["kind"] == "bpbench-count-cache" and len(doc["entries"]) == 3


def test_the_key_leaves_out_only_what_does_not_change_a_step():
    x, w = torch.zeros(4, 1), torch.zeros(1, 1)
    key = lambda cfg, **t: countcache.step_key("flops", "linreg", cfg, "cpu", {"x": x, "w": w, **t})  # noqa: E731
    base = {"variant": "manual", "lr": 0.01, "epochs": 10, "seed": 0, "threads": 2}
    assert key(base) == key({**base, "epochs": 99, "seed": 3, "threads": 1})
    assert key(base) != key({**base, "lr": 0.5}) != key({**base, "fused": True})
    assert key(base) != key(base, x=torch.zeros(5, 1)) != key(base, w=torch.zeros(1, 1, dtype=torch.float64))


def test_an_unwritable_cache_still_gives_the_count(tmp_path, monkeypatch):
    (tmp_path / "counts.json").mkdir()                  # a directory where the file would go
    monkeypatch.setenv("BPBENCH_CACHE", str(tmp_path))
    got, fresh = counted("linreg", "manual")
    assert got.pop("source") == "counted now" and got == fresh
