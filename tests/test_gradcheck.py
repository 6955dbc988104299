"""bpbench gradcheck: hand-written backward vs autograd vs float64 central differences."""

import json

import pytest

from bpbench import layers
from bpbench.measure import gradcheck
from bpbench.measure import run as runner


def case(name, **flags):
    info, cfg = runner.resolve(name, None, {"variant": "manual", **flags})
    return info.load().gradcheck_case(cfg)


@pytest.mark.parametrize("name,flags", [("linreg", {}), ("linreg", {"data": "scatter30"}), ("bce", {}),
                                        ("bce", {"data": "xor"}), ("mnist01", {}), ("width", {"width": 64}),
                                        ("shopping", {}), ("shopping", {"data": "apple-orange"})])
def test_gradcheck_passes(name, flags):
    rep = gradcheck.check(case(name, **flags), tol=1e-6, max_elements=64)
    assert rep["ok"], rep
    for c in rep["checks"]:
        assert c["manual_vs_autograd"] < 1e-10 and c["manual_vs_numerical"] < 1e-6


def test_every_experiment_has_a_gradcheck():
    """Every registered experiment has a hand-written backward that gradcheck can check."""
    from bpbench.experiments import REGISTRY
    for name in REGISTRY:
        assert gradcheck.check(case(name), tol=1e-6, max_elements=16)["ok"], name


def test_gradcheck_ten_digit_softmax_net(mnist_dir):
    rep = gradcheck.check(case("mnist01", digits="0-9", data_dir=str(mnist_dir)), max_elements=32)
    assert rep["ok"] and [c["param"] for c in rep["checks"]][0] == "layer1.weight"


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
    # A test double: a Sigmoid whose backward forgets the (1 - y) factor.
    monkeypatch.setattr(layers.Sigmoid, "backward", lambda self, dout: dout * self.out)
    rep = gradcheck.check(case("bce"), tol=1e-6)
    assert not rep["ok"]
    bad = {c["param"] for c in rep["checks"] if not c["ok"]}
    assert bad == {"layer1.weight", "layer1.bias"}   # only the gradients behind the hidden sigmoid


def test_cli_exit_codes_and_json(cli, monkeypatch):
    r = cli("gradcheck", "bce", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["experiment"] == "bce" and d["ok"] is True
    assert {"param", "manual_vs_autograd", "manual_vs_numerical", "autograd_vs_numerical"} <= set(d["checks"][0])
    assert "all gradients agree" in cli("gradcheck", "linreg").stdout
    monkeypatch.setattr(layers.Affine, "backward",
                        lambda self, dout, need_dx=True: (self.grads.update(weight=dout.t().mm(self.x) * 2,
                                                                            bias=dout.sum(0)), dout.mm(self.params["weight"]))[1])
    r = cli("gradcheck", "mnist01", "--max-elements", "16")
    assert r.exit_code == 1 and "FAILED" in r.stdout


@pytest.mark.parametrize("args,msg", [(["gradcheck", "nope"], "unknown experiment"),
                                      (["gradcheck", "bce", "--variant", "zzz"], "unknown variant"),
                                      (["gradcheck", "bce", "--variant", "autograd"], "manual"),
                                      (["gradcheck", "bce", "--lr", "-1"], "lr"),
                                      (["gradcheck", "bce", "--tol", "0"], "--tol")])
def test_gradcheck_bad_input(cli, args, msg):
    r = cli(*args)
    assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
