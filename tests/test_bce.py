"""bce against seed 002's hand-computed step, and manual vs autograd over many steps."""

import math

import pytest
import torch

from bpbench import api
from bpbench.experiments import bce
from bpbench.measure import run as runner

SEED_002 = {"z1": 0.6478, "z2": 0.7225, "sigma1": 0.6565, "sigma2": 0.6732,
            "z3": -0.3415, "sigma3": 0.4154, "loss": 0.5368}


def train(**flags):
    info, cfg = runner.resolve("bce", None, flags)
    return api.execute(info, cfg)


def seed_002_by_hand() -> dict[str, float]:
    """Seed 002's forward pass written out from its weights (x = [1, 1], y = 0), in float64."""
    import math
    z1 = 0.4352 * 1 + 0.3545 * 1 - 0.1419
    z2 = 0.1951 * 1 + 0.4835 * 1 + 0.0439
    s1, s2 = 1 / (1 + math.exp(-z1)), 1 / (1 + math.exp(-z2))
    z3 = -0.1725 * s1 + 0.1129 * s2 - 0.3043
    s3 = 1 / (1 + math.exp(-z3))
    return {"z1": z1, "z2": z2, "sigma1": s1, "sigma2": s2, "z3": z3, "sigma3": s3, "loss": -math.log(1 - s3)}


@pytest.mark.parametrize("variant", ["manual", "autograd"])
def test_forward_matches_seed_002_hand_values(variant):
    fw = train(variant=variant)["trace"]["forward"]
    assert set(fw) == set(SEED_002)
    exact = seed_002_by_hand()
    for name, ref in SEED_002.items():
        # The seed prints 4 decimals, rounded or (its loss, z3) truncated: the digits must be its digits.
        assert ref in (round(fw[name], 4), math.trunc(fw[name] * 1e4) / 1e4), (name, fw[name], ref)
        assert fw[name] == pytest.approx(exact[name], abs=1e-6), name   # float32 vs the float64 arithmetic
    assert fw["sigma3"] == pytest.approx(0.41543, abs=5e-6)
    assert fw["loss"] == pytest.approx(0.536884, abs=5e-7)


def test_manual_gradients_and_update_equal_pytorch():
    m = train(variant="manual")
    a = train(variant="autograd")
    for key in ("layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"):
        torch.testing.assert_close(torch.tensor(m["trace"]["grads"][key]), torch.tensor(a["trace"]["grads"][key]),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(torch.tensor(m["final"]["params"][key]), torch.tensor(a["final"]["params"][key]),
                                   atol=1e-6, rtol=0)
    # dL/db2 = sigma3 - y = 0.41543 for y = 0; after one step at lr 1, b2 = -0.3043 - 0.41543.
    assert m["trace"]["grads"]["layer2.bias"][0] == pytest.approx(0.41543, abs=5e-6)
    assert m["final"]["params"]["layer2.bias"] == pytest.approx(-0.3043 - 0.415433, abs=1e-5)


def test_independent_pytorch_reference():
    """The seed's own PyTorch code, written out here, against the experiment's result."""
    model = bce.SourceModel()
    with torch.no_grad():
        model.layer1[0].weight.copy_(torch.tensor([[0.4352, 0.3545], [0.1951, 0.4835]]))
        model.layer1[0].bias.copy_(torch.tensor([-0.1419, 0.0439]))
        model.layer2[0].weight.copy_(torch.tensor([[-0.1725, 0.1129]]))
        model.layer2[0].bias.copy_(torch.tensor([-0.3043]))
    opt = torch.optim.SGD(model.parameters(), lr=1)
    loss = torch.nn.BCELoss()(model(torch.tensor([[1.0, 1.0]])), torch.tensor([[0.0]]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    m = train(variant="manual")
    torch.testing.assert_close(torch.tensor(m["final"]["params"]["layer1.weight"]), model.layer1[0].weight.detach(),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("lr,epochs,batch", [(1.0, 300, "full"), (0.1, 300, "full"), (1.0, 100, 8), (5.0, 30, "full")])
def test_manual_equals_autograd_over_many_steps(lr, epochs, batch):
    kw = dict(data="xor", lr=lr, epochs=epochs, batch_size=batch, seed=2)
    m, a = train(variant="manual", **kw), train(variant="autograd", **kw)
    for key, v in m["final"]["params"].items():
        torch.testing.assert_close(torch.tensor(v), torch.tensor(a["final"]["params"][key]), atol=1e-6, rtol=0)
    assert [h["loss"] for h in m["history"]] == pytest.approx([h["loss"] for h in a["history"]], abs=1e-6)


def test_source_single_step_many_epochs():
    m, a = train(variant="manual", epochs=50), train(variant="autograd", epochs=50)
    assert m["final"]["loss"] == pytest.approx(a["final"]["loss"], abs=1e-6)


def test_trace_cli_prints_both_columns(cli):
    r = cli("run", "bce", "--trace")
    assert r.exit_code == 0, r.stderr
    for name in ("z1", "sigma3", "0.4154", "0.5368", "layer2.bias", "parameters after the step"):
        assert name in r.stdout


def test_trace_json_keys(cli):
    d = cli.json("run", "bce", "--autograd", "--trace")
    assert set(d["trace"]["forward"]) == set(SEED_002)
    assert set(d["trace"]["grads"]) == set(d["final"]["params"]) == {
        "layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"}
