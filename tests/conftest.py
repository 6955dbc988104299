import gzip
import json
import shutil
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bpbench.cli import app

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class Cli:
    """Invoke the Typer app in-process; .json() parses stdout."""

    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args: str):
        return self.runner.invoke(app, [str(a) for a in args])

    def json(self, *args: str) -> dict:
        r = self(*args, "--json")
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def cli() -> Cli:
    return Cli()


def write_idx(path: Path, data: bytes, dims: list[int]) -> None:
    """Write an uncompressed IDX file (ubyte): what torchvision's readers expect in MNIST/raw."""
    magic = 0x0800 | len(dims)
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + data)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A torchvision-layout MNIST root (DIR/MNIST/raw/) holding the real four files from
    ../shared/data/mnist, unpacked: 60,000 training and 10,000 test images."""
    if not SHARED_MNIST.is_dir():
        pytest.skip("../shared/data/mnist is not beside the repository")
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in SHARED_MNIST.glob("*-ubyte.gz"):
        with gzip.open(gz, "rb") as f, (raw / gz.name[:-3]).open("wb") as g:
            shutil.copyfileobj(f, g)
    return root


@pytest.fixture
def broken_mnist_dir(mnist_dir, tmp_path) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(mnist_dir, root)
    return root


@pytest.fixture(autouse=True, scope="session")
def _peak_cache(tmp_path_factory):
    """Runs look up the machine's measured peak: measure it once per test session, in a cache
    of the session's own (never the user's), shared with the subprocesses tests start."""
    import os
    old = os.environ.get("BPBENCH_CACHE")
    os.environ["BPBENCH_CACHE"] = str(tmp_path_factory.mktemp("bpbench-cache"))
    yield
    if old is None:
        os.environ.pop("BPBENCH_CACHE", None)
    else:
        os.environ["BPBENCH_CACHE"] = old


class InProcessCell:
    """compare runs each cell as `python -m bpbench run ...`; here the same command runs in-process
    (a data-parallel cell's ranks still fork), sparing an interpreter start and torch import a cell.
    For tests of what compare does with its cells; the subprocess itself is tested end to end by
    test_compare.py's quick preset, interrupt and failing-cell tests."""

    def __init__(self, argv, **kwargs):
        from typer.testing import CliRunner

        from bpbench.cli import app
        assert argv[1:3] == ["-m", "bpbench"]
        r = CliRunner().invoke(app, argv[3:])
        self.returncode, self._out = r.exit_code, (r.stdout, r.stderr)

    def communicate(self):
        return self._out


@pytest.fixture
def in_process_cells(monkeypatch):
    from bpbench import processes
    monkeypatch.setattr(processes, "start_child", lambda argv, **kwargs: InProcessCell(argv))


@pytest.fixture
def quiet_machine(monkeypatch):
    """Runs in this process judged as measured on a quiet machine, whatever this one is doing: for
    tests of what follows from step times (ratios, baselines), not of the busy-machine judgement
    (tests/test_contention.py), which would otherwise make them pass or fail with the load."""
    from bpbench.results import contention
    monkeypatch.setattr(contention, "judge", lambda figures: None)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache directory of the test's own ($BPBENCH_CACHE); returns the ceilings' cache file in it."""
    from bpbench.measure import peak
    monkeypatch.setenv("BPBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / peak.CACHE_FILE
