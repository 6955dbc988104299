"""MNIST loaders: the shipped offline 0/1 subset, or a full data set in torchvision's layout.

Every loader returns uint8 images (N, 28, 28), int64 labels (N,) and a description of where they
came from. Errors name the file and end the run with exit code 2.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from bpbench.errors import BadInput

RAW_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def offline_path() -> Path:
    return Path(str(resources.files("bpbench.data").joinpath("mnist01.npz")))


def load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """An archive with `images` (N, 28, 28) uint8 and `labels` (N,), like the shipped mnist01.npz."""
    if not path.is_file():
        raise BadInput(f"MNIST data file not found: {path}")
    try:
        with np.load(path) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise BadInput(f"MNIST data file {path} is truncated or corrupt ({type(e).__name__})") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels) or images.dtype != np.uint8:
        raise BadInput(f"MNIST data file {path} does not hold (N, 28, 28) uint8 images with N labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def download(root: Path) -> None:
    """Let torchvision fetch MNIST into root/MNIST/raw; say plainly when it cannot."""
    import torchvision
    try:
        torchvision.datasets.MNIST(str(root), train=True, download=True)
    except Exception as e:  # torchvision raises RuntimeError / URLError / OSError by mirror
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise BadInput(f"could not download MNIST into {root} (no network?): {first}") from None


def _read(reader, path: Path) -> torch.Tensor:
    """Read one IDX file with torchvision's reader; a .gz beside a missing file is unpacked first
    (into a temporary directory: the user's data directory is never written to)."""
    gz = path.with_name(path.name + ".gz")
    if not path.is_file() and not gz.is_file():
        raise BadInput(f"MNIST file not found: {path} (expected torchvision's layout DIR/MNIST/raw/; "
                       "--download fetches it)")
    source = path if path.is_file() else gz
    try:
        if source is path:
            return reader(str(path))
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / path.name
            with gzip.open(gz, "rb") as f, plain.open("wb") as g:
                shutil.copyfileobj(f, g)
            return reader(str(plain))
    except (AssertionError, RuntimeError, ValueError, KeyError, IndexError, OSError, EOFError) as e:
        raise BadInput(f"MNIST file {source} is truncated or corrupt ({type(e).__name__})") from None


def load_torchvision(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of root/MNIST/raw, read with torchvision's own IDX readers."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = root / "MNIST" / "raw"
    out = [_read(reader, raw / RAW_FILES[(split, kind)])
           for kind, reader in (("images", read_image_file), ("labels", read_label_file))]
    images, labels = out
    if images.dim() != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise BadInput(f"MNIST files in {raw} do not match: {tuple(images.shape)} images, {len(labels)} labels")
    return images, labels.long()


def stratified_split(labels: torch.Tensor, holdout: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): the same fraction of every class held out.

    The split has its own fixed seed, so `--seed` changes the model's initialisation and batching
    but never which images are held out.
    """
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique(sorted=True).tolist():
        idx = (labels == c).nonzero().view(-1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(holdout * len(idx))
        test.append(idx[:k].sort().values)
        train.append(idx[k:].sort().values)
    return torch.cat(train), torch.cat(test)
