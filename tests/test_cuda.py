"""CUDA: same numbers as the CPU, GPU memory reported, no host sync in the hot loop.

Marked `cuda`: skipped cleanly on machines without a GPU (see conftest.py). Run with
`make test-cuda` (pytest -m cuda) on a GPU machine.
"""

import json

import pytest
import torch

from bpbench import api
from bpbench.measure import run as runner

pytestmark = pytest.mark.cuda


def train(name, **flags):
    info, cfg = runner.resolve(name, None, flags)
    return api.execute(info, cfg)


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
    from bpbench.results import parity
    ref = train(experiment, device="cuda", variant="autograd", **flags)
    fast = train(experiment, device="cuda", variant="graphed", **flags)
    assert parity.check(fast, ref) == []
    assert fast["timing"]["compile_s"] > 0 and fast["variant_details"]["cuda_graphs"] >= 1


# ---------------------------------------------------------------- FLOPs, peak and profiles on the GPU

def test_cuda_flops_phase_peaks_and_env():
    r = train("mnist01", device="cuda", epochs=5)
    assert r["flops"]["forward"] == 2 * 12665 * (784 * 32 + 32)    # the same count as on the CPU
    m = r["memory"]
    assert set(m["cuda_phase_peak_mib"]) == {"forward", "backward", "update"}
    assert all(v >= 0 for v in m["cuda_phase_peak_mib"].values()) and m["cublas_workspace_mib"] >= 0
    assert r["throughput"]["peak_gflops"] > 0 and r["throughput"]["percent_of_peak"] > 0
    env = r["env"]
    major, minor = torch.cuda.get_device_capability()
    assert env["cuda_capability"] == f"{major}.{minor}" and set(env["tf32"]) == {"matmul", "cudnn"}


def test_cuda_block_timer_with_real_events():
    from bpbench.measure.timer import CudaBlockTimer
    a = torch.randn(512, 512, device="cuda")
    timer = CudaBlockTimer(torch.device("cuda"), block=8, ring=4)
    for i in range(100):          # 13 blocks through a ring of 4 pairs
        timer.start()
        a @ a
        timer.stop()
    got = timer.seconds()
    assert len(got) == 100 and all(t > 0 for t in got) and len(timer._events) == 4


def test_cuda_profile_ops_splits_host_and_kernel(tmp_path):
    info, cfg = runner.resolve("mnist01", None, {"device": "cuda", "epochs": 3})
    r = api.execute(info, cfg, profile_ops=True, trace_file=tmp_path / "t.json")
    sp = r["profile"]["split"]
    assert sp["kernel_s"] > 0 and sp["host_s"] > 0 and (tmp_path / "t.json").stat().st_size > 0
    assert any(o.get("self_device_s", 0) > 0 for o in r["profile"]["top_ops"])


def test_cuda_minibatches_match_the_cpu_run():
    """A CPU generator draws the permutation: one seed, the same batches on either device."""
    c = train("mnist01", batch_size=64, epochs=1)
    g = train("mnist01", batch_size=64, epochs=1, device="cuda")
    assert g["final"]["loss"] == pytest.approx(c["final"]["loss"], abs=1e-5)


@pytest.mark.parametrize("variant,reference", [("ddp", "autograd"), ("allreduce", "manual")])
def test_data_parallel_on_nccl_equals_one_gpu_process(variant, reference):
    """One rank per GPU over NCCL (spawned ranks); with one GPU, one rank. The same bar as on
    gloo: the same global batches, the same numbers (TF32 off, as torch's default for matmul)."""
    n = min(torch.cuda.device_count(), 2)
    dist = train("mnist01", device="cuda", variant=variant, nproc=n, batch_size=301, updates=20)
    one = train("mnist01", device="cuda", variant=reference, batch_size=301, updates=20)
    from bpbench.results import parity
    assert parity.check(dist, one, rtol=1e-5, atol=1e-7) == []
    d = dist["distributed"]
    assert (d["world_size"], d["backend"]) == (n, "nccl") and d["comm_s_median"] > 0
