"""What backprop keeps: bytes saved for backward by autograd (saved_tensors_hooks), by the
hand-written layers (their caches) and by the layers' formula, tensor by tensor."""

import pytest
import torch

from bpbench import api
from bpbench.experiments import REGISTRY
from bpbench.graph import capture, keeps, render_text


def model_and_batch(name, **flags):
    info, cfg = api.resolve(name, **flags)
    torch.manual_seed(cfg["seed"])
    task = info.load().build(cfg, torch.device("cpu"))
    return task.model, *task.batches.sample_batches()[0]


TABLES: dict = {}


def table(name, **flags) -> dict:
    key = (name, tuple(sorted(flags.items())))
    if key not in TABLES:
        TABLES[key] = keeps.measure(*model_and_batch(name, **flags))
    return TABLES[key]


def test_bce_autograd_keeps_exactly_what_the_formula_says():
    t = table("bce")
    # x (8 B) for dW1, sigma (8 B) for the sigmoid and dW2, W2 (8 B) for dsigma, sigma3 and y (4 B each)
    assert t["autograd"] == t["analytic"] == 32
    assert t["manual"] == 24
    assert [d.split(" (")[0] for d in t["differences"]] == ["layer2.weight"]
    assert "reads the parameter itself" in t["differences"][0]
    assert {r["layer"]: (r["autograd"], r["manual"], r["analytic"]) for r in t["layers"]} == {
        "layer1": (8, 8, 8), "act1": (8, 8, 8), "layer2": (8, 0, 8), "loss": (8, 8, 8)}


def test_a_relu_mask_is_the_difference_on_mnist01():
    t = table("mnist01", batch_size=64)
    rows = {r["tensor"]: r for r in t["tensors"]}
    mask = rows["relu1.mask"]
    assert mask["dtype"] == "bool" and mask["manual"] == 64 * 32 and mask["autograd"] is None
    assert rows["relu1 output"]["autograd"] == 64 * 32 * 4      # autograd keeps ReLU's float output
    assert t["manual"] - t["autograd"] == 64 * 32 - 32 * 4     # the mask in, layer2.weight (1x32) out
    assert t["autograd"] == t["analytic"]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_experiment_three_ways_and_the_rows_add_up(name):
    t = table(name)
    for world in ("autograd", "manual", "analytic"):
        assert isinstance(t[world], int) and t[world] > 0, world
        assert sum(r[world] or 0 for r in t["tensors"]) == t[world], world
        assert sum(layer[world] for layer in t["layers"]) == t[world], world
    for r in t["tensors"]:
        if r["autograd"] != r["manual"]:     # every difference is named
            assert any(d.startswith(r["tensor"]) for d in t["differences"]), r
    assert max(len(line) for line in render_text.saved_table(t).splitlines()) <= 100


def test_the_hook_counts_each_storage_once_as_the_nodes_saved_it():
    """saved_tensors_hooks' count equals the union of every grad_fn's `_saved_*` tensors."""
    from bpbench.graph import from_autograd
    model, x, y = model_and_batch("width", width=16)
    rec = from_autograd.record(model.module, model.loss_fn, x, y, model.params(model.module), "")
    union = {s.key: capture.storage_bytes(s.tensor) for s in rec.saved}
    assert set(union) == set(rec.hooked) and sum(union.values()) == rec.total_bytes
    # the ReLU's output is saved by ReluBackward0 and by the second Linear: one storage, counted once
    assert len(rec.saved) > len(union)


def test_a_view_of_a_larger_storage_is_counted_as_a_batch_of_its_own():
    model, x, y = model_and_batch("mnist01", batch_size=32)
    assert capture.storage_bytes(x) > x.numel() * 4        # sample_batches slices the data set
    t = keeps.measure(model, x, y)
    assert {r["tensor"]: r["autograd"] for r in t["tensors"]}["x"] == 32 * 784 * 4
