"""Every model by hand: each experiment's manual variant against autograd within the parity guard,
and the hand-written Adam against torch.optim.Adam."""

import pytest
import torch

from bpbench.results import parity
from bpbench import api
from bpbench.experiments import REGISTRY
from bpbench.variants.manual import Adam

# Short runs (the defaults are the sources' long ones); an experiment not named runs its defaults.
QUICK = {"linreg": {"epochs": 200}, "bce": {"data": "xor", "epochs": 200},
         "mnist01": {"epochs": 3, "batch_size": 1000}, "width": {"width": 64, "epochs": 100}}


def train(experiment, **flags):
    info, cfg = api.resolve(experiment, flops=False, **flags)
    return api.execute(info, cfg)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_manual_matches_autograd(name):
    assert set(QUICK) <= set(REGISTRY)
    assert {"manual", "autograd"} <= set(REGISTRY[name].variants)
    flags = QUICK.get(name, {})
    manual, auto = train(name, variant="manual", **flags), train(name, variant="autograd", **flags)
    assert parity.check(manual, auto) == [], parity.check(manual, auto)
    assert len(manual["history"]) == len(auto["history"]) >= 1


def test_hand_written_adam_is_torch_optim_adam():
    torch.manual_seed(0)
    p = torch.randn(5, 3)
    mine, theirs = p.clone(), torch.nn.Parameter(p.clone())
    adam, opt = Adam(lr=0.01), torch.optim.Adam([theirs], lr=0.01)
    for _ in range(30):
        g = torch.randn(5, 3)
        adam.update({"p": mine}, {"p": g})
        theirs.grad = g.clone()
        opt.step()
    assert torch.equal(mine, theirs.detach())            # the same arithmetic, bit for bit on the CPU
    assert adam.state[mine]["step"].item() == 30


def test_width_allreduce_on_two_ranks_equals_one_process():
    """Adam by hand after the all-reduce: the ranks' update is the single process's."""
    dist = train("width", variant="allreduce", nproc=2, width=32, epochs=15)
    one = train("width", variant="manual", width=32, epochs=15)
    assert dist["reference_variant"] == "manual"
    assert parity.check(dist, one, rtol=1e-5, atol=0) == []


def test_the_width_study_times_seed_004s_variant_unless_asked():
    from bpbench import comparison as cmp
    preset = cmp.load_preset("quick")
    assert {c.variant for c in cmp.plan(["width"], ["cpu"], [], preset)} == {"autograd"}
    asked = cmp.plan(["width"], ["cpu"], ["manual", "autograd"], preset)
    assert {c.variant for c in asked} == {"manual", "autograd"}
