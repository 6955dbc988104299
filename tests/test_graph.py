"""bpbench graph: the computational graph of one step, its numbers against seeds 001 and 002, the
two worlds (hand-written layers, autograd's grad_fn nodes) against each other, and the pictures."""

import io
import shutil
import subprocess

import pytest
import torch

from bpbench import api
from bpbench.experiments import REGISTRY
from bpbench.experiments import bce as bce_exp
from bpbench.experiments import shopping
from bpbench.graph import render_dot, render_png, render_text, step
from bpbench.graph.model import Graph

SEED_002 = {"z": [0.6478, 0.7225], "sigma": [0.6565, 0.6732], "z3": -0.3415, "sigma3": 0.4154, "loss": 0.5368}
GRAPHS: dict = {}


def graph(name: str, variant: str, **flags) -> Graph:
    """Built once per test session (the mnist01 graphs read 12,665 images)."""
    key = (name, variant, tuple(sorted(flags.items())))
    if key not in GRAPHS:
        info, cfg = api.resolve(name, variant=variant, **flags)
        GRAPHS[key] = step.experiment_graph(info, cfg, torch.device("cpu"))
    return GRAPHS[key]


def grads_of_params(g: Graph) -> dict:
    return {n.label: n.grad.values for n in g.nodes if n.kind == "parameter"}


def flat(v):
    return [x for row in v for x in flat(row)] if isinstance(v, list) else [v]


# ---------------------------------------------------------------- seed 001: the shopping graphs

@pytest.mark.parametrize("variant", ["manual", "autograd"])
def test_apple_graph_is_seed_001s(variant):
    g = graph("shopping", variant)
    price = g.node("result:price" if variant == "manual" else "result:L")
    assert price.output.values == 220.00000000000003 and price.grad.values == 1.0     # dprice = 1
    assert grads_of_params(g) == {"apple": 2.2, "apple_num": 110.00000000000001, "tax": 200.0}
    values = {n.label: n.output.values for n in g.nodes if n.kind == "parameter"}
    assert values == {"apple": 100.0, "apple_num": 2.0, "tax": 1.1}


@pytest.mark.parametrize("variant", ["manual", "autograd"])
def test_apple_orange_graph_is_seed_001s(variant):
    g = graph("shopping", variant, data="apple-orange")
    printed = shopping.PRINTED["apple-orange"]
    assert [n for n in g.nodes if n.kind == "result"][0].output.values == printed["price"] == 715.0000000000001
    assert grads_of_params(g) == printed["grads"]        # 110.00000000000001, 2.2, 3.3000000000000003, 165.0, 650
    if variant == "manual":   # the book's picture: 200 and 450 into the add node, 1.1 back along both
        add = g.inputs_of("add_apple_orange_layer")
        assert [g.node(e.src).output.values for e in add] == [200.0, 450.0]
        assert [e.grad.values for e in add] == [1.1, 1.1]
        assert g.node("mul_tax_layer").output.values == 715.0000000000001


def test_apple_text_shows_the_seeds_digits():
    text = render_text.render(graph("shopping", "manual"))
    for digits in ("220.00000000000003", "110.00000000000001", "2.2", "200.0", "mul_apple_layer ×"):
        assert digits in text


# ---------------------------------------------------------------- seed 002: the 2-2-1 net

def test_bce_manual_edges_carry_seed_002s_forward_values():
    g = graph("bce", "manual")
    out = {label: g.by_label(label).output.values for label in ("layer1", "act1", "layer2", "loss")}
    assert flat(out["layer1"]) == pytest.approx(SEED_002["z"], abs=1e-4)
    assert flat(out["act1"]) == pytest.approx(SEED_002["sigma"], abs=1e-4)
    assert flat(out["layer2"]) == pytest.approx([SEED_002["z3"]], abs=1e-4)
    assert out["loss"] == pytest.approx(SEED_002["loss"], abs=1e-4)   # 0.536884: the seed truncates
    # the edge into act1 carries z, the edge out of it sigma
    (into_act1,) = g.inputs_of("act1")
    assert g.node(into_act1.src).label == "layer1"


def test_bce_autograd_nodes_carry_seed_002s_forward_values():
    g = graph("bce", "autograd")
    by = {n.label: n for n in g.nodes}
    assert flat(by["AddmmBackward0"].output.values) == pytest.approx(SEED_002["z"], abs=1e-4)
    assert flat(by["SigmoidBackward0"].output.values) == pytest.approx(SEED_002["sigma"], abs=1e-4)
    assert by["SigmoidBackward0 #2"].output.values == [[pytest.approx(SEED_002["sigma3"], abs=1e-4)]]
    assert by["BinaryCrossEntropyBackward0"].output.values == pytest.approx(SEED_002["loss"], abs=1e-4)
    assert "layer1.0 (Linear)" in by["AddmmBackward0"].detail        # named by the module it came from


@pytest.mark.parametrize("variant", ["manual", "autograd"])
def test_bce_graph_gradients_are_the_traced_steps(variant):
    """The parameters' gradients on the graph are those `run bce --trace` prints."""
    params = bce_exp.initial_params("cpu")
    x, y = torch.tensor(bce_exp.X_SOURCE), torch.tensor(bce_exp.Y_SOURCE)
    trace = bce_exp.trace_step(variant == "manual", params, x, y, lr=1.0)
    assert grads_of_params(graph("bce", variant)) == trace["grads"]


@pytest.mark.parametrize("name,flags", [("bce", {}), ("bce", {"data": "xor"}), ("shopping", {}),
                                        ("shopping", {"data": "apple-orange"}), ("linreg", {})])
def test_manual_and_autograd_graphs_agree(name, flags):
    """Every value a hand-written layer passes on, with the gradient that comes back to it, is a
    node of autograd's graph with the same value and gradient; and the parameters' gradients agree."""
    manual, auto = graph(name, "manual", **flags), graph(name, "autograd", **flags)
    ops = [n for n in auto.nodes if n.kind == "op" and n.output and n.output.values is not None]
    for node in manual.nodes:
        if node.kind != "op" or node.output.values is None or node.label == "step":
            continue
        twins = [a for a in ops if a.output.shape == node.output.shape and
                 flat(a.output.values) == pytest.approx(flat(node.output.values), rel=1e-5, abs=1e-7)]
        assert twins, node.label
        assert any(flat(a.grad.values) == pytest.approx(flat(node.grad.values), rel=1e-5, abs=1e-8) for a in twins), node.label
    for label, grad in grads_of_params(manual).items():
        assert flat(grads_of_params(auto)[label]) == pytest.approx(flat(grad), rel=1e-5, abs=1e-8), label


# ---------------------------------------------------------------- every experiment draws

@pytest.mark.parametrize("variant", ["manual", "autograd"])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_experiment_draws_in_100_columns(name, variant):
    g = graph(name, variant)
    text = render_text.render(g)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert Graph.from_dict(g.to_dict()) == g
    assert g.saved_for_backward["autograd"] > 0


def test_large_tensors_show_shape_and_dtype():
    g = graph("mnist01", "manual")
    x = g.node("x")
    assert x.output.values is None and x.output.shape == [12665, 784] and x.output.nbytes == 12665 * 784 * 4
    text = render_text.render(g)
    assert "12665×784 float32" in text and "37.88 MiB" in text    # layer1 keeps its input, the data
    assert g.by_label("layer2.bias").output.values is not None     # one value: shown


# ---------------------------------------------------------------- pictures

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name,variant", [("shopping", "manual"), ("bce", "autograd"), ("mnist01", "manual")])
def test_png_without_graphviz_is_a_valid_png(name, variant):
    import matplotlib.image
    data = render_png.render(graph(name, variant))
    assert data.startswith(PNG)
    img = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert img.shape[0] > 200 and img.shape[1] > 400 and img.min() < 0.5     # something drawn on white


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


@needs_dot
@pytest.mark.parametrize("name,variant", [("shopping", "manual"), ("bce", "manual"), ("bce", "autograd"),
                                          ("linreg", "autograd")])
def test_dot_parses_and_renders(name, variant, tmp_path):
    src = render_dot.source(graph(name, variant))
    r = subprocess.run(["dot", "-Tsvg"], input=src.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert b"<svg" in r.stdout
    assert render_dot.render(graph(name, variant), "png").startswith(PNG)


def test_dot_source_needs_no_graphviz_program(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    src = render_dot.source(graph("shopping", "manual"))
    assert src.startswith("digraph bpbench_graph {") and src.rstrip().endswith("}")
    assert "220.00000000000003" in src and "#c0392b" in src        # values, gradients in red


def test_svg_without_dot_is_one_clear_error(monkeypatch):
    from bpbench.errors import BadInput
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BadInput, match="apt-get install graphviz") as e:
        render_dot.render(graph("shopping", "manual"), "svg")
    assert "--engine matplotlib" in str(e.value) and "\n" not in str(e.value)
