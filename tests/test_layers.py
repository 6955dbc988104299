"""Every hand-written backward against autograd, on random inputs and batches > 1."""

import pytest
import torch

from bpbench import layers as L

torch.manual_seed(0)


def autograd_grads(f, *inputs):
    inputs = [x.clone().requires_grad_(True) for x in inputs]
    out = f(*inputs)
    upstream = torch.randn_like(out) if out.dim() else torch.tensor(1.0, dtype=out.dtype)
    out.backward(upstream)
    return upstream, [x.grad for x in inputs]


@pytest.mark.parametrize("shape", [(1,), (5, 3)])
def test_mul_and_add(shape):
    x, y = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    for layer, f in ((L.Mul(), lambda a, b: a * b), (L.Add(), lambda a, b: a + b)):
        up, (gx, gy) = autograd_grads(f, x, y)
        torch.testing.assert_close(layer.forward(x, y), f(x, y))
        dx, dy = layer.backward(up)
        torch.testing.assert_close(dx, gx)
        torch.testing.assert_close(dy, gy)


def test_mul_seed_001_apple_example():
    # Seed 001: 100 apples x 2, x 1.1 tax = 220; backward gives 2.2, 110, 200.
    apple, tax = L.Mul(), L.Mul()
    price = tax.forward(apple.forward(100, 2), 1.1)
    assert price == pytest.approx(220.0)
    d_apple_price, d_tax = tax.backward(1)
    d_apple, d_num = apple.backward(d_apple_price)
    assert (d_apple, d_num, d_tax) == pytest.approx((2.2, 110, 200))


@pytest.mark.parametrize("layer,f", [(L.ReLU(), torch.relu), (L.Sigmoid(), torch.sigmoid)])
@pytest.mark.parametrize("shape", [(4,), (6, 5)])
def test_activations(layer, f, shape):
    x = torch.randn(shape, dtype=torch.float64)
    up, (gx,) = autograd_grads(f, x)
    torch.testing.assert_close(layer.forward(x), f(x))
    torch.testing.assert_close(layer.backward(up), gx)


@pytest.mark.parametrize("n", [1, 7])
def test_affine(n):
    x = torch.randn(n, 4, dtype=torch.float64)
    w, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    up, (gx, gw, gb) = autograd_grads(torch.nn.functional.linear, x, w, b)
    layer = L.Affine(w, b)
    torch.testing.assert_close(layer.forward(x), torch.nn.functional.linear(x, w, b))
    torch.testing.assert_close(layer.backward(up), gx)
    torch.testing.assert_close(layer.grads["weight"], gw)
    torch.testing.assert_close(layer.grads["bias"], gb)
    assert layer.backward(up, need_dx=False) is None


@pytest.mark.parametrize("n", [1, 8])
def test_softmax_with_loss(n):
    x = torch.randn(n, 10, dtype=torch.float64)
    t = torch.randint(0, 10, (n,))
    _, (gx,) = autograd_grads(lambda z: torch.nn.functional.cross_entropy(z, t), x)
    layer = L.SoftmaxWithLoss()
    torch.testing.assert_close(layer.forward(x, t), torch.nn.functional.cross_entropy(x, t))
    torch.testing.assert_close(layer.backward(), gx)


@pytest.mark.parametrize("n", [1, 9])
def test_sigmoid_bce(n):
    x = torch.randn(n, 1, dtype=torch.float64) * 3
    t = torch.randint(0, 2, (n, 1)).double()
    f = lambda z: torch.nn.functional.binary_cross_entropy(torch.sigmoid(z), t)  # noqa: E731
    _, (gx,) = autograd_grads(f, x)
    layer = L.SigmoidBCE()
    torch.testing.assert_close(layer.forward(x, t), f(x))
    torch.testing.assert_close(layer.backward(), gx)


def test_sigmoid_bce_clamps_like_bceloss():
    x = torch.tensor([[200.0]])          # sigmoid saturates to exactly 1
    t = torch.tensor([[0.0]])
    assert L.SigmoidBCE().forward(x, t).item() == torch.nn.BCELoss()(torch.sigmoid(x), t).item() == 100.0


def test_network_backward_matches_autograd():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
    x, t = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    torch.nn.functional.cross_entropy(model(x), t).backward()
    net = L.Network([("layer1", L.Affine(model[0].weight.detach(), model[0].bias.detach())),
                     ("relu", L.ReLU()),
                     ("layer2", L.Affine(model[2].weight.detach(), model[2].bias.detach()))], L.SoftmaxWithLoss())
    net.loss(x, t)
    net.backward()
    g = net.grads()
    torch.testing.assert_close(g["layer1.weight"], model[0].weight.grad)
    torch.testing.assert_close(g["layer2.bias"], model[2].bias.grad)
    assert list(net.params()) == ["layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"]
