"""Results as data: checks, atomic writes, CSV. The schema itself is bpbench.schema.

Knows nothing of training: it only shapes, checks and stores plain dicts. Files are strict
JSON: non-finite numbers (a diverged loss) are written as null.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from bpbench.errors import BadInput
from bpbench.schema import REQUIRED, SCHEMA_VERSION  # noqa: F401  (re-exported for readers)


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
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(20, "not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bpbench-probe.", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise BadInput(f"cannot write {what} to {directory}: {e.strerror or e}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())    # mkstemp makes 0600; results are ordinary files
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
    atomic_write_text(path, dumps(obj))


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())
