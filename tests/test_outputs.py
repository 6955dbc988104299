"""What bpbench writes, through its one writer (results.write_* and check_output_file): never over
the run's own inputs, bpbench itself or the Python running it; over a file it did not write only
with --force; atomically, under a unique temporary name, leaving nothing behind; a FIFO or device
only where a stream is meant, and never a blocking open."""

import errno
import json
import os
import sys
import threading
from pathlib import Path

import pytest
from test_inputs import one_line, within

from bpbench.data import mnist
from bpbench.errors import BadInput
from bpbench.measure import profile as opprofile
from bpbench.results import files as results

RESULT = {"schema": 1, "experiment": "linreg", "status": "ok"}


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------ a file bpbench did not write

def test_a_file_that_is_no_bpbench_result_is_refused_unless_forced(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    with pytest.raises(BadInput, match="exists and is not a bpbench result.*--force"):
        results.check_output_file(notes, "--output")
    with pytest.raises(BadInput, match="not a bpbench result"):     # the write itself checks again
        results.write_json(notes, RESULT)
    assert notes.read_text() == "keep me" and _entries(tmp_path) == ["notes.txt"]
    results.check_output_file(notes, "--output", force=True)
    results.write_json(notes, RESULT)
    assert json.loads(notes.read_text()) == RESULT


BPBENCH_FILES = {
    "run result": results.dumps(RESULT),
    "comparison": results.dumps({"schema": 1, "kind": "comparison", "cells": []}),
    "csv": ",".join(results.CSV_HEAD) + ",repeats\nmatrix:x,matrix,x,y,cpu,,ok,1\n",
    "plot": b"\x89PNG\r\n\x1a\n\x00\x00\x00\x19tEXtSoftware\x00Matplotlib version3.9".decode("latin-1"),
    "trace": '{\n  "schemaVersion": 1,\n  "deviceProperties": [],\n  "traceEvents": []}',
    "empty": "",
}


@pytest.mark.parametrize("content", BPBENCH_FILES.values(), ids=BPBENCH_FILES)
def test_what_bpbench_wrote_is_replaced_without_force(tmp_path, content):
    old = tmp_path / "old"
    old.write_bytes(content.encode("latin-1"))
    results.check_output_file(old, "--output")
    results.write_json(old, RESULT)
    assert json.loads(old.read_text()) == RESULT


@pytest.mark.parametrize("content", ['{"experiment": "x"}', "{}", "key,value\n", "\x89PNG\r\n\x1a\n",
                                     '{"kind": "bpbench-peak-cache", "entries": {}}'],
                         ids=["json without schema", "empty object", "other csv", "another program's png",
                              "the peak cache, an input of every run"])
def test_what_only_looks_like_a_bpbench_file_is_not(tmp_path, content):
    f = tmp_path / "f"
    f.write_text(content, encoding="latin-1")
    assert not results.is_bpbench_output(f)


# ------------------------------------------------------------ never the run's own inputs

@pytest.mark.parametrize("shipped", ["data/mnist01.npz", "__init__.py"])
def test_bpbench_itself_is_never_replaced_even_forced(shipped):
    path = Path(results.__file__).parents[1] / shipped
    assert path.is_file()
    with pytest.raises(BadInput, match="part of bpbench itself: not replacing it"):
        results.check_output_file(path, "--output", force=True)


def test_the_built_in_configs_are_never_replaced_even_forced():
    from importlib import resources
    path = Path(str(resources.files("bpbench.configs").joinpath("linreg.toml")))
    assert path.is_file()
    with pytest.raises(BadInput, match="built-in configs: not replacing it"):
        results.check_output_file(path, "--output", force=True)


def test_bpbench_itself_is_protected_at_write_time_too(tmp_path, monkeypatch):
    package = tmp_path / "bpbench"
    (package / "data").mkdir(parents=True)
    shipped = package / "data" / "mnist01.npz"
    shipped.write_bytes(b"PK\x03\x04 the shipped data")
    monkeypatch.setattr(results, "_package_dir", lambda: package)
    with pytest.raises(BadInput, match="part of bpbench itself"):
        results.write_json(shipped, RESULT, force=True)
    assert shipped.read_bytes() == b"PK\x03\x04 the shipped data" and _entries(package / "data") == ["mnist01.npz"]


def test_the_interpreter_is_never_replaced_through_a_link(tmp_path):
    link = tmp_path / "python3"              # a venv's python3: a link to the interpreter
    link.symlink_to(os.path.realpath(sys.executable))
    with pytest.raises(BadInput, match="through a link to .* is the Python interpreter running bpbench"):
        results.check_output_file(link, "--output", force=True)


def test_the_data_dirs_are_protected_new_files_there_are_not(tmp_path, monkeypatch):
    data = tmp_path / "data"
    raw = data / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = raw / "train-images-idx3-ubyte.gz"
    images.write_bytes(b"\x1f\x8b MNIST")
    monkeypatch.setenv("BPBENCH_DATA", str(data))
    with pytest.raises(BadInput, match=r"inside \$BPBENCH_DATA"):
        results.check_output_file(images, "--output", force=True)
    monkeypatch.delenv("BPBENCH_DATA")
    with pytest.raises(BadInput, match="a data directory this run reads"):
        results.check_output_file(images, "--output", inputs=[str(data)], force=True)
    results.check_output_file(data / "new.json", "--output", inputs=[str(data)])   # a new file is no input
    assert images.read_bytes() == b"\x1f\x8b MNIST"


def test_an_input_file_is_never_its_own_output(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(results.dumps(RESULT))        # even one that looks like a result
    with pytest.raises(BadInput, match="also an input of this run"):
        results.check_output_file(tmp_path / "." / "c.toml", "--output", inputs=[cfg], force=True)


# ------------------------------------------------------------ atomic, unique, nothing left behind

def test_every_temporary_name_is_unique(tmp_path):
    target = tmp_path / "r.json"
    with results.staged(target) as a, results.staged(target) as b:
        assert a != b and a.parent != b.parent
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a" and _entries(tmp_path) == ["r.json"]   # the outer one last


def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path):
    target = tmp_path / "t.json"
    target.write_text(results.dumps(RESULT))

    def half_then_full_disk(tmp: Path) -> None:   # what a profiler's export leaves: its own temp too
        tmp.write_text('{"traceEv')
        Path(f"{tmp}.tmp").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        results.write_with(target, half_then_full_disk)
    assert json.loads(target.read_text()) == RESULT and _entries(tmp_path) == ["t.json"]


class FakeProfile:
    def __init__(self, fail: bool = False):
        self.fail = fail

    def export_chrome_trace(self, path: str) -> None:
        Path(path).write_text('{\n  "schemaVersion": 1,\n  "traceEvents": []}')
        if self.fail:
            raise OSError(errno.ENOSPC, "No space left on device")


def test_a_trace_that_cannot_be_written_is_reported_not_raised(tmp_path):
    out = opprofile.write_trace(FakeProfile(fail=True), tmp_path / "t.json")
    assert out == {"trace_file": None, "trace_error": f"cannot write --trace-file {tmp_path / 't.json'}: "
                                                      "No space left on device"}
    assert _entries(tmp_path) == []


def test_a_trace_goes_through_a_link_as_output_does(tmp_path):
    (tmp_path / "store").mkdir()
    link = tmp_path / "t.json"
    link.symlink_to(tmp_path / "store" / "t.json")
    results.check_output_file(link, "--trace-file")         # was: refused, while --output followed links
    assert opprofile.write_trace(FakeProfile(), link) == {"trace_file": str(link)}
    assert link.is_symlink() and "traceEvents" in (tmp_path / "store" / "t.json").read_text()


def test_a_trace_never_replaces_what_bpbench_did_not_write(tmp_path):
    mine = tmp_path / "t.json"
    mine.write_text("my notes")
    out = opprofile.write_trace(FakeProfile(), mine)
    assert out["trace_file"] is None and "not a bpbench result" in out["trace_error"]
    assert mine.read_text() == "my notes"


# ------------------------------------------------------------ FIFOs and devices

def test_a_fifo_where_a_file_belongs_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "results.csv"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match=r"not a regular file \(a FIFO\)"):
        within(10, lambda: results.check_output_file(fifo, "--output-dir file"))
    with pytest.raises(OSError, match=r"not a regular file \(a FIFO\)"):
        within(10, lambda: results.write_csv(fifo, [], list(results.CSV_HEAD)))


def test_a_fifo_nothing_reads_is_refused_at_once_where_streams_are_allowed(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    results.check_output_file(fifo, "--output", streams=True)       # a reader may come
    with pytest.raises(OSError, match="a FIFO that nothing reads"):
        within(10, lambda: results.write_json(fifo, RESULT, streams=True))


def test_a_fifo_with_a_reader_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    for _ in range(100):        # the write must find the reader's open end
        try:
            results.write_json(fifo, RESULT, streams=True)
            break
        except OSError:
            threading.Event().wait(0.02)
    reader.join(10)
    assert json.loads(got[0]) == RESULT and _entries(tmp_path) == ["pipe"]


def test_a_descriptor_is_no_file_where_a_file_belongs(tmp_path):
    for stream in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/2"):
        with pytest.raises(BadInput, match="names a stream"):
            results.check_output_file(stream, "--trace-file")
        results.check_output_file(stream, "--output", streams=True)
        assert not results.names_a_file(stream)
    assert results.names_a_file(tmp_path / "r.json")


def test_the_data_dir_of_a_run_is_among_its_inputs():
    from bpbench.experiments import REGISTRY
    mnist01 = REGISTRY["mnist01"]
    assert mnist01.inputs({"data": "mnist", "data_dir": "/d"}) == ["/d"]
    assert mnist01.inputs({"data": "mnist"}) == [str(mnist.default_data_dir())]
    assert mnist01.inputs({"data": "x.npz"}) == ["x.npz"] and mnist01.inputs({"data": "offline"}) == []
    assert REGISTRY["linreg"].inputs({"data": "d.csv"}) == ["d.csv"]


# ------------------------------------------------------------ the CLI: up front, one line, exit 2

@pytest.fixture
def no_training(monkeypatch):
    from bpbench.measure import loop
    monkeypatch.setattr(loop, "run_loop", lambda *a, **k: pytest.fail("training started"))


def test_run_refuses_an_output_that_is_no_result_before_training(cli, tmp_path, no_training):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    for flag in ("--output", "--trace-file"):
        line = one_line(cli("run", "linreg", "--epochs", "2", flag, notes))
        assert f"{flag} {notes} exists and is not a bpbench result" in line and "--force" in line
    assert notes.read_text() == "keep me"


def test_run_force_replaces_it(cli, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    r = cli("run", "linreg", "--epochs", "2", "--output", notes, "--force", "--no-flops")
    assert r.exit_code == 0, r.stderr
    assert json.loads(notes.read_text())["timing"]["steps"] == 2


def test_run_never_writes_into_its_data_dir(cli, tmp_path, no_training):
    from test_inputs import _flat_mnist
    _flat_mnist(tmp_path / "mnist", gz=True)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    before = images.read_bytes()
    line = one_line(cli("run", "mnist01", "--data-dir", tmp_path / "mnist", "--output", images, "--force"))
    assert "a data directory this run reads: not replacing it" in line and images.read_bytes() == before


def test_run_never_replaces_the_shipped_data(cli, no_training):
    shipped = Path(results.__file__).parents[1] / "data" / "mnist01.npz"
    before = shipped.stat()
    line = one_line(cli("run", "linreg", "--epochs", "1", "--output", shipped, "--force"))
    assert "part of bpbench itself" in line
    assert (shipped.stat().st_ino, shipped.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_trace_that_cannot_be_written_keeps_the_result(cli, tmp_path, monkeypatch):
    import torch.profiler

    def full_disk(self, path, *a, **k):
        Path(f"{path}.tmp").write_text("half")          # what kineto leaves when its write fails
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch.profiler.profile, "export_chrome_trace", full_disk)
    out = tmp_path / "r.json"
    r = cli("run", "linreg", "--epochs", "20", "--manual", "--no-flops", "--profile-ops", "--output", out)
    assert "cannot write --trace-file" in one_line(r) and "No space left on device" in r.stderr
    res = json.loads(out.read_text())            # written first: the whole result is kept
    assert res["status"] == "ok" and res["timing"]["steps"] == 20 and res["profile"]["trace_file"] is None
    assert "no trace written: cannot write --trace-file" in r.stdout
    assert _entries(tmp_path) == ["r.json"]     # no stray temporary file of either writer


def test_compare_refuses_a_fifo_or_a_directory_where_its_files_go(cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "results.csv")
    line = one_line(within(30, lambda: cli("compare", "bce", "--variant", "manual", "--output-dir", out)))
    assert f"{out / 'results.csv'}: it exists and is not a regular file (a FIFO)" in line
    os.unlink(out / "results.csv")
    (out / "results.json").mkdir()
    assert "is a directory" in one_line(cli("compare", "bce", "--variant", "manual", "--output-dir", out))


def test_compare_refuses_to_replace_a_file_that_is_not_bpbenchs(cli, tmp_path):
    (tmp_path / "results.csv").write_text("name,score\nme,1\n")
    line = one_line(cli("compare", "bce", "--variant", "manual", "--output-dir", tmp_path))
    assert "results.csv exists and is not a bpbench result" in line and "--force" in line
