"""The layers of docs/architecture.md, enforced: an import (at the top of a module or inside a
function, absolute, relative or through importlib) goes only to the same layer or a lower one."""

from __future__ import annotations

import ast
import pathlib

import pytest

import bpbench

PACKAGE = pathlib.Path(bpbench.__file__).parent

# Lowest first. A module belongs to the first entry its dotted name starts with.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("bpbench.errors", "bpbench.config", "bpbench.processes")),
    ("results", ("bpbench.results",)),
    ("report", ("bpbench.report",)),
    ("models", ("bpbench.layers", "bpbench.training", "bpbench.data", "bpbench.experiments", "bpbench.variants",
                "bpbench.graph")),
    ("measure", ("bpbench.measure",)),
    ("studies", ("bpbench.studies",)),
    ("comparison", ("bpbench.comparison",)),
    ("api", ("bpbench.api",)),
    ("cli", ("bpbench.cli", "bpbench.__main__")),
]
# The package's face hands the public functions on (lazily): `bpbench.run`, `bpbench.compare`.
ALLOWED = {("bpbench", "bpbench.api")}
# Within measure/, the harness proper knows no experiment: only the glue of one run does.
HARNESS = ("bpbench.measure.loop", "bpbench.measure.timer", "bpbench.measure.memory", "bpbench.measure.env")
HARNESS_FORBIDDEN = ("bpbench.experiments", "bpbench.training", "bpbench.layers", "bpbench.variants",
                     "bpbench.data", "bpbench.measure.run", "bpbench.comparison", "bpbench.studies")
# Generic code reaches experiments, variants and studies through their registries, never by name.
PARTICULAR = ("bpbench.experiments.", "bpbench.variants.", "bpbench.studies.")
PLUGIN_CONTRACTS = ("bpbench.experiments.base", "bpbench.variants.base", "bpbench.variants.phases")


def layer_of(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every module `source` names in an import, at any depth, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    mods = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Import):
            mods += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = package.split(".")[:len(package.split(".")) - (n.level - 1)]
                base = ".".join(parts + ([n.module] if n.module else []))
            mods += [base] + [f"{base}.{a.name}" for a in n.names]
        elif isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) == "import_module" \
                and n.args and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str):
            mods.append(n.args[0].value)
    return [m for m in mods if m == "bpbench" or m.startswith("bpbench.")]


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        yield name, imported_modules(path.read_text(), name, path.name == "__init__.py")


def upward_imports() -> list[str]:
    bad = []
    for name, mods in modules():
        mine = layer_of(name)
        for m in mods:
            theirs = layer_of(m)
            if mine is not None and theirs is not None and theirs > mine and (name, m) not in ALLOWED:
                bad.append(f"{name} ({LAYERS[mine][0]}) imports {m} ({LAYERS[theirs][0]})")
    return bad


def test_every_module_has_a_layer():
    assert [n for n, _ in modules() if layer_of(n) is None and n != "bpbench"] == []


def test_imports_only_go_down():
    assert upward_imports() == []


def test_the_harness_knows_no_experiment():
    for name, mods in modules():
        if name in HARNESS:
            assert not [m for m in mods if m.startswith(HARNESS_FORBIDDEN)], name


def test_generic_code_names_no_particular_plugin():
    """Outside experiments/, variants/ and studies/, a module reaches them through the registries
    (and the plug-in contracts: the learner protocol, the experiment base class), never one by name."""
    bad = []
    for name, mods in modules():
        if name.startswith(("bpbench.experiments", "bpbench.variants", "bpbench.studies")):
            continue
        bad += [f"{name} imports {m}" for m in mods
                if m.startswith(PARTICULAR) and not m.startswith(PLUGIN_CONTRACTS)
                and m.rsplit(".", 1)[-1] not in ("REGISTRY", "get", "option_keys", "reference_of", "chosen")]
    assert bad == []


def test_at_most_eight_modules_at_the_top():
    assert len(list(PACKAGE.glob("*.py"))) <= 8


@pytest.mark.parametrize("line,target", [
    ("import bpbench.api", "bpbench.api"), ("from bpbench import api", "bpbench.api"),
    ("from .. import api", "bpbench.api"), ("from ..cli import common", "bpbench.cli.common"),
    ("importlib.import_module('bpbench.api')", "bpbench.api")])
def test_the_guard_sees_every_spelling(line, target):
    assert target in imported_modules(line, "bpbench.results.files")


def test_the_guard_catches_an_upward_import(tmp_path, monkeypatch):
    """The rule can fail: a results module that reached up into measure would be named."""
    fake = tmp_path / "bpbench"
    (fake / "results").mkdir(parents=True)
    (fake / "results" / "bad.py").write_text("def f():\n    from bpbench.measure import run\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert upward_imports() == ["bpbench.results.bad (results) imports bpbench.measure.run (measure)",
                                "bpbench.results.bad (results) imports bpbench.measure (measure)"] or \
        upward_imports() == ["bpbench.results.bad (results) imports bpbench.measure (measure)",
                             "bpbench.results.bad (results) imports bpbench.measure.run (measure)"]


GENERIC = ("bpbench.cli", "bpbench.api", "bpbench.comparison", "bpbench.measure", "bpbench.report",
           "bpbench.results", "bpbench.config", "bpbench.errors", "bpbench.processes", "bpbench.training")


def plugin_names() -> set[str]:
    from bpbench import experiments, studies, variants
    return set(experiments.REGISTRY) | set(variants.REGISTRY) | set(studies.REGISTRY)


def named_plugins(source: str, names: set[str]) -> list[str]:
    """String constants in `source` that are exactly a registry name ("bce", "manual", "width")."""
    return sorted({n.value for n in ast.walk(ast.parse(source))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names})


def test_generic_code_names_no_experiment_variant_or_study():
    """A new experiment, variant or study costs its module, its registry entry and a config:
    no generic module has a list of them or a special case for one."""
    names = plugin_names()
    bad = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name.startswith(GENERIC):
            found = named_plugins(path.read_text(), names)
            if found:
                bad[name] = found
    assert bad == {}


def test_the_plugin_scan_can_fail():
    assert named_plugins('if cfg["experiment"] == "bce":\n    pass\n', {"bce"}) == ["bce"]
