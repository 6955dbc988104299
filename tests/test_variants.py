"""Variants as plug-ins: the registry, the parity guard, priming, and the fast variants."""

import json

import pytest
import torch

from bpbench import api, experiments, variants
from bpbench.measure import run as runner
from bpbench.results import parity


def train(experiment, **flags):
    info, cfg = runner.resolve(experiment, None, flags)
    return api.execute(info, cfg)


def test_list_shows_each_experiments_variants_from_the_registry(cli, monkeypatch):
    rows = {r["name"]: r for r in json.loads(cli("list", "--json").stdout)}
    for name, info in experiments.REGISTRY.items():     # the default first, then registry order
        offered = [v for v, vi in variants.REGISTRY.items() if vi.needs in info.offers
                   and (not info.only_variants or v in info.only_variants)]
        assert rows[name]["variants"] == [info.default_variant, *[v for v in offered if v != info.default_variant]]
        assert {"manual", "autograd"} <= set(rows[name]["variants"]), name   # every model by hand and by autograd
    # What a model offers decides: linreg alone has an nn twin.
    assert "nn" in rows["linreg"]["variants"] and "nn" not in rows["bce"]["variants"]
    assert rows["mnist01"]["variants"][:2] == ["autograd", "manual"]
    assert rows["width"]["variants"][:2] == ["autograd", "manual"] and "allreduce" in rows["width"]["variants"]
    assert rows["shopping"]["variants"] == ["manual", "autograd"]      # only_variants: one purchase
    # A variant registered for what a model offers shows up with no other change.
    monkeypatch.setitem(variants.REGISTRY, "probe", variants.VariantInfo("probe", "a test variant", needs="manual"))
    rows = {r["name"]: r for r in json.loads(cli("list", "--json").stdout)}
    assert "probe" in rows["bce"]["variants"] and "probe" not in rows["shopping"]["variants"]


def test_every_registered_key_has_a_run_flag(cli):
    help_text = cli("run", "--help").stdout
    keys = {k for info in experiments.REGISTRY.values() for k in info.keys}
    for key in keys:
        assert f"--{key.replace('_', '-')}" in help_text, key


def test_variant_options_apply_only_to_their_variants(cli):
    r = cli("run", "linreg", "--manual", "--fused")
    assert r.exit_code == 2 and "--fused does not apply to the manual variant" in r.stderr
    r = cli("run", "width", "--compile-mode", "reduce-overhead")
    assert r.exit_code == 2 and "does not apply to the autograd variant" in r.stderr


def test_graphed_needs_cuda_one_line(cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli("run", "width", "--variant", "graphed")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "cuda" in r.stderr.lower()


def test_priming_rewinds_to_the_sources_trajectory():
    """Adam on width: the harness primes (2 real steps, rewound) before the clock; the run must
    still equal seed 004's plain loop step for step."""
    r = train("width", width=64, epochs=20, warmup_steps=0)
    torch.manual_seed(5)
    x = torch.linspace(0, 1, 100).reshape(-1, 1)
    y = torch.randn(100).reshape(-1, 1) * 0.01
    net = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.001)
    losses = []
    for _ in range(20):
        loss = torch.nn.MSELoss()(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert [h["loss"] for h in r["history"]] == losses                        # exactly
    assert r["final"]["param_digest"]["layer2.bias"]["head"] == [float(net[2].bias.detach()[0])]
    assert r["timing"]["first_step_s"] > 0 and r["timing"]["compile_s"] is None


def test_diverged_is_a_result_with_a_status():
    r = train("linreg", lr=1.0)
    assert r["status"] == "diverged" and "epoch 17" in r["error"]


@pytest.mark.parametrize("experiment,flags", [
    ("width", dict(width=200, epochs=30)),
    ("mnist01", dict(epochs=2, batch_size=300)),
])
def test_fused_and_foreach_optimizers_match_the_default(experiment, flags):
    ref = train(experiment, **flags)
    for impl in ("fused", "foreach"):
        fast = train(experiment, **{impl: True}, **flags)
        assert parity.check(fast, ref) == [], impl
        assert fast["config"][impl] is True


def test_fused_with_foreach_is_one_line(cli):
    r = cli("run", "width", "--width", "20", "--epochs", "3", "--fused", "--foreach")
    assert r.exit_code == 2 and "fused" in r.stderr and "foreach" in r.stderr and "Traceback" not in r.stderr


def test_parity_guard_catches_a_different_computation():
    ref = train("linreg", variant="autograd", epochs=50)
    other = train("linreg", variant="autograd", epochs=50, lr=0.0101)   # 1% off
    reasons = parity.check(other, ref)
    assert reasons and "epoch" in reasons[0]
    assert parity.check(ref, ref) == []


# torch.compile: each case compiles (5-20 s on 2 cores, less with inductor's cache warm).
@pytest.mark.parametrize("experiment,flags", [
    ("linreg", dict(epochs=200)),
    ("bce", dict(data="xor", epochs=60)),
    ("mnist01", dict(epochs=3, batch_size=1000)),      # 13 and a remainder batch: two shapes
    ("width", dict(width=300, epochs=60)),
])
def test_compiled_matches_autograd(experiment, flags):
    ref = train(experiment, variant="autograd", **flags)
    fast = train(experiment, variant="compiled", **flags)
    assert fast["reference_variant"] == "autograd" and ref["reference_variant"] is None
    assert parity.check(fast, ref) == [], parity.check(fast, ref)
    t = fast["timing"]
    assert t["compile_s"] > 0 and t["first_step_s"] is None
    # compilation is its own phase: nothing compiles again once the clock runs
    details = fast["variant_details"]["compile"]
    assert details["graphs"] >= 1 and details["graphs_compiled_after_prepare"] == 0, details
