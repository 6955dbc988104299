"""The graph of one training step of an experiment's model, in the world a variant trains in."""

from __future__ import annotations

from typing import Any

from bpbench import variants
from bpbench.graph import keeps
from bpbench.graph.model import Graph

WORLDS = {"manual": "manual", "module": "autograd"}   # what a variant needs -> the graph drawn


def step_graph(task, world: str, title: str) -> Graph:
    """The graph of one forward and backward of `task`'s model on its first batch (the whole data
    set at batch_size full), with the saved-for-backward table of both worlds attached."""
    x, y = task.batches.sample_batches()[0]
    manual, auto = keeps.record_both(task.model, x, y, title)
    graph = manual.graph if world == "manual" and manual is not None else auto.graph
    graph.saved_for_backward = keeps.compare(manual, auto)
    used = {e.src for e in graph.edges} | {e.dst for e in graph.edges}
    graph.nodes = [n for n in graph.nodes if n.id in used]     # data a model never reads (shopping's)
    return graph


def experiment_graph(info, cfg: dict[str, Any], device) -> Graph:
    """The graph of experiment `info` under a resolved config (its variant picks the world)."""
    import torch

    world = WORLDS.get(variants.get(cfg["variant"]).needs)
    torch.manual_seed(cfg["seed"])                     # as a run seeds before its model is built
    task = info.load().build(cfg, device)
    title = f"{info.name} · {cfg['variant']} · {task.data['name']}: one training step"
    return step_graph(task, world, title)
