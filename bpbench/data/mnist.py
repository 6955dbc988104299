"""MNIST loaders: the shipped 0/1 data, a full MNIST in torchvision's layout, or a user's .npz.

Every loader returns uint8 images (N, 28, 28) and int64 labels (N,) per split. Errors name the
file, say what is wrong with it, and end the run with exit code 2. The package works from what it
ships and from the directories the user points it at, nothing else.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zipfile
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from bpbench.config import DATA_LIMIT, open_input, too_large
from bpbench.data import default_data_dir  # noqa: F401  (where full MNIST lives; torch-free)
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


def present(path: Path) -> bool:
    """Whether anything is at `path`: a file, or what the reader then refuses by name (a
    directory, a FIFO); a directory we may not enter is bad input rather than a traceback."""
    try:
        os.stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


# ---------------------------------------------------------------- .npz archives

def load_npz(path: Path) -> dict[str, Split]:
    """{"train": ..., "test": ...} from an archive with train_images, train_labels, test_images,
    test_labels (the shipped mnist01.npz), or {"all": ...} from one with images, labels."""
    with open_input(path, "MNIST data file", DATA_LIMIT) as f:   # a regular file, bounded
        try:
            z = np.load(f)  # allow_pickle stays False: an archive of objects is refused, not run
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise BadInput(f"MNIST data file {path} is truncated or corrupt ({type(e).__name__})") from None
        if not isinstance(z, np.lib.npyio.NpzFile):   # a .npy holds one bare array, not images and labels
            raise BadInput(f"MNIST data file {path} is a single array (.npy), not a .npz archive of images and labels")
        with z:
            split_names = ("train", "test") if "train_images" in z.files else ("all",)
            names = {s: ("images", "labels") if s == "all" else (f"{s}_images", f"{s}_labels") for s in split_names}
            try:
                _check_members(z, path, [n for pair in names.values() for n in pair])
                arrays = {s: (z[i], z[lab]) for s, (i, lab) in names.items()}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise BadInput(f"MNIST data file {path} is truncated or corrupt ({type(e).__name__})") from None
    return {s: _checked_arrays(path, images, labels) for s, (images, labels) in arrays.items()}


def _check_members(z, path: Path, names: list[str]) -> None:
    """Each array's .npy header, read before its data: there, an array of Python objects (which
    only unpickling could load) is refused by name, and one larger than bpbench reads is
    refused before it is unpacked."""
    lacking = [n for n in names if n not in z.files]
    if lacking:
        raise BadInput(f"MNIST data file {path} has no array {lacking[0]!r} (expected images and labels, or "
                       "train_images, train_labels, test_images, test_labels)")
    fmt = np.lib.format
    for name in names:
        with z.zip.open(f"{name}.npy") as fp:
            version = fmt.read_magic(fp)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read_header(fp)
        if dtype.hasobject:
            raise BadInput(f"MNIST data file {path}: array {name!r} contains pickled Python objects, "
                           "refused (bpbench never unpickles a data file)")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes > DATA_LIMIT:
            raise too_large(f"MNIST data file {path}: array {name!r} of", shape, nbytes, DATA_LIMIT)


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

def _lacking(raw: Path) -> list[str]:
    return [n for n in RAW_FILES.values() if not present(raw / n) and not present(raw / f"{n}.gz")]


def raw_dir(root: Path) -> Path:
    """Where root's four MNIST files are: root itself when it holds them directly (as MNIST is
    distributed: the four .gz files in one folder), else torchvision's layout root/MNIST/raw."""
    tv, here = torchvision_dir(root), len(_lacking(root))
    return root if here < len(RAW_FILES) and here <= len(_lacking(tv)) else tv


def torchvision_dir(root: Path) -> Path:
    """Where torchvision keeps (and --download puts) MNIST below root."""
    return root / "MNIST" / "raw"


def missing(root: Path) -> list[str]:
    """The files of both splits that root's MNIST folder (see raw_dir) lacks (plain or gzipped)."""
    return _lacking(raw_dir(root))


def download(root: Path) -> None:
    """Let torchvision fetch MNIST into root/MNIST/raw once; say plainly when it cannot."""
    if not missing(root):
        return
    import torchvision

    from bpbench.results import files as results
    try:   # a place that cannot be written is not "no network"
        # the deepest of the folders torchvision writes into that exists already
        deepest = next((d for d in (torchvision_dir(root), root / "MNIST") if d.is_dir()), root)
        results.ensure_writable_dir(deepest, "MNIST")
    except BadInput as e:
        raise BadInput(f"cannot download MNIST into {root}: {str(e).rsplit(': ', 1)[-1]}") from None
    try:
        torchvision.datasets.MNIST(str(root), train=True, download=True)
    except Exception as e:  # torchvision raises RuntimeError / URLError / OSError by mirror
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise BadInput(f"could not download MNIST into {root} (no network?): {first}") from None


def _idx_size(head: bytes, shown: Path, kind: str) -> int:
    """The size in bytes MNIST's IDX header promises: two zero bytes, type code 0x08 (unsigned
    byte), the number of dimensions, one big-endian uint32 per dimension, then exactly that many
    bytes of data. Refused when the promise is beyond what bpbench reads (a decompression bomb:
    a small .gz whose header claims 10^9 images), before any of the data is unpacked."""
    ndim = IDX_DIMS[kind]
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
    want = len(head) + int(np.prod(dims, dtype=object))
    if want > DATA_LIMIT:
        raise too_large("MNIST file", shown, want, DATA_LIMIT)
    return want


def _size_mismatch(shown: Path, size: int, want: int) -> BadInput:
    return BadInput(f"MNIST file {shown} is {'truncated' if size < want else 'too long'}: "
                    f"{size}{'+' if size > want else ''} bytes, its header promises {want}")


def _unpack(stream, head: bytes, want: int, plain: Path, shown: Path) -> None:
    """Copy the rest of a .gz's data after its header into `plain`: the promised bytes and one
    more, to find a file too long without unpacking all of it."""
    got = len(head)
    with plain.open("wb") as g:
        g.write(head)
        while got <= want:
            chunk = stream.read(min(1 << 20, want + 1 - got))
            if not chunk:
                break
            g.write(chunk)
            got += len(chunk)
    if got != want:
        raise _size_mismatch(shown, got, want)


def _read(reader, path: Path, kind: str) -> torch.Tensor:
    """Read one IDX file with torchvision's reader after checking its header; a .gz beside a
    missing file is unpacked first, as it streams and only as far as its header promises (into a
    temporary directory: the user's directory is never written to)."""
    gz = path.with_name(path.name + ".gz")
    if not present(path) and not present(gz):
        raise BadInput(f"MNIST file not found: {path} (nor {gz.name})")
    source = path if present(path) else gz
    head_size = 4 + 4 * IDX_DIMS[kind]
    try:
        with open_input(source, "MNIST file", DATA_LIMIT) as f, tempfile.TemporaryDirectory() as tmp:
            if source is gz:
                stream = gzip.GzipFile(fileobj=f, mode="rb")
                head = stream.read(head_size)
                plain = Path(tmp) / path.name
                _unpack(stream, head, _idx_size(head, source, kind), plain, source)
            else:
                head, plain = f.read(head_size), path
                want, size = _idx_size(head, source, kind), os.fstat(f.fileno()).st_size
                if size != want:
                    raise _size_mismatch(source, size, want)
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
    images, labels = (_read(reader, raw / RAW_FILES[(split, kind)], kind)
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
