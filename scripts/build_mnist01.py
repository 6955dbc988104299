"""Build bpbench/data/mnist01.npz: every 0 and 1 of both MNIST splits, from the original files.

    python scripts/build_mnist01.py ../shared/data/mnist bpbench/data/mnist01.npz

Unpacks the four gzipped IDX files, checks the MD5 sum of each file's *uncompressed* content
against the canonical sums (a re-compressed .gz differs byte for byte but holds the same data),
reads them with torchvision's own IDX readers, and stores uint8 images (N, 28, 28) and labels (N,)
of both splits, in the original order, in a compressed NumPy archive with its provenance.
MNIST (Y. LeCun, C. Cortes, C. J. C. Burges) is distributed under CC BY-SA 3.0.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from torchvision.datasets.mnist import read_image_file, read_label_file

# The canonical MD5 sums of the uncompressed files (as the MNIST site distributes them unpacked).
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def unpack_checked(src: Path, tmp: Path) -> dict[str, Path]:
    """name -> the unpacked file, after checking its content's MD5 sum."""
    out = {}
    for name, want in RAW_MD5.items():
        plain = tmp / name
        with gzip.open(src / f"{name}.gz", "rb") as f, plain.open("wb") as g:
            shutil.copyfileobj(f, g)
        got = hashlib.md5(plain.read_bytes()).hexdigest()
        if got != want:
            sys.exit(f"{src / name}.gz: MD5 of the uncompressed content {got} != {want}")
        out[name] = plain
    return out


def main(src: str, dst: str) -> None:
    arrays, counts = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        raw = unpack_checked(Path(src), Path(tmp))
        for split, (images_file, labels_file) in SPLITS.items():
            images = read_image_file(str(raw[images_file])).numpy()
            labels = read_label_file(str(raw[labels_file])).numpy()
            keep = labels <= 1
            arrays[f"{split}_images"] = images[keep].astype(np.uint8)
            arrays[f"{split}_labels"] = labels[keep].astype(np.uint8)
            counts.append(f"{split}: {keep.sum()} images ({(labels[keep] == 0).sum()} zeros, "
                          f"{(labels[keep] == 1).sum()} ones)")
    np.savez_compressed(
        dst, **arrays,
        source=np.array("MNIST training and test splits, digits 0 and 1, original order"),
        md5=np.array(", ".join(f"{k} {v}" for k, v in RAW_MD5.items()) + " (uncompressed)"),
        license=np.array("MNIST by Y. LeCun, C. Cortes, C. J. C. Burges, CC BY-SA 3.0"))
    print(f"{dst}: " + "; ".join(counts))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
