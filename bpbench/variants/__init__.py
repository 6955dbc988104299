"""The registry of variants: how a model is trained, without importing torch.

An experiment describes its model once (experiments.base.Model); a variant turns that description
into a learner. Each variant lives in its own module, `bpbench.variants.<name>`, imported only
when it runs. A variant applies to every experiment whose model offers what it `needs`:

    "manual"    a hand-written network (bpbench.layers): forward, backward, no autograd
    "module"    a torch module + loss + torch.optim optimizer
    "nn_module" a second module built from nn layers alone (linreg's nn.Linear)
    "relu_mlp"  the module is a Sequential of Linear layers with ReLUs between, its loss MSELoss

A `distributed` variant trains with N processes on torch.distributed (bpbench.distributed
launches them with torchrun's launcher); each rank computes the gradient of its shard of every
global batch and the ranks sum the shares.

Adding a variant is one module here plus one entry below (see CONTRIBUTING.md, "A variant").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from bpbench import config as C
from bpbench.errors import BadInput

# Options of the variants that train with torch.optim.
OPTIM_KEYS = {
    "fused": C.Key(C.boolean, "torch.optim's fused implementation (fused=True) where the "
                              "optimizer and device support it; off: the sources' default.",
                   "Variant", boolean=True),
    "foreach": C.Key(C.boolean, "torch.optim's multi-tensor implementation (foreach=True: one kernel "
                                "per op over all parameters); off: the sources' default.",
                     "Variant", boolean=True),
}


# Options of the data-parallel variants (ddp, allreduce).
DIST_KEYS = {
    "nproc": C.Key(C.positive_int, "ddp/allreduce: processes (ranks) on this machine, like torchrun's "
                                   "--nproc-per-node; one thread each on CPU.", "Distributed"),
    "backend": C.Key(C.one_of("gloo", "nccl"), "ddp/allreduce: the torch.distributed backend "
                                               "(default: gloo on CPU, nccl on CUDA).", "Distributed"),
}


@dataclass(frozen=True)
class VariantInfo:
    name: str
    summary: str
    needs: str                          # what the experiment's model must offer (see above)
    reference: str | None = None        # the variant whose arithmetic this one must reproduce
    device: str | None = None           # the only device it runs on (None: any)
    options: dict[str, C.Key] = field(default_factory=dict)
    distributed: bool = False           # N ranks on torch.distributed (see bpbench.distributed)
    shorthand: bool = False             # `bpbench run EXP --NAME` means --variant NAME
    # Whose computational graph its step runs: "manual" (the hand-written layers) or "autograd"
    # (autograd's grad_fn nodes). `bpbench graph` draws the variants that are a world themselves;
    # a run's memory.saved_for_backward[world] is what this variant's backward keeps.
    world: str = "autograd"

    def load(self) -> Any:
        """Import the variant's module (and torch with it)."""
        return importlib.import_module(f"bpbench.variants.{self.name}").VARIANT


REGISTRY: dict[str, VariantInfo] = {
    v.name: v for v in [
        VariantInfo("manual", "hand-written backward (bpbench.layers), then the update written out "
                              "(SGD: p -= lr * grad; Adam)",
                    needs="manual", shorthand=True, world="manual"),
        VariantInfo("autograd", "the torch module, loss.backward(), torch.optim", needs="module",
                    options=OPTIM_KEYS, shorthand=True),
        VariantInfo("nn", "the model built from nn layers alone (nn.Linear), autograd, torch.optim",
                    needs="nn_module", options=OPTIM_KEYS, shorthand=True),
        VariantInfo("compiled", "the autograd step under torch.compile (forward, backward and "
                                "optimizer step in one compiled function)",
                    needs="module", reference="autograd", options={**OPTIM_KEYS, "compile_mode": C.Key(
                        C.one_of("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        "compiled: the torch.compile mode (reduce-overhead adds CUDA graphs on a GPU).",
                        "Variant", metavar="MODE")}),
        VariantInfo("buffered", "the ReLU MLP's forward and backward written out into buffers allocated "
                                "once (no per-step allocation), torch.optim's fused Adam",
                    needs="relu_mlp", reference="autograd"),
        VariantInfo("graphed", "the whole autograd step captured once in a CUDA graph and replayed",
                    needs="module", reference="autograd", device="cuda", options=OPTIM_KEYS),
        VariantInfo("ddp", "the autograd step with the module in DistributedDataParallel: each rank "
                           "trains on its shard of the batch; bucketed all-reduce overlapped with backward",
                    needs="module", reference="autograd", distributed=True, options={**OPTIM_KEYS, **DIST_KEYS}),
        VariantInfo("allreduce", "the manual variant's hand-written backward on each rank's shard, then one "
                                 "dist.all_reduce per gradient (averaged)",
                    needs="manual", reference="manual", distributed=True, options=DIST_KEYS, world="manual"),
    ]
}


# The variant whose backward is written by hand: what `gradcheck` checks against autograd.
HAND_WRITTEN = "manual"


def speed_baseline(available: tuple[str, ...] | list[str]) -> str | None:
    """The variant an experiment's others are timed against ("vs manual"): the first reference
    variant (one that reproduces no other) the experiment offers, in registry order."""
    return next((v for v in REGISTRY if v in available and REGISTRY[v].reference is None), None)


def worlds() -> list[str]:
    """The variants that are a graph's world themselves (`bpbench graph --variant`)."""
    return [v.name for v in REGISTRY.values() if v.world == v.name]


def shorthands() -> list[str]:
    return [v.name for v in REGISTRY.values() if v.shorthand]


def get(name: str) -> VariantInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BadInput(f"unknown variant {name!r} (choose from: {', '.join(REGISTRY)})") from None


def applicable(offers: tuple[str, ...]) -> list[str]:
    """The variants whose needs a model offering `offers` meets, in registry order."""
    return [v.name for v in REGISTRY.values() if v.needs in offers]


def option_keys() -> dict[str, C.Key]:
    """Every variant option (the union: a key only some variants take is checked per run)."""
    out: dict[str, C.Key] = {}
    for v in REGISTRY.values():
        out.update(v.options)
    return out


# Implementation choices that must not change the arithmetic: a run with one is checked against
# the same variant without it.
IMPL_OPTIONS = ("fused", "foreach")


def reference_of(variant: str, settings: dict[str, Any]) -> tuple[str | None, set[str]]:
    """(the variant whose arithmetic a run of `variant` with these settings must reproduce, the
    settings its reference run leaves out); (None, set()) for a reference run itself."""
    info = REGISTRY[variant]
    impl = {k for k in IMPL_OPTIONS if k in settings and C.boolean(k, settings[k])}   # "--set fused=false" too
    if info.reference:   # what only the fast variant takes (ddp's nproc, compiled's compile_mode)
        return info.reference, set(info.options) - set(REGISTRY[info.reference].options) | impl
    return (variant, impl) if impl else (None, set())


def chosen(available: tuple[str, ...] | list[str], asked: list[str]) -> list[str]:
    """The variants a comparison runs: those asked for, else the reference variants. Fast ones
    (compiled, graphed) cost a compile or capture per cell, so they run on request only."""
    if asked:
        return [v for v in available if v in asked]
    return [v for v in available if REGISTRY[v].reference is None]
