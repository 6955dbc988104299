"""Results as data: checks, atomic writes, CSV. The schema itself is bpbench.schema.

Knows nothing of training: it only shapes, checks and stores plain dicts (the schema of a run is
bpbench/schema.py). Files are strict JSON: non-finite numbers (a diverged loss) are written as
null. Every result file goes through write_text: atomically, through symlinks, never over a
device node.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

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


def _target(path: str | Path) -> tuple[Path | int, bool]:
    """Where a result for `path` goes: (file, replace atomically?) or (descriptor, False).

    A regular file -- or a new one -- is replaced atomically; a symlink is followed, so its target
    is updated and the link stays a link. A terminal, pipe or other character device (/dev/null) is
    written in place: replacing it would destroy the device node. Anything else (a directory, a
    block device, a socket) is refused. Raises OSError."""
    path = Path(path)
    fd = _inherited_fd(path)
    if fd is not None:
        os.fstat(fd)                      # EBADF when that descriptor is closed
        return fd, False
    try:
        mode = os.stat(path).st_mode      # follows symlinks
    except FileNotFoundError:
        return Path(os.path.realpath(path)), True    # a new file, or a dangling link's target
    if stat.S_ISREG(mode):
        return Path(os.path.realpath(path)), True
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return path, False
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    raise OSError(errno.EINVAL, "not a regular file, terminal or pipe")


def check_output_file(path: str | Path, what: str, inputs: Iterable[str | Path | None] = ()) -> None:
    """Prove before any work that a result can be written to `path`: its directory takes a new
    file (created if missing) and the name itself is valid there (not too long, not a directory,
    not a device that cannot be written), and it is none of the run's `inputs` (a config or data
    file it would destroy); raises BadInput naming `what`."""
    for src in inputs:
        if src is not None and same_file(path, src):
            raise BadInput(f"{what} {path} is also an input of this run ({src}): writing would destroy it")
    try:
        target, replace = _target(path)
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


def same_file(a: str | Path, b: str | Path) -> bool:
    """Both name one file: the same inode, or (one of them not there yet) the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, RuntimeError, ValueError):   # a symlink loop, a NUL in the name
            return False


def write_text(path: str | Path, text: str) -> None:
    """Write a result to `path` (see _target: atomically, through symlinks, never over a device)."""
    target, replace = _target(path)
    if replace:
        atomic_write_text(target, text)
        return
    if target in (1, 2):          # through the stream, in order with what was printed there
        stream = sys.stdout if target == 1 else sys.stderr
        stream.write(text)
        stream.flush()
        return
    with open(target, "w", encoding="utf-8", closefd=not isinstance(target, int)) as f:
        f.write(text)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see old or new, never half.
    A file being replaced keeps its permission bits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()          # mkstemp makes 0600; results are ordinary files
    # A short prefix: the temp name must stay valid wherever the final name is (NAME_MAX).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:32]}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, dumps(obj))


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    write_text(path, buf.getvalue())
