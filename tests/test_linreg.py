"""linreg against seeds 000 and 003: the printed digits, variant agreement, determinism."""

import pytest

from bpbench import api
from bpbench.measure import run as runner


def train(**flags):
    info, cfg = runner.resolve("linreg", None, flags)
    return api.execute(info, cfg)


def wb(result):
    p = result["final"]["params"]
    return p["w"], p["b"]


def test_manual_reproduces_seed_000_digits():
    w, b = wb(train(variant="manual"))
    # Seed 000 prints w = 2.0048611164093018, b = 0.9857079386711121 (hand-written dw, db).
    assert w == pytest.approx(2.0048611164093018, abs=1e-6)
    assert b == pytest.approx(0.9857079386711121, abs=1e-6)


def test_autograd_reproduces_seed_000():
    w, b = wb(train(variant="autograd"))
    assert w == pytest.approx(2.0048614, abs=1e-6)
    assert b == pytest.approx(0.9857069, abs=1e-6)


def test_seed_000_loss_log():
    r = train(variant="manual")
    by_epoch = {h["epoch"]: h["loss"] for h in r["history"]}
    # Seed 000: "Epoch [100/1000], Loss: 0.0076" ... "Epoch [500/1000], Loss: 0.0007"
    assert round(by_epoch[100], 4) == 0.0076
    assert round(by_epoch[500], 4) == 0.0007
    assert round(by_epoch[1000], 4) == 0.0000
    assert len(r["history"]) == 1000 and r["timing"]["steps"] == 1000


def test_nn_zeros_equals_autograd():
    a = wb(train(variant="autograd"))
    n = wb(train(variant="nn", init="zeros"))
    assert n == pytest.approx(a, abs=1e-6)


@pytest.mark.parametrize("epochs,w,b,cost", [(1000, 0.864, -0.138, 1.393), (5000, 0.877, -0.391, 1.373),
                                             (10000, 0.879, -0.432, 1.372)])
def test_autograd_reproduces_seed_003_table(epochs, w, b, cost):
    r = train(variant="autograd", data="scatter30", epochs=epochs)
    got_w, got_b = wb(r)
    assert (round(got_w, 3), round(got_b, 3), round(r["final"]["loss"], 3)) == (w, b, cost)


@pytest.mark.parametrize("epochs,w,b,cost", [(1000, 0.860, -0.059, 1.406), (10000, 0.877, -0.391, 1.373)])
def test_manual_at_half_lr_is_seed_003_numpy_table(epochs, w, b, cost):
    # Seed 003's NumPy loop folds the gradient's factor 2 into lr 0.001: the true gradient at 0.0005.
    r = train(variant="manual", data="scatter30", epochs=epochs, lr=0.0005)
    got_w, got_b = wb(r)
    assert (round(got_w, 3), round(got_b, 3), round(r["final"]["loss"], 3)) == (w, b, cost)


def test_variants_agree_on_scatter30():
    m = wb(train(variant="manual", data="scatter30", epochs=2000))
    a = wb(train(variant="autograd", data="scatter30", epochs=2000))
    assert m == pytest.approx(a, abs=1e-5)


def test_minibatch_is_seeded_and_deterministic():
    a = train(variant="manual", data="scatter30", batch_size=8, epochs=200, seed=3)
    b = train(variant="manual", data="scatter30", batch_size=8, epochs=200, seed=3)
    c = train(variant="manual", data="scatter30", batch_size=8, epochs=200, seed=4)
    assert wb(a) == wb(b)
    assert wb(a) != wb(c)
    assert a["timing"]["steps"] == 200 * 4   # ceil(30 / 8) updates per epoch


def test_nn_default_init_follows_seed():
    a = train(variant="nn", epochs=1, seed=1)
    b = train(variant="nn", epochs=1, seed=2)
    assert wb(a) != wb(b)


def test_csv_data(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("x,y\n1,3\n2,5\n3,7\n4,9\n")
    assert wb(train(variant="manual", data=str(f))) == wb(train(variant="manual"))
