"""`bpbench graph` on the command line, and saved-for-backward in `run` and `compare`."""

import json
import shutil

import pytest

from bpbench.graph import render_dot
from bpbench.graph.model import Graph
from bpbench.report.tables import group_table
from synthetic import cell, run_result

PNG = b"\x89PNG\r\n\x1a\n"


def test_graph_shopping_prints_seed_001s_graph(cli):
    r = cli("graph", "shopping")
    assert r.exit_code == 0, r.stderr
    assert "220.00000000000003" in r.stdout and "110.00000000000001" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 100
    assert "autograd 32 B · manual 32 B · analytic 32 B" in r.stdout


def test_graph_json_is_the_graph(cli):
    g = Graph.from_dict(json.loads(cli("graph", "shopping", "--data", "apple-orange", "--format", "json").stdout))
    assert g.world == "manual" and g.by_label("mul_tax_layer").output.values == 715.0000000000001
    auto = Graph.from_dict(json.loads(cli("graph", "bce", "--variant", "autograd", "--format", "json").stdout))
    assert auto.world == "autograd" and auto.saved_for_backward["autograd"] == 32


@pytest.mark.parametrize("fmt,engine", [("text", "auto"), ("json", "auto"), ("dot", "auto"), ("png", "matplotlib"),
                                        ("svg", "matplotlib"),
                                        *[(f, "graphviz") for f in ("png", "svg") if shutil.which("dot")]])
def test_graph_replaces_its_own_output_but_no_other_file(cli, tmp_path, fmt, engine):
    out = tmp_path / f"g.{fmt}"
    args = ["graph", "shopping", "--format", fmt, "--engine", engine, "--output", out]
    assert cli(*args).exit_code == 0 and cli(*args).exit_code == 0      # the second run replaces the first
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    r = cli("graph", "shopping", "--format", fmt, "--engine", engine, "--output", other)
    assert r.exit_code == 2 and "--force" in r.stderr and other.read_text() == "my notes\n"
    assert cli("graph", "shopping", "--format", fmt, "--engine", engine, "--output", other, "--force").exit_code == 0


def test_graph_png_and_dot_files(cli, tmp_path, monkeypatch):
    r = cli("graph", "bce", "--format", "dot", "--output", tmp_path / "g.dot")
    assert r.exit_code == 0 and (tmp_path / "g.dot").read_text().startswith("digraph")
    monkeypatch.setattr(render_dot, "has_dot", lambda: False)       # no Graphviz: matplotlib draws it
    r = cli("graph", "shopping", "--format", "png", "--output", tmp_path / "g.png")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "g.png").read_bytes().startswith(PNG) and "matplotlib draws" in r.stderr
    r = cli("graph", "shopping", "--format", "svg", "--engine", "matplotlib", "--output", tmp_path / "g.svg")
    assert r.exit_code == 0 and "<svg" in (tmp_path / "g.svg").read_text()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_svg_through_graphviz(cli, tmp_path):
    r = cli("graph", "mnist01", "--variant", "manual", "--set", "batch_size=64", "--format", "svg",
            "--output", tmp_path / "g.svg")
    assert r.exit_code == 0, r.stderr
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "64×784 float32" in svg


@pytest.mark.parametrize("args,msg", [
    (["graph", "nope"], "unknown experiment"),
    (["graph", "bce", "--variant", "compiled"], "--variant autograd draws it"),
    (["graph", "bce", "--variant", "zzz"], "unknown variant"),
    (["graph", "bce", "--format", "gif"], "unknown --format"),
    (["graph", "shopping", "--data", "pears"], "unknown --data 'pears'"),
    (["graph", "bce", "--set", "batch_size=0"], "--batch-size must be a positive integer"),
])
def test_graph_bad_input_is_one_line(cli, args, msg):
    r = cli(*args)
    assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_svg_without_graphviz_is_exit_2_naming_the_package(cli, monkeypatch):
    monkeypatch.setattr(render_dot, "has_dot", lambda: False)
    r = cli("graph", "bce", "--format", "svg")
    assert r.exit_code == 2 and "apt-get install graphviz" in r.stderr and len(r.stderr.splitlines()) == 1
    assert "--engine matplotlib" in r.stderr
    r = cli("graph", "bce", "--format", "png", "--engine", "graphviz", "--output", "x.png")
    assert r.exit_code == 2 and "needs Graphviz" in r.stderr


def test_run_json_has_saved_for_backward_three_ways(cli):
    d = cli.json("run", "bce")
    sfb = d["memory"]["saved_for_backward"]
    assert (sfb["autograd"], sfb["manual"], sfb["analytic"], sfb["world"]) == (32, 24, 32, "manual")
    assert [layer["layer"] for layer in sfb["layers"]] == ["layer1", "act1", "layer2", "loss"]
    assert "layer2.weight" in sfb["differences"][0]
    table = cli("run", "bce", "--variant", "autograd").stdout
    assert "autograd 32 B · manual 24 B · analytic 32 B" in table and "layer2.weight" in table


def test_compare_has_a_saved_for_backward_column():
    sfb = {"autograd": 32, "manual": 24, "analytic": 32, "world": "manual"}
    runs = [run_result("bce", v, memory={"rss_start_mib": 1.0, "rss_peak_mib": 2.0, "cuda_peak_allocated_mib": None,
                                         "saved_for_backward": {**sfb, "world": v}}) for v in ("manual", "autograd")]
    cells = [cell(r) for r in runs]
    assert [c["summary"]["saved_for_backward_bytes"] for c in cells] == [24, 32]     # each its own world's
    tab = group_table("matrix", "bce", cells, devices=1, wide=False, baseline=False)
    col = tab.columns.index("saved\nfor bwd")
    assert [row[col] for row in tab.rows] == ["24 B", "32 B"]
