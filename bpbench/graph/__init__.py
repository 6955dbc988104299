"""Computational graphs of one training step, with values, gradients and what backward keeps.

- model: the graph as plain data (torch-free): nodes, edges, values, saved tensors
- from_layers: recorded from the hand-written layers (bpbench.layers) as they run
- from_autograd: read from autograd's grad_fn nodes, with hooks for values and gradients
- keeps: bytes saved for backward three ways (autograd, the layers' caches, the layers' formula)
- step: an experiment's step graph in the world its variant trains in
- render_text, render_dot, render_png (and fmt): the terminal, Graphviz, matplotlib
"""
