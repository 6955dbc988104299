"""CUDA: same numbers as the CPU, GPU memory reported, no host sync in the hot loop.

Marked `cuda`: skipped cleanly on machines without a GPU (see conftest.py). Run with
`make test-cuda` (pytest -m cuda) on a GPU machine.
"""

import json

import pytest
import torch

from bpbench import run as runner

pytestmark = pytest.mark.cuda


def train(name, **flags):
    info, cfg = runner.resolve(name, None, flags)
    return runner.execute(info, cfg)


@pytest.mark.parametrize("variant", ["manual", "autograd", "nn"])
def test_linreg_cuda_matches_cpu(variant):
    c = train("linreg", variant=variant, init="zeros" if variant == "nn" else None)
    g = train("linreg", variant=variant, device="cuda", init="zeros" if variant == "nn" else None)
    assert g["device"] == "cuda" and g["env"]["cuda_device"]
    for k in ("w", "b"):
        assert g["final"]["params"][k] == pytest.approx(c["final"]["params"][k], abs=1e-6)
    assert g["memory"]["cuda_peak_allocated_mib"] is not None
    assert g["timing"]["step_s_median"] > 0


def test_bce_cuda_trace():
    g = train("bce", device="cuda")
    assert g["trace"]["forward"]["loss"] == pytest.approx(0.536884, abs=5e-7)


def test_mnist01_cuda_gd_and_agreement():
    a = train("mnist01", device="cuda", epochs=700)
    assert a["final"]["metrics"]["test_accuracy"] >= 0.99
    m = train("mnist01", device="cuda", variant="manual", epochs=50)
    a50 = train("mnist01", device="cuda", epochs=50)
    assert m["final"]["loss"] == pytest.approx(a50["final"]["loss"], abs=1e-5)
    c50 = train("mnist01", epochs=50)
    assert a50["final"]["loss"] == pytest.approx(c50["final"]["loss"], abs=1e-5)


@pytest.mark.parametrize("variant,batch", [("autograd", "full"), ("autograd", 64), ("manual", 64)])
def test_no_host_sync_in_the_hot_loop(variant, batch):
    info, cfg = runner.resolve("mnist01", None, {"device": "cuda", "variant": variant, "batch_size": batch})
    _, _, s = runner.build_session(info, cfg, torch.device("cuda"))
    s.begin_epoch(1)
    s.step()                              # first step: lazy allocations may sync; not the hot loop
    s.begin_epoch(2)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(min(5, s.steps_per_epoch)):
            s.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_compare_cuda_width(cli):
    d = json.loads(cli("compare", "width", "--device", "all", "--widths", "500,20000", "--steps", "50",
                       "--json").stdout)
    rows = d["width"]["rows"]
    assert all(r["cpu_step_s"] and r["cuda_step_s"] and r["cuda_speedup"] for r in rows)


@pytest.mark.parametrize("experiment,flags", [("width", dict(width=2000, epochs=50)),
                                              ("mnist01", dict(epochs=3, batch_size=1000))])
def test_graphed_matches_autograd(experiment, flags):
    """The CUDA-graph variant replays the same arithmetic (one graph per batch shape)."""
    from bpbench import parity
    ref = train(experiment, device="cuda", variant="autograd", **flags)
    fast = train(experiment, device="cuda", variant="graphed", **flags)
    assert parity.check(fast, ref) == []
    assert fast["timing"]["compile_s"] > 0 and fast["variant_details"]["cuda_graphs"] >= 1
