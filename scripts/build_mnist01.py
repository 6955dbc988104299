"""Build bpbench/data/mnist01.npz: every 0 and 1 of MNIST's test split, from the original files.

    python scripts/build_mnist01.py ../shared/data/mnist bpbench/data/mnist01.npz

Checks the MD5 sums first, reads the IDX files with torchvision's own readers, and stores
uint8 images (N, 28, 28) and labels (N,) in a compressed NumPy archive with its provenance.
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

FILES = {  # the canonical sums, as torchvision's MNIST class lists them
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def main(src: str, dst: str) -> None:
    src_dir = Path(src)
    for name, want in FILES.items():
        got = md5(src_dir / name)
        if got != want:
            sys.exit(f"{src_dir / name}: MD5 {got} != {want}")
    with tempfile.TemporaryDirectory() as tmp:
        raw = {}
        for name in FILES:
            out = Path(tmp) / name[:-3]
            with gzip.open(src_dir / name, "rb") as f, out.open("wb") as g:
                shutil.copyfileobj(f, g)
            raw[name] = out
        images = read_image_file(str(raw["t10k-images-idx3-ubyte.gz"])).numpy()
        labels = read_label_file(str(raw["t10k-labels-idx1-ubyte.gz"])).numpy()
    keep = labels <= 1
    np.savez_compressed(
        dst, images=images[keep].astype(np.uint8), labels=labels[keep].astype(np.uint8),
        source=np.array("MNIST test split (t10k), digits 0 and 1, original order"),
        md5=np.array(f"t10k-images {FILES['t10k-images-idx3-ubyte.gz']}, t10k-labels {FILES['t10k-labels-idx1-ubyte.gz']}"),
        license=np.array("MNIST by Y. LeCun, C. Cortes, C. J. C. Burges, CC BY-SA 3.0"))
    print(f"{dst}: {keep.sum()} images ({(labels[keep] == 0).sum()} zeros, {(labels[keep] == 1).sum()} ones)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
