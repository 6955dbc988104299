"""Results as files: checks, atomic writes, CSV. The schema itself is results/schema.py.

Knows nothing of training: it only shapes, checks and stores plain dicts. Files are strict JSON:
non-finite numbers (a diverged loss) are written as null. Every file bpbench writes goes through
write_with (write_text, write_json, write_csv, write_bytes): atomically, through symlinks, never
over a device node, never over the run's inputs, bpbench itself or the Python running it, and over
a file bpbench did not write only with --force (check_output_file says so before any work). What
bpbench reads goes through config.open_input.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from bpbench.errors import BadInput
from bpbench.results.schema import REQUIRED, SCHEMA_VERSION  # noqa: F401  (re-exported for readers)


def missing_keys(result: dict[str, Any]) -> list[str]:
    """Every schema key the result lacks, as dotted paths (empty when it conforms)."""
    out = []
    for key, sub in REQUIRED.items():
        if key not in result:
            out.append(key)
        elif sub and not isinstance(result[key], dict):
            out.append(f"{key} (an object)")
        elif sub:
            out += [f"{key}.{s}" for s in sub if s not in result[key]]
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable_dir(directory: str | Path, what: str) -> None:
    """Create `directory` if needed and prove a file can be written there, before any work is
    done that would otherwise be lost at the end; raises BadInput naming `what`."""
    directory = Path(directory)
    try:
        _probe_dir(directory)
    except OSError as e:
        raise BadInput(f"cannot write {what} to {directory}: {e.strerror or e}") from None


def _probe_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bpbench-probe.", dir=directory)
    os.close(fd)
    os.unlink(tmp)


# /dev/stdout and friends name a descriptor this process already holds: write to that descriptor,
# as a shell redirection would. Opening the path instead would truncate a redirected file.
_STD_PATHS = {"/dev/stdout": 1, "/dev/stderr": 2}
_FD_PATH = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")


def _inherited_fd(path: Path) -> int | None:
    name = os.path.normpath(os.path.abspath(path))
    if name in _STD_PATHS:
        return _STD_PATHS[name]
    m = _FD_PATH.fullmatch(name)
    return int(m.group(1)) if m else None


def _target(path: str | Path, streams: bool = False) -> tuple[Path | int, bool]:
    """Where a result for `path` goes: (file, replace atomically?) or (descriptor, False).

    A regular file -- or a new one -- is replaced atomically; a symlink is followed, so its target
    is updated and the link stays a link. With `streams` (run --output), a descriptor this process
    holds (/dev/stdout), a terminal, /dev/null or a FIFO is written in place: replacing it would
    destroy the node. Anything else (a directory, a block device, a socket; a FIFO or device where
    only files belong) is refused. Raises OSError."""
    path = Path(path)
    fd = _inherited_fd(path)
    if fd is not None and not streams:    # a descriptor's file would be replaced under it
        raise OSError(errno.EINVAL, "it names a stream (a descriptor), not a file")
    if fd is not None:
        os.fstat(fd)                      # EBADF when that descriptor is closed
        return fd, False
    try:
        mode = os.stat(path).st_mode      # follows symlinks
    except FileNotFoundError:
        return Path(os.path.realpath(path)), True    # a new file, or a dangling link's target
    if stat.S_ISREG(mode):
        return Path(os.path.realpath(path)), True
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "it is a directory, not a regular file")
    if streams and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        return path, False
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
    raise OSError(errno.EINVAL, f"it exists and is not a regular file ({kind})")


# ---- what an output may replace ----

# The first columns of every CSV bpbench writes (compare's results.csv): how one is recognised.
CSV_HEAD = ("key", "study", "experiment", "variant", "device", "label", "status")
# A run's or compare's result: {"schema": 1, "experiment" | "kind": ...}. (Not the peak cache:
# an input of every run, rewritten only by its own writer.)
_RESULT_HEAD = re.compile(rb'\s*\{\s*"schema"\s*:\s*\d+\s*,\s*"(?:experiment|kind)"\s*:')
_TRACE_HEAD = re.compile(rb'\s*\{\s*"schemaVersion"\s*:')       # torch.profiler's Chrome trace
_PNG = b"\x89PNG\r\n\x1a\n"
SNIFF_BYTES = 64 * 1024
# `bpbench graph`'s outputs: its JSON, its text, and DOT/SVG named bpbench_graph (its PNGs carry
# a Software text chunk, as matplotlib's do)
_GRAPH_HEADS = (re.compile(rb'\s*\{\s*"title"\s*:[^\n]*\n\s*"world"\s*:'),
                re.compile(rb"[^\n]*: one training step: forward values"))
GRAPH_NAME = "bpbench_graph"
_forced: set[Path] = set()        # targets --force allowed to replace, for this process


def is_bpbench_output(path: Path) -> bool:
    """Whether the regular file `path` holds nothing bpbench would lose by replacing it: it is
    empty, or something bpbench writes (a run's or compare's JSON result, compare's CSV, a
    plot, a --trace-file trace). Read from its first 64 KiB only."""
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NONBLOCK)) as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return False
    if not head.strip():
        return True
    if _RESULT_HEAD.match(head) or (_TRACE_HEAD.match(head) and b'"traceEvents"' in head):
        return True
    if head.startswith(_PNG):       # matplotlib's PNGs name it in their Software text chunk
        return b"Software\x00Matplotlib" in head or b"Software\x00bpbench" in head
    if any(p.match(head) for p in _GRAPH_HEADS) or GRAPH_NAME.encode() in head[:2048]:
        return True
    first = head.split(b"\n", 1)[0].lstrip(b"\xef\xbb\xbf").rstrip(b"\r")
    return tuple(first.split(b",")[:len(CSV_HEAD)]) == tuple(c.encode() for c in CSV_HEAD)


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]      # bpbench/results/files.py -> bpbench/


def _configs_dir() -> Path | None:
    """Where the built-in configs are: inside the package once installed, the repository's
    configs/ in a development checkout."""
    from importlib import resources
    try:
        return Path(str(resources.files("bpbench.configs"))).resolve()
    except (ImportError, TypeError, OSError):
        return None


def protected_places(inputs: Iterable[str | Path | None] = ()) -> list[tuple[Path, str]]:
    """(place, what it is): where no output replaces an existing file that is not one of bpbench's
    own outputs, --force or not: bpbench's package (its shipped data, built-in configs and
    code), the Python running it (interpreter, standard library, environment), $BPBENCH_DATA,
    and the directories among this run's `inputs` (a --data-dir)."""
    import sysconfig
    configs = _configs_dir()      # first: installed, it is inside the package
    places = [(configs, "one of bpbench's built-in configs")] if configs else []
    places.append((_package_dir(), "part of bpbench itself"))
    python = "part of the Python installation running bpbench"
    if sys.executable:
        places.append((Path(os.path.realpath(sys.executable)), "the Python interpreter running bpbench"))
    places += [(Path(p).resolve(), python) for p in
               {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib", "scripts")} if p]
    if sys.prefix != sys.base_prefix:
        places.append((Path(sys.prefix).resolve(), "inside the Python environment running bpbench"))
    if os.environ.get("BPBENCH_DATA"):
        places.append((Path(os.environ["BPBENCH_DATA"]).resolve(), "inside $BPBENCH_DATA (bpbench's data)"))
    for src in inputs:
        if src is not None and os.path.isdir(src):
            places.append((Path(src).resolve(), f"inside {src}, a data directory this run reads"))
    return places


def _check_replace(target: Path, shown: str | Path, what: str, inputs: Iterable[str | Path | None] = (),
                   force: bool = False) -> None:
    """Refuse, as BadInput, to replace the existing file `target` (resolved) unless it is one of
    bpbench's own outputs or --force allowed it; never inside a protected place."""
    inputs = list(inputs)
    for src in inputs:
        if src is not None and not os.path.isdir(src) and same_file(target, src):
            raise BadInput(f"{what} {shown} is also an input of this run ({src}): writing would destroy it")
    if is_bpbench_output(target):
        return
    via = f" (through a link to {target})" if Path(os.path.abspath(shown)) != target else ""
    for place, name in protected_places(inputs):
        if target == place or place in target.parents:
            raise BadInput(f"{what} {shown}{via} is {name}: not replacing it")
    if not force and target not in _forced:
        raise BadInput(f"{what} {shown} exists and is not a bpbench result{via}: not replacing it "
                       "(give --force to replace it)")


def check_output_file(path: str | Path, what: str, inputs: Iterable[str | Path | None] = (),
                      force: bool = False, streams: bool = False) -> None:
    """Prove before any work that a result can be written to `path`: its directory takes a new
    file (created if missing) and the name itself is valid there (not too long, not a directory,
    not a device that cannot be written); it is none of the run's `inputs` (a config, a data file
    or a data directory it would destroy) and nothing _check_replace protects. `force` allows
    replacing a file that is not a bpbench result, for the rest of this process (the write
    checks again). `streams`: see _target. Raises BadInput naming `what`."""
    try:
        target, replace = _target(path, streams)
    except OSError as e:
        raise BadInput(f"cannot write {what} {path}: {e.strerror or e}") from None
    if replace and target.exists():
        if force:
            _forced.add(target)
        _check_replace(target, path, what, inputs)
    try:
        if not replace:
            if isinstance(target, Path) and not os.access(target, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            return
        _probe_dir(target.parent)
        if not target.exists():   # create the name itself once: only that finds a name too long
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(target)
    except OSError as e:
        raise BadInput(f"cannot write {what} {path}: {e.strerror or e}") from None


def names_a_file(path: str | Path) -> bool:
    """Whether an output `path` is (or would be) a file rather than a stream (/dev/stdout, a pipe)."""
    try:
        return _target(path, streams=True)[1]
    except OSError:
        return True           # what is wrong with it is said where it is checked


def same_file(a: str | Path, b: str | Path) -> bool:
    """Both name one file: the same inode, or (one of them not there yet) the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, RuntimeError, ValueError):   # a symlink loop, a NUL in the name
            return False


# ---- the one writer ----

def write_text(path: str | Path, text: str, what: str = "output", streams: bool = False,
               force: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), what, streams, force)


def write_bytes(path: str | Path, data: bytes, what: str = "output", streams: bool = False,
                force: bool = False) -> None:
    """Write a result to `path` (see _target: atomically, through symlinks, never over a device;
    see _check_replace: never over a file bpbench did not write, unless `force`: a file of
    bpbench's own, such as its peak cache, damaged)."""
    def fill(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            f.write(data)
    write_with(path, fill, what, streams, force)


def write_with(path: str | Path, fill: Callable[[Path], None], what: str = "output",
               streams: bool = False, force: bool = False) -> None:
    """Write what `fill(tmp)` writes into the file `tmp` (a library that writes a path itself: a
    profiler's trace, a figure) to `path`, as write_bytes does."""
    target, replace = _target(path, streams)
    if replace:
        if target.exists():
            _check_replace(target, path, what, force=force)
        with staged(target) as tmp:
            fill(tmp)
        return
    with tempfile.TemporaryDirectory() as scratch:    # a stream: its bytes, then in order
        tmp = Path(scratch) / "out"
        fill(tmp)
        _write_stream(target, tmp.read_bytes())


def _write_stream(target: Path | int, data: bytes) -> None:
    if target in (1, 2):          # through the stream, in order with what was printed there
        stream = sys.stdout if target == 1 else sys.stderr
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()
        return
    if isinstance(target, int):
        fd = target
    else:   # non-blocking open: a FIFO nobody reads is ENXIO at once, never a hang
        try:
            fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise OSError(e.errno, "a FIFO that nothing reads") from None
            raise
        os.set_blocking(fd, True)
    with open(fd, "wb", closefd=not isinstance(target, int)) as f:
        f.write(data)


@contextlib.contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temporary name for `path`'s new content, in a directory of its own beside `path`
    (unique, so parallel writers never share one; whatever a library leaves beside its own file
    goes with it); on success it is synced and renamed over `path`, which readers see old or
    new, never half. A file being replaced keeps its permission bits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()          # results are ordinary files
    # A short prefix: the temporary names must stay valid wherever the final name is (NAME_MAX).
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name[:32]}.", suffix=".tmp", dir=path.parent))
    try:
        tmp = scratch / path.name
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def finite_or_null(obj: Any) -> Any:
    """Strict JSON has no NaN/Infinity: a diverged run's non-finite numbers become null
    (its `status` and `error` say what happened)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(finite_or_null(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any, what: str = "output", streams: bool = False,
               force: bool = False) -> None:
    write_text(path, dumps(obj), what, streams, force)


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], columns: list[str], what: str = "output") -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    write_text(path, buf.getvalue(), what)
