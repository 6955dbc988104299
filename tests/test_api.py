"""The public Python surface: docs/api.md's examples run as shown, and the objects render."""

from __future__ import annotations

import pathlib
import re

import pytest

import bpbench

DOC = pathlib.Path(__file__).parent.parent / "docs" / "api.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_docs_api_examples_run():
    """Every block of docs/api.md, in order, in one namespace (the compare example runs two cells)."""
    blocks = examples()
    assert len(blocks) >= 3
    ns: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), ns)   # noqa: S102  (our own documentation)
    assert [cell["status"] for cell in ns["c"].cells] == ["ok", "ok"]
    assert "| variant |" in ns["c"].markdown()


def test_import_bpbench_stays_cheap_and_exports_the_api():
    import subprocess
    import sys
    code = "import sys, bpbench; assert 'torch' not in sys.modules; print(sorted(bpbench.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'compare'" in out and "'run'" in out
    assert callable(bpbench.run) and callable(bpbench.compare)


def test_run_renders_in_jupyter_and_rich():
    r = bpbench.run("linreg", "manual", epochs=20)
    html = r._repr_html_()
    assert "<pre" in html and "linreg · manual · cpu" in html
    import io

    from rich.console import Console
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(r)
    assert "step time" in console.file.getvalue()
    assert r.to_dict()["timing"]["steps"] == 20 and repr(r).startswith("<bpbench.Run linreg/manual/cpu ok")


def test_bad_settings_raise_bad_input():
    from bpbench.errors import BadInput
    with pytest.raises(BadInput, match="epochs"):
        bpbench.run("linreg", "manual", epochs=0)
    with pytest.raises(BadInput, match="unknown experiment"):
        bpbench.run("nope")
