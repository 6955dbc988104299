"""MNIST loaders: the shipped 0/1 data, a full MNIST in torchvision's layout, or a user's .npz.

Every loader returns uint8 images (N, 28, 28) and int64 labels (N,) per split. Errors name the
file, say what is wrong with it, and end the run with exit code 2. The package works from what it
ships and from the directories the user points it at, nothing else.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
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
IDX_UBYTE = 0x08              # the IDX type code of unsigned bytes, the only one MNIST uses
IDX_DIMS = {"images": 3, "labels": 1}

Split = tuple[torch.Tensor, torch.Tensor]


def offline_path() -> Path:
    return Path(str(resources.files("bpbench.data").joinpath("mnist01.npz")))


def default_data_dir() -> Path:
    """Where full MNIST lives unless --data-dir says otherwise: $BPBENCH_DATA, else the platform's
    user cache directory (~/.cache/bpbench on Linux)."""
    env = os.environ.get("BPBENCH_DATA")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("bpbench"))


def is_file(path: Path) -> bool:
    """Path.is_file(), with a directory we may not enter as bad input rather than a traceback."""
    try:
        return path.is_file()
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from None


# ---------------------------------------------------------------- .npz archives

def load_npz(path: Path) -> dict[str, Split]:
    """{"train": ..., "test": ...} from an archive with train_images, train_labels, test_images,
    test_labels (the shipped mnist01.npz), or {"all": ...} from one with images, labels."""
    if not is_file(path):
        raise BadInput(f"MNIST data file not found: {path}")
    try:
        z = np.load(path)   # allow_pickle stays False: an archive of objects is refused, not run
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BadInput(f"MNIST data file {path} is truncated or corrupt ({type(e).__name__})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):   # a .npy holds one bare array, not images and labels
        raise BadInput(f"MNIST data file {path} is a single array (.npy), not a .npz archive of images and labels")
    split_names = ("train", "test") if "train_images" in z.files else ("all",)
    try:
        with z:
            arrays = {s: (z["images" if s == "all" else f"{s}_images"], z["labels" if s == "all" else f"{s}_labels"])
                      for s in split_names}
    except KeyError as e:
        raise BadInput(f"MNIST data file {path} has no array {e} (expected images and labels, or "
                       "train_images, train_labels, test_images, test_labels)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise BadInput(f"MNIST data file {path} is truncated or corrupt ({type(e).__name__})") from None
    return {s: _checked_arrays(path, images, labels) for s, (images, labels) in arrays.items()}


def _checked_arrays(path: Path, images: np.ndarray, labels: np.ndarray) -> Split:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise BadInput(f"MNIST data file {path}: images must be (N, 28, 28) uint8, "
                       f"got {images.shape} {images.dtype}")
    # Labels are class numbers: floats would be truncated, strings or 2-D arrays mean another format.
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise BadInput(f"MNIST data file {path}: labels must be a 1-D integer array, got "
                       f"{labels.shape} {labels.dtype}")
    if len(labels) != len(images):
        raise BadInput(f"MNIST data file {path}: {len(images)} images but {len(labels)} labels")
    if not len(labels):
        raise BadInput(f"MNIST data file {path} holds no images")
    if labels.min() < 0 or labels.max() > 9:
        raise BadInput(f"MNIST data file {path}: labels must be digits 0-9, got {labels.min()}..{labels.max()}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- torchvision's layout

def raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def missing(root: Path) -> list[str]:
    """The files of both splits that root/MNIST/raw lacks (plain or gzipped)."""
    raw = raw_dir(root)
    return [n for n in RAW_FILES.values() if not is_file(raw / n) and not is_file(raw / f"{n}.gz")]


def download(root: Path) -> None:
    """Let torchvision fetch MNIST into root/MNIST/raw once; say plainly when it cannot."""
    if not missing(root):
        return
    import torchvision

    from bpbench.results import files as results
    try:   # a place that cannot be written is not "no network"
        # the deepest of the folders torchvision writes into that exists already
        results.ensure_writable_dir(next((d for d in (raw_dir(root), root / "MNIST") if d.is_dir()), root), "MNIST")
    except BadInput as e:
        raise BadInput(f"cannot download MNIST into {root}: {str(e).rsplit(': ', 1)[-1]}") from None
    try:
        torchvision.datasets.MNIST(str(root), train=True, download=True)
    except Exception as e:  # torchvision raises RuntimeError / URLError / OSError by mirror
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise BadInput(f"could not download MNIST into {root} (no network?): {first}") from None


def _check_idx_header(path: Path, shown: Path, kind: str) -> None:
    """MNIST's IDX header: two zero bytes, type code 0x08 (unsigned byte), the number of
    dimensions, one big-endian uint32 per dimension, then exactly that many bytes of data."""
    ndim = IDX_DIMS[kind]
    with path.open("rb") as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim:
        raise BadInput(f"MNIST file {shown} is truncated (no complete IDX header)")
    if head[:2] != b"\0\0" or head[3] != ndim:
        raise BadInput(f"MNIST file {shown} is not an IDX file of {kind} (magic {head[:4].hex()})")
    if head[2] != IDX_UBYTE:
        raise BadInput(f"MNIST file {shown} has IDX type code {head[2]:#04x}, not {IDX_UBYTE:#04x} "
                       "(unsigned bytes, as MNIST)")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if kind == "images" and dims[1:] != (28, 28):
        raise BadInput(f"MNIST file {shown} holds {dims[1]}x{dims[2]} images, not 28x28")
    want = len(head) + int(np.prod(dims))
    size = path.stat().st_size
    if size != want:
        raise BadInput(f"MNIST file {shown} is {'truncated' if size < want else 'too long'}: "
                       f"{size} bytes, its header promises {want}")


def _read(reader, path: Path, kind: str, root: Path) -> torch.Tensor:
    """Read one IDX file with torchvision's reader after checking its header; a .gz beside a
    missing file is unpacked first (into a temporary directory: the user's directory is never
    written to)."""
    gz = path.with_name(path.name + ".gz")
    if not is_file(path) and not is_file(gz):
        raise BadInput(f"MNIST file not found: {path} (nor {gz.name})")
    source = path if is_file(path) else gz
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plain = path
            if source is gz:
                plain = Path(tmp) / path.name
                with gzip.open(gz, "rb") as f, plain.open("wb") as g:
                    shutil.copyfileobj(f, g)
            _check_idx_header(plain, source, kind)
            return reader(str(plain))
    except BadInput:
        raise
    except PermissionError as e:
        raise BadInput(f"cannot read MNIST file {source}: {e.strerror}") from None
    except (AssertionError, RuntimeError, ValueError, KeyError, IndexError, OSError, EOFError, zlib.error) as e:
        raise BadInput(f"MNIST file {source} is truncated or corrupt ({type(e).__name__})") from None


def load_torchvision(root: Path, split: str) -> Split:
    """One split of root/MNIST/raw, read with torchvision's own IDX readers."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = raw_dir(root)
    images, labels = (_read(reader, raw / RAW_FILES[(split, kind)], kind, root)
                      for kind, reader in (("images", read_image_file), ("labels", read_label_file)))
    if len(images) != len(labels):
        raise BadInput(f"MNIST files in {raw} do not match: {len(images)} images, {len(labels)} labels")
    if not len(labels):
        raise BadInput(f"MNIST files in {raw} hold no images")
    if labels.min() < 0 or labels.max() > 9:   # a digit outside 0-9 would be dropped unseen
        raise BadInput(f"MNIST file {raw / RAW_FILES[(split, 'labels')]}: labels must be digits 0-9, "
                       f"got {int(labels.min())}..{int(labels.max())}")
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
