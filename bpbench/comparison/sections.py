"""The studies' own sections of a comparison, rendered and drawn: the one place that hands what a
study derived (width's crossover, gd-sgd's loss at equal updates, ...) to the generic reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bpbench import studies
from bpbench.report.format import Block


def blocks(doc: dict[str, Any]) -> list[Block]:
    """Each study's section of `doc` as tables and lines."""
    out: list[Block] = []
    for study in studies.REGISTRY.values():
        if doc.get(study.section):
            out += study.load().render(doc[study.section])
    return out


def plots(doc: dict[str, Any]) -> list[Callable[[Path], list[Path]]]:
    """Each study's plot of `doc`, to draw into a folder."""
    return [lambda out_dir, s=study: s.load().plot(doc[s.section], out_dir)
            for study in studies.REGISTRY.values() if doc.get(study.section)]
