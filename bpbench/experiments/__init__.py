"""The registry of experiments: what each one is, without importing torch.

`bpbench list` and argument checking read this table; the training code of an experiment lives in
its own module (`bpbench.experiments.<name>`) and is imported only when it runs.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from bpbench import config as C
from bpbench import variants
from bpbench.errors import BadInput
from bpbench.results.cells import LABEL_KEYS

if TYPE_CHECKING:
    from bpbench.experiments.base import Experiment


class Footprint(NamedTuple):
    """What a run will need, estimated from its config before anything is allocated (see
    bpbench.run.check_memory): bytes on the device for data, parameters, gradients, optimizer
    state and activations; updates per epoch (the harness keeps a record of each); and the
    training samples when they are known before loading (a built-in data set; None for a file),
    which bound the ranks a full batch can be shared by."""
    device_bytes: int
    steps_per_epoch: int
    samples: int | None = None


def _no_footprint(cfg: dict[str, Any]) -> Footprint:
    """An experiment that declares none: only the harness's own records are counted."""
    return Footprint(0, 1)


def _steps(n: int, batch_size: int | str) -> int:
    return 1 if batch_size == "full" else -(-n // min(int(batch_size), n))


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:        # the loader says what is wrong with it
        return 0


def _linreg_footprint(cfg: dict[str, Any]) -> Footprint:
    # A CSV row ("x,y" and a newline) takes about 8 bytes or more; each point costs ~100 bytes
    # (two Python floats while reading, then two float32 tensor elements).
    known = {"line4": 4, "scatter30": 30}.get(cfg["data"])
    n = known or max(1, _file_size(cfg["data"]) // 8)
    return Footprint(100 * n, _steps(n, cfg["batch_size"]), known)


def _bce_footprint(cfg: dict[str, Any]) -> Footprint:
    xor = cfg["data"] == "xor"
    n = 4 if xor else 1                                # XOR's four points, or seed 002's one sample
    return Footprint(1024 * 64 if xor else 1024, _steps(n, cfg["batch_size"]), n)


def _data_file(cfg: dict[str, Any]) -> list[str]:
    """The input files a run's config names: `data` when it is a file (not a built-in set)."""
    data = cfg.get("data")
    return [data] if isinstance(data, str) and data.endswith((".csv", ".npz")) else []


def _reads_full_mnist(cfg: dict[str, Any]) -> bool:
    return bool(cfg.get("data_dir")) or cfg["data"] == "mnist"


def _mnist01_inputs(cfg: dict[str, Any]) -> list[str]:
    """Full MNIST's folder (--data-dir, else the default data dir), or the data file."""
    if _reads_full_mnist(cfg):
        from bpbench.data import default_data_dir
        return [cfg.get("data_dir") or str(default_data_dir())]
    return _data_file(cfg)


def _mnist01_footprint(cfg: dict[str, Any]) -> Footprint:
    train = None                                       # samples trained on, where known up front
    if _reads_full_mnist(cfg):
        n = 60_000                                     # MNIST's training split
        train = 60_000 if cfg.get("digits") == "0-9" else 12_665
    elif cfg["data"] == "offline":
        n = 12_665 + 2_115                             # the shipped 0s and 1s, both splits
        train = 12_665
    else:
        n = max(1, _file_size(cfg["data"]) // 785)     # an .npz: 784 pixels and a label an image
    # uint8 images, their float32 copy and one float32 temporary; the nets are tiny beside them.
    return Footprint(9 * 784 * n, _steps(train or n, cfg["batch_size"]), train)


def _width_footprint(cfg: dict[str, Any]) -> Footprint:
    h, bs = cfg["width"], cfg["batch_size"]
    rows = 100 if bs == "full" else min(int(bs), 100)
    # Three (rows x H) float32 activations (Linear, ReLU, a gradient) and five float32 copies of
    # the 3H parameters (values, gradients, Adam's two moments, a temporary): 12 rows + 60 bytes
    # per unit, 1,260 at full batch; measured here: 1,244 (peak RSS at H = 1e6 and 4e6).
    return Footprint(h * (12 * rows + 60), _steps(100, bs), 100)


@dataclass(frozen=True)
class ExperimentInfo:
    name: str
    summary: str
    source: str
    offers: tuple[str, ...]             # what its model offers variants (see bpbench.variants)
    default_variant: str
    options: dict[str, C.Key] = field(default_factory=dict)  # keys beyond config.COMMON_KEYS
    has_trace: bool = False
    footprint: Callable[[dict[str, Any]], Footprint] = _no_footprint   # memory estimate (see Footprint)
    # the files and folders a run reads, from its config: no output may replace them
    inputs: Callable[[dict[str, Any]], list[str]] = _data_file
    # Only these variants, when the model suits no others (shopping: one sample to split across
    # ranks, nothing to compile); empty: every variant its model's offers admit.
    only_variants: tuple[str, ...] = ()

    @property
    def variants(self) -> tuple[str, ...]:
        """Every registered variant that applies, the default first."""
        names = [v for v in variants.applicable(self.offers) if not self.only_variants or v in self.only_variants]
        return (self.default_variant, *[v for v in names if v != self.default_variant])

    @property
    def keys(self) -> dict[str, C.Key]:
        return {**C.COMMON_KEYS, **self.options, **variants.option_keys()}

    def defaults(self) -> dict[str, Any]:
        return C.builtin(self.name)["defaults"]

    def load(self) -> "Experiment":
        """Import the experiment's module (and torch with it)."""
        return importlib.import_module(f"bpbench.experiments.{self.name}").EXPERIMENT


def _key(check: C.Validator, help: str, panel: str = "Training", boolean: bool = False,
         metavar: str | None = None, label: str | None = None) -> C.Key:
    return C.Key(check, help, panel, boolean, metavar, label)


REGISTRY: dict[str, ExperimentInfo] = {
    info.name: info for info in [
        ExperimentInfo(
            name="linreg",
            summary="Linear regression y = wx + b: hand-written dw, db vs autograd + SGD vs nn.Linear",
            source="seeds 000 (x=1..4, y=2x+1) and 003 (30 points)",
            offers=("manual", "module", "nn_module"),
            default_variant="manual",
            options={"init": _key(C.one_of("default", "zeros"), "nn variant's start: 'default' (torch's init under --seed) or 'zeros'; manual and autograd always start at w = b = 0, as seed 000.", metavar="default|zeros")},
            footprint=_linreg_footprint,
        ),
        ExperimentInfo(
            name="bce",
            summary="The 2-2-1 sigmoid net with fixed weights, BCE loss, SGD lr 1, traced step by step",
            source="seed 002 (hand-computed forward values), layers of seed 001",
            offers=("manual", "module"),
            default_variant="manual",
            options={"data": C.one_of("source", "xor")},
            has_trace=True,
            footprint=_bce_footprint,
        ),
        ExperimentInfo(
            name="mnist01",
            summary="MNIST 0-vs-1 with a 784-32-1 MLP (or 0-9 with 784-50-10): GD vs mini-batch SGD",
            source="seed 004 section F (0 vs 1), seed 001 (two-layer softmax net)",
            offers=("module", "manual"),
            default_variant="autograd",
            options={
                "updates": _key(C.positive_int, "Stop after N updates instead (mnist01).", metavar="N"),
                "loader": _key(C.one_of("resident", "dataloader"), "mnist01: 'resident' or 'dataloader'.", "Data",
                                 metavar="MODE"),
                "digits": _key(C.one_of("0,1", "0-9"), "mnist01: '0,1' or '0-9'.", "Data", metavar="0,1|0-9"),
                "data_dir": _key(C.text, "mnist01: a folder of MNIST's four files, or a torchvision MNIST root "
                                           "(default: $BPBENCH_DATA, else the user cache dir).", "Data", metavar="DIR"),
                "download": _key(C.boolean, "mnist01: let torchvision fetch MNIST once into --data-dir or the default data dir.",
                                 "Data",
                                 boolean=True),
                "holdout": _key(C.fraction, "mnist01 .npz data without a test split: the held-out fraction.", "Data", metavar="F"),
                "shuffle": _key(C.boolean, "mnist01 mini-batches: reshuffled every epoch, or in data order.",
                                "Data", boolean=True),
                "replacement": _key(C.boolean, "mnist01 mini-batches: drawn with replacement (seed 001).",
                                    "Data", boolean=True),
            },
            footprint=_mnist01_footprint,
            inputs=_mnist01_inputs,
        ),
        ExperimentInfo(
            name="width",
            summary="1-H-1 ReLU MLP trained with Adam: the CPU-vs-GPU width study",
            source="seed 004 sections C-D (H=500: CPU wins; H=200,000: GPU ~60x)",
            offers=("module", "relu_mlp", "manual"),
            default_variant="autograd",
            options={"width": _key(C.positive_int, "width: hidden units H.", metavar="H", label="H"),
                     "data": C.one_of("source")},   # data: none to choose
            footprint=_width_footprint,
        ),
        ExperimentInfo(
            name="shopping",
            summary="Seed 001's shopping graphs: apples (and oranges) times tax, forward and backward "
                    "through multiply and add nodes",
            source="seed 001 section 5.4 (price 220; gradients 2.2, 110, 200)",
            offers=("manual", "module"),
            default_variant="manual",
            options={"data": C.one_of("apple", "apple-orange"),
                     "lr": _key(C.non_negative_float, "shopping: the step's learning rate (default 0: the "
                                                      "update keeps the seed's inputs).", metavar="X")},
            has_trace=True,
            only_variants=("manual", "autograd"),
        ),
    ]
}


# Cells of a comparison name their runs by these keys' short names (results.cells.LABEL_KEYS).
LABEL_KEYS.update({k: key.label for info in REGISTRY.values() for k, key in info.options.items()
                   if isinstance(key, C.Key) and key.label})


def get(name: str) -> ExperimentInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BadInput(f"unknown experiment {name!r} (choose from: {', '.join(REGISTRY)})") from None


def check_variant(info: ExperimentInfo, variant: str) -> str:
    if variant not in info.variants:
        raise BadInput(f"unknown variant {variant!r} for {info.name} "
                       f"(choose from: {', '.join(info.variants)})")
    return variant
