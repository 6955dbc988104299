"""The installed package holds every subpackage: setuptools installs only those pyproject.toml
lists, and a missing or stale entry breaks `pip install` (hence `make demo` and `make test`)."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_subpackage():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "bpbench").rglob("__init__.py")}
    assert on_disk <= listed, f"not in pyproject.toml's packages: {sorted(on_disk - listed)}"
    stale = {p for p in listed - on_disk if p != "bpbench.configs"}     # configs/ is mapped in
    assert not stale, f"pyproject.toml lists packages that do not exist: {sorted(stale)}"
