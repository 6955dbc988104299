"""What bpbench reads, through its one reader (config.open_input / read_json / read_toml): only
regular files, bounded in size, nested at most config.MAX_DEPTH deep; data files checked before
they are unpacked; a peak cache trusted only figure by figure. Every refusal is one line, exit 2."""

import gzip
import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx
from synthetic import cell, run_result, write
from synthetic import document as comparison

from bpbench import config
from bpbench.data import mnist
from bpbench.errors import BadInput, quoted
from bpbench.measure import peak
from bpbench.results import saved


def one_line(r, code=2):
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == code, (r.exit_code, r.stdout[-300:], r.stderr[-1000:])
    assert len(lines) == 1 and lines[0].startswith("bpbench: error:") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def within(seconds, fn):
    """fn() in a daemon thread: fails the test when it has not returned in `seconds` (a blocked
    open of a FIFO would hang the whole suite otherwise). Returns fn's result or raises its error."""
    out = {}

    def call():
        try:
            out["value"] = fn()
        except BaseException as e:        # noqa: BLE001 -- handed to the test
            out["error"] = e
    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still blocked after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


# ------------------------------------------------------------ nesting: one line, never RecursionError

NESTED_TOML = {
    "arrays 100,000 deep": "epochs = " + "[" * 100_000 + "]" * 100_000 + "\n",
    "inline tables 5,000 deep": "epochs = " + "{a = " * 5_000 + "1" + "}" * 5_000 + "\n",
    "arrays 65 deep": "epochs = " + "[" * 65 + "]" * 65 + "\n",   # below Python's limit, above ours
}


@pytest.mark.parametrize("text", NESTED_TOML.values(), ids=NESTED_TOML)
def test_deeply_nested_toml_is_one_line(cli, tmp_path, text):
    f = tmp_path / "deep.toml"
    f.write_text(text)
    assert "nested too deeply" in one_line(cli("run", "linreg", "--config", f))


def test_nesting_within_the_limit_reads():
    # the document itself is a level: a TOML table holding 63 arrays, a JSON array holding 63
    assert config.parse_toml("a = " + "[" * 63 + "]" * 63, "x")["a"] == config.parse_json("[" * 63 + "]" * 63, "x")
    assert config.parse_json("[" * 64 + "]" * 64, "x") == [config.parse_json("[" * 63 + "]" * 63, "x")]
    with pytest.raises(BadInput, match="nested too deeply"):
        config.parse_json("[" * 65 + "]" * 65, "x")


@pytest.mark.parametrize("depth", [100_000, 65])
def test_deeply_nested_results_json_is_one_line_for_report_and_baseline(cli, tmp_path, depth):
    deep = tmp_path / "deep.json"
    deep.write_text('{"schema": 1, "kind": "comparison", "x": ' + "[" * depth + "]" * depth + "}")
    assert "nested too deeply" in one_line(cli("report", deep))
    good = write(tmp_path / "good.json", comparison([cell(run_result())]))
    assert "nested too deeply" in one_line(cli("report", good, "--baseline", deep))


def test_non_finite_numbers_in_a_result_file_are_refused(tmp_path):
    for bad in ("NaN", "Infinity", "-Infinity", "1e400"):
        f = tmp_path / "r.json"
        f.write_text('{"schema": 1, "kind": "comparison", "x": %s}' % bad)
        with pytest.raises(BadInput, match="not valid JSON"):
            saved.load(f)


# ------------------------------------------------------------ not a regular file: refused, never blocks

@pytest.fixture
def fifo(tmp_path):
    p = tmp_path / "results.json"
    os.mkfifo(p)
    return p


def test_report_of_a_fifo_is_refused_without_blocking(cli, fifo):
    assert "not a regular file (a FIFO)" in one_line(within(20, lambda: cli("report", fifo)))


def test_baseline_fifo_is_refused_without_blocking(cli, tmp_path, fifo):
    good = write(tmp_path / "good.json", comparison([cell(run_result())]))
    r = within(20, lambda: cli("report", good, "--baseline", fifo))
    assert "not a regular file (a FIFO)" in one_line(r)


def test_a_fifo_in_the_runs_dir_is_no_saved_comparison(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    os.mkfifo(runs / "zz-newest.json")
    (runs / "sub.json").mkdir()
    write(runs / "main.json", comparison([cell(run_result())]))
    assert saved.names(runs) == ["main"]
    assert saved.resolve("last", runs) == runs / "main.json"


@pytest.mark.parametrize("name", ["x.npz", "d.csv", "train-images-idx3-ubyte.gz"])
def test_a_fifo_as_a_data_file_is_refused_without_blocking(cli, tmp_path, name):
    p = tmp_path / name
    if name.endswith(".gz"):              # one of MNIST's four files
        _flat_mnist(tmp_path, gz=True)
        p.unlink()
    os.mkfifo(p)
    args = ["mnist01", "--data-dir", tmp_path] if name.endswith(".gz") else \
        ["mnist01" if name.endswith(".npz") else "linreg", "--data", p]
    r = within(20, lambda: cli("run", *args, "--epochs", "1"))
    assert "not a regular file (a FIFO)" in one_line(r)


def test_a_directory_named_like_a_data_file_is_a_directory(cli, tmp_path):
    (tmp_path / "x.npz").mkdir()
    assert "is a directory" in one_line(cli("run", "mnist01", "--data", tmp_path / "x.npz", "--epochs", "1"))


def test_the_reader_refuses_what_grew_past_its_limit(tmp_path):
    f = tmp_path / "big.json"
    f.write_bytes(b"[" + b"0," * 20 + b"0]")
    assert config.read_bytes(f, "x", 100) == f.read_bytes()
    with pytest.raises(BadInput, match="larger than bpbench reads"):
        config.read_bytes(f, "x", 10)


def test_a_huge_results_file_is_refused_before_it_is_read(cli, tmp_path):
    f = tmp_path / "huge.json"
    with f.open("wb") as fh:              # sparse: no disk is used
        fh.truncate(config.DOCUMENT_LIMIT + 1)
    assert "larger than bpbench reads" in one_line(cli("report", f))


# ------------------------------------------------------------ data files

def _idx_header(kind: str, n: int) -> bytes:
    dims = [n, 28, 28] if kind == "images" else [n]
    return struct.pack(">I", 0x0800 | len(dims)) + b"".join(struct.pack(">I", d) for d in dims)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # 10^9 images promised; 8 MB of zeros follow (a few KB packed): far more would be there to unpack
    (raw / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx_header("images", 10**9) + bytes(8 << 20), compresslevel=9))
    unpacked = []
    real_read = gzip.GzipFile.read

    def counting_read(self, size=-1):
        data = real_read(self, size)
        unpacked.append(len(data))
        return data
    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    with pytest.raises(BadInput, match="larger than bpbench reads"):
        mnist._read(None, raw / "train-images-idx3-ubyte", "images")
    assert sum(unpacked) <= 16                  # the header, nothing more


def test_a_gz_longer_than_its_header_promises_is_refused_without_unpacking_it_all(tmp_path):
    raw = tmp_path
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_header("labels", 4) + bytes(4 + 1000)))
    with pytest.raises(BadInput, match="too long: 13\\+ bytes, its header promises 12"):
        mnist._read(None, raw / "t10k-labels-idx1-ubyte", "labels")


def test_a_pickled_npz_is_refused_as_such(cli, tmp_path):
    f = tmp_path / "p.npz"
    np.savez(f, images=np.array([{"x": 1}], dtype=object), labels=np.array([0]))
    line = one_line(cli("run", "mnist01", "--data", f, "--epochs", "1"))
    assert "contains pickled Python objects, refused" in line and "'images'" in line


def test_an_npz_array_larger_than_bpbench_reads_is_refused_from_its_header(tmp_path, monkeypatch):
    f = tmp_path / "a.npz"         # 784,000 bytes of images, packed into about 2 KB
    np.savez_compressed(f, images=np.zeros((1000, 28, 28), np.uint8), labels=np.zeros(1000, np.int64))
    monkeypatch.setattr(mnist, "DATA_LIMIT", 100_000)
    assert f.stat().st_size < 100_000
    with pytest.raises(BadInput, match="'images' of"):
        mnist.load_npz(f)


def _flat_mnist(folder: Path, gz: bool) -> None:
    """MNIST's four files in one folder, as MNIST is distributed: 10 images a split, digits 0/1."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        images, labels = bytes(range(256)) * 30 + bytes(7840 - 7680), bytes([0, 1] * 5)
        for kind, data, dims in (("images", images, [10, 28, 28]), ("labels", labels, [10])):
            name = folder / mnist.RAW_FILES[(split, kind)]
            write_idx(name, data, dims)
            if gz:
                Path(f"{name}.gz").write_bytes(gzip.compress(name.read_bytes()))
                name.unlink()


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "unpacked"])
def test_a_folder_holding_the_four_files_directly_is_a_data_dir(cli, tmp_path, gz):
    _flat_mnist(tmp_path / "mnist", gz)
    assert mnist.raw_dir(tmp_path / "mnist") == tmp_path / "mnist" and not mnist.missing(tmp_path / "mnist")
    r = cli.json("run", "mnist01", "--data-dir", tmp_path / "mnist", "--epochs", "1", "--no-flops")
    assert (r["data"]["n_train"], r["data"]["n_test"]) == (10, 10)


def test_torchvisions_layout_is_still_read(tmp_path):
    _flat_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert mnist.raw_dir(tmp_path) == tmp_path / "MNIST" / "raw" and not mnist.missing(tmp_path)
    assert len(mnist.load_torchvision(tmp_path, "train")[1]) == 10


# ------------------------------------------------------------ config values and messages

def test_a_bad_file_value_is_refused_even_when_a_flag_overrides_it(cli, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("epochs = true\n")
    assert "epochs must be a positive integer" in one_line(cli("run", "linreg", "--config", f, "--epochs", "3"))


@pytest.mark.parametrize("length", [500_000, 10_000_000])
def test_a_huge_key_is_not_echoed_whole(cli, tmp_path, length):
    f = tmp_path / "c.toml"
    f.write_text("k" * length + " = 1\n")
    line = one_line(cli("run", "linreg", "--config", f))
    assert len(line) < 400
    assert ("unknown key 'kkk" in line and "…" in line) if length < config.CONFIG_LIMIT else "larger than" in line


def test_quoted_cuts_long_text_and_builds_no_huge_repr():
    assert quoted("short") == "'short'"
    assert quoted("x" * 1000) == "'" + "x" * 60 + "'…"
    assert len(quoted(list(range(10**6)))) < 80 and len(quoted({"k" * 10**6: 1})) < 80


# ------------------------------------------------------------ the peak cache, trusted figure by figure

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BPBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache" / peak.CACHE_FILE


GOOD = {"gflops": 50.0, "size": 1024, "sizes": [256, 512, 1024], "dtype": "float32", "threads": 2,
        "measured": "2026-01-01T00:00:00+00:00"}


def _cached(cache, entry):
    cache.write_text(json.dumps({"kind": "bpbench-peak-cache", "entries": {"k": entry}}, allow_nan=True))


def test_a_sane_cached_peak_is_used(cache):
    _cached(cache, GOOD)
    assert peak.lookup("k") == GOOD


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -5, True, 1e308, "50", None])
def test_an_insane_cached_peak_is_not_cached(cache, bad):
    _cached(cache, {**GOOD, "gflops": bad})
    assert peak.lookup("k") is None


@pytest.mark.parametrize("field", peak.MATMUL)
def test_a_missing_field_is_not_cached_never_a_keyerror(cache, field):
    _cached(cache, {k: v for k, v in GOOD.items() if k != field})
    assert peak.lookup("k") is None


def test_an_entry_that_is_no_object_is_not_cached(cache):
    _cached(cache, ["not", "an", "entry"])
    assert peak.lookup("k") is None


def test_each_figure_is_validated_on_its_own(cache):
    _cached(cache, {**GOOD, "bandwidth_gbs": float("nan"), "op_overhead_us": 3.5, "threads": 2.5})
    assert peak.lookup("k") is None                           # threads 2.5: no thread count
    _cached(cache, {**GOOD, "bandwidth_gbs": float("nan"), "op_overhead_us": 3.5})
    entry = peak.lookup("k")
    assert entry["gflops"] == 50.0 and entry["op_overhead_us"] == 3.5 and "bandwidth_gbs" not in entry
    assert peak.lookup("k", ("bandwidth_gbs",)) is None and peak.lookup("k", ("op_overhead_us",))


@pytest.mark.parametrize("cached", [1e308, 9000.0], ids=["insane", "over 4x the new figure"])
def test_remeasure_replaces_a_cached_figure_that_cannot_be_this_machines(cache, monkeypatch, cached):
    import torch
    monkeypatch.setattr(peak, "measure", lambda *a, **k: {**GOOD, "measured": "now"})
    monkeypatch.setattr(peak, "key", lambda *a: "k")
    _cached(cache, {**GOOD, "gflops": cached})
    r = peak.get(torch.device("cpu"), threads=1, remeasure=True)
    assert r["gflops"] == 50.0 and r["source"] == "measured now"
    assert peak.lookup("k")["gflops"] == 50.0


def test_a_fifo_as_the_peak_cache_is_not_read_and_never_blocks(cache):
    os.mkfifo(cache)
    assert within(10, lambda: peak.lookup("k")) is None
    assert within(10, lambda: peak.store("k", {"gflops": 1.0})) is None


def test_concurrent_writers_keep_every_entry(cache, monkeypatch):
    """Two writers, each made slow between reading the cache and replacing it: without the lock
    and the merge under it, one of them drops the other's entry."""
    from bpbench.results import files as results
    real_write = results.write_json

    def slow_write(*a, **k):
        threading.Event().wait(0.3)
        real_write(*a, **k)
    monkeypatch.setattr(results, "write_json", slow_write)
    writers = [threading.Thread(target=peak.store, args=(f"k{i}", GOOD)) for i in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(20)
    assert sorted(json.loads(cache.read_text())["entries"]) == ["k0", "k1", "k2"]
    assert not [p for p in cache.parent.iterdir() if p.name not in (cache.name, cache.name + ".lock")]


def test_a_damaged_cache_is_rewritten_not_refused(cache):
    cache.write_text("{not json")
    assert peak.store("k", GOOD) == cache and peak.lookup("k") == GOOD


def test_a_cache_linked_to_a_file_bpbench_did_not_write_leaves_it_alone(cache, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    cache.symlink_to(other)
    assert peak.store("k", GOOD) is None and other.read_text() == "mine"


# ------------------------------------------------------------ the repository

def test_saved_runs_are_ignored_by_git():
    gitignore = Path(__file__).resolve().parents[1] / ".gitignore"
    assert ".bpbench/" in gitignore.read_text().splitlines()
