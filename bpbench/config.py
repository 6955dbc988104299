"""Configuration as plain data: built-in TOML < --config FILE < command-line flags.

Torch-free on purpose: `bpbench list` and argument checking run before torch is imported.
Every value is validated here, so a bad one fails before any work starts.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Callable, TextIO

from bpbench.errors import BadInput, cut, quoted

Validator = Callable[[str, Any], Any]


# ---- validators: each takes (key, raw value) and returns the clean value or raises BadInput ----

def _typed(key: str, v: Any, kind: type | tuple[type, ...], parse: Callable[[Any], Any], what: str) -> Any:
    """`v` if it is a `kind` (a bool never is), parsed; or a string of one (flags and --set arrive
    as text). Anything else is the wrong type, refused: truncating `seed = 3.9` to 3 would run
    something the user did not ask for."""
    if isinstance(v, str) or (isinstance(v, kind) and not isinstance(v, bool)):
        try:
            return parse(v.strip() if isinstance(v, str) else v)
        except (ValueError, OverflowError):    # OverflowError: float() of a 400-digit int
            pass
    raise BadInput(f"{key} must be {what}, got {quoted(v)}")


def _int_in(key: str, v: Any, lo: float, hi: float, what: str) -> int:
    n = _typed(key, v, int, int, what)
    if not lo <= n <= hi:
        raise BadInput(f"{key} must be {what}, got {n}")
    return n


def positive_int(key: str, v: Any) -> int:
    return _int_in(key, v, 1, math.inf, "a positive integer")


def non_negative_int(key: str, v: Any) -> int:
    return _int_in(key, v, 0, math.inf, "an integer >= 0")


def thread_count(key: str, v: Any) -> int:
    """CPU threads: at most 8 per core this process may use (at least 64): OpenMP dies on far more
    (100,000 threads segfault libgomp, 2**31 overflows torch.set_num_threads)."""
    from bpbench.processes import usable_cores
    cores = usable_cores()
    most = max(64, 8 * cores)
    n = _int_in(key, v, 1, math.inf, "a positive integer")
    if n > most:
        raise BadInput(f"{key} must be at most {most} (8 per core on this {cores}-core machine), got {n}")
    return n


SEED_MAX = 2**64 - 1    # torch.manual_seed takes an unsigned 64-bit seed


def seed(key: str, v: Any) -> int:
    """Negative seeds are refused too: torch would wrap -1 to 2**64 - 1, so two different seeds
    would silently be the same run."""
    return _int_in(key, v, 0, SEED_MAX, "an integer from 0 to 2**64 - 1 (torch's seed range)")


def _number(key: str, v: Any, what: str) -> float:
    return _typed(key, v, (int, float), float, what)


def positive_float(key: str, v: Any) -> float:
    x = _number(key, v, "a positive number")
    if not math.isfinite(x) or x <= 0:
        raise BadInput(f"{key} must be a positive finite number, got {cut(str(v))}")
    return x


def non_negative_float(key: str, v: Any) -> float:
    x = _number(key, v, "a number >= 0")
    if not math.isfinite(x) or x < 0:
        raise BadInput(f"{key} must be a finite number >= 0, got {v}")
    return x


def fraction(key: str, v: Any) -> float:
    """A share strictly between 0 and 1 (a held-out fraction of 1 leaves nothing to train on)."""
    x = _number(key, v, "a number between 0 and 1")
    if not 0 < x < 1:
        raise BadInput(f"{key} must be between 0 and 1 (exclusive), got {cut(str(v))}")
    return x


def batch_size(key: str, v: Any) -> int | str:
    """'full' (gradient descent on the whole data set) or a positive integer."""
    if isinstance(v, str) and v.strip().lower() == "full":
        return "full"
    return positive_int(key, v)


def text(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise BadInput(f"{key} must be a non-empty string, got {quoted(v)}")
    return v


def boolean(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "1", "yes", "false", "0", "no"):
        return v.lower() in ("true", "1", "yes")
    raise BadInput(f"{key} must be true or false, got {quoted(v)}")


def one_of(*choices: str) -> Validator:
    def check(key: str, v: Any) -> str:
        if v not in choices:
            raise BadInput(f"unknown {key} {quoted(v)} (choose from: {', '.join(choices)})")
        return v
    check.choices = choices       # for --help and shell completion
    return check


def int_list(key: str, v: Any) -> list[int]:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise BadInput(f"{key} must be a list of positive integers, got {quoted(v)}")
    return [positive_int(key, i) for i in items]


# What a validator's values are called in --help.
VALUE_NAMES: dict[Validator, str] = {positive_int: "N", non_negative_int: "N", thread_count: "N", seed: "N",
                                     positive_float: "X", fraction: "F", batch_size: "full|N",
                                     int_list: "N,N,...", text: "NAME"}


@dataclass(frozen=True)
class Key:
    """A config key: its validator plus what `bpbench run` needs to offer it as a flag.

    Calling a Key validates a value, so a plain validator function works wherever a Key does.
    The CLI generates one `--flag` per key from these (see cli.run_parameters): an experiment or a
    variant that declares a new key gets its flag, help and panel without touching the CLI.
    """
    check: Validator
    help: str
    panel: str = "Training"
    boolean: bool = False            # an on/off flag: --name/--no-name
    metavar: str | None = None       # what --help shows for the value (None: what the validator implies)
    label: str | None = None         # its short name in a comparison cell's label ("H=500")

    def __call__(self, key: str, v: Any) -> Any:
        return self.check(key, v)

    @property
    def value_name(self) -> str:
        """--help's name for the value: the declared metavar, else the choices (when they are
        short enough not to fold in a narrow terminal), else what the validator takes (N, X, ...)."""
        if self.metavar:
            return self.metavar
        choices = getattr(self.check, "choices", ())
        if choices and len("|".join(choices)) <= 12:
            return "|".join(choices)
        return VALUE_NAMES.get(self.check, "NAME" if choices else "VALUE")

    def flag(self, name: str) -> str:
        dashed = name.replace("_", "-")
        return f"--{dashed}/--no-{dashed}" if self.boolean else f"--{dashed}"


# Keys every experiment understands. Experiment-specific keys are declared in the registry,
# variant-specific ones (e.g. `fused`) in the variants registry.
COMMON_KEYS: dict[str, Key] = {
    "variant": Key(text, "Variant name (see `bpbench list`).", "Variant", metavar="NAME"),
    "device": Key(one_of("cpu", "cuda"), "cpu or cuda.", metavar="cpu|cuda"),
    "batch_size": Key(batch_size, "'full' (gradient descent) or N.", metavar="full|N"),
    "epochs": Key(positive_int, "Passes over the training data.", metavar="N"),
    "lr": Key(positive_float, "Learning rate.", metavar="X"),
    "seed": Key(seed, "Seed for every random choice (default: the config's).", metavar="N"),
    "warmup_steps": Key(non_negative_int, "Updates timed apart as warm-up.", metavar="N"),
    "data": Key(text, "Data set (per experiment; see docs/data.md).", "Data", metavar="NAME"),
    "log_every": Key(non_negative_int, "Print a progress line every N epochs.", "Output", metavar="N"),
    "eval_every": Key(non_negative_int, "Evaluate every N epochs (history).", "Output", metavar="N"),
    "eval_every_updates": Key(non_negative_int, "Evaluate every N updates (a grid in updates, the same "
                                                "for every batch size).", "Output", metavar="N"),
    "threads": Key(thread_count, "CPU threads for torch (torch.set_num_threads; default: torch's).", metavar="N"),
    "flops": Key(boolean, "After training, count one step's FLOPs and look up the measured peak (default "
                          "on; FlopCounterMode imports torch._dynamo, ~1.5 s, in a process that has not).",
                 "Output", boolean=True),
}


# ---- reading the user's files: one reader for every input (config, result, cache, data) ----

MiB = 1 << 20
CONFIG_LIMIT = 1 * MiB          # a config file: a few hundred bytes in practice
DOCUMENT_LIMIT = 256 * MiB      # a results.json: a large comparison with every step time is ~20 MB
DATA_LIMIT = 2048 * MiB         # a data file (CSV, .npz, IDX, and what a .gz unpacks to): MNIST is 55 MB
MAX_DEPTH = 64                  # nesting levels; bpbench's own files have fewer than 10


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB" if n >= MiB else f"{n:,} bytes"


def too_large(what: str, path: Path | str, size: int | None, limit: int) -> BadInput:
    got = f" ({_mib(size)})" if size is not None else ""
    return BadInput(f"{what} {path} is larger than bpbench reads{got}: the limit is {_mib(limit)}")


def check_regular(st: os.stat_result, what: str, path: Path | str) -> None:
    """A directory, FIFO, socket or device is no input file: a FIFO or /dev/zero would block or
    never end."""
    if stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{what} {path} is a directory, not a regular file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise BadInput(f"{what} {path} is not a regular file ({kind})")


def open_input(path: Path | str, what: str, limit: int) -> BinaryIO:
    """A user's input file opened for reading (binary), or BadInput naming it: missing,
    unreadable (permissions, a name too long), not a regular file, or larger than `limit` bytes.

    It is stat()ed before it is opened and opened non-blocking, so a FIFO (swapped in between,
    even) never blocks the open; the open descriptor is checked again."""
    p = Path(path)
    try:
        check_regular(os.stat(p), what, p)
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {p}") from None
    except (OSError, ValueError) as e:      # ValueError: a NUL byte in the name
        raise BadInput(f"cannot read {what} {p}: {getattr(e, 'strerror', None) or e}") from None
    try:
        st = os.fstat(fd)
        check_regular(st, what, p)
        if st.st_size > limit:
            raise too_large(what, p, st.st_size, limit)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path | str, what: str, limit: int) -> bytes:
    """The whole file, at most `limit` bytes (one that grew past it since it was opened too)."""
    with open_input(path, what, limit) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise BadInput(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise too_large(what, path, None, limit)
    return data


def open_text_file(path: Path | str, what: str, newline: str | None = None,
                   limit: int = DATA_LIMIT) -> TextIO:
    """open_input as UTF-8 text (for streaming, e.g. a CSV). A byte-order mark, as Excel's "CSV
    UTF-8" and Notepad write, is dropped."""
    return io.TextIOWrapper(open_input(path, what, limit), encoding="utf-8-sig", newline=newline)


def read_text_file(path: Path | str, what: str, limit: int = CONFIG_LIMIT) -> str:
    try:
        return read_bytes(path, what, limit).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{what} {path} is not UTF-8 text") from None


def too_deep(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and dicts nest more than `limit` levels (iteratively: no recursion to blow)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _parsed(loads: Callable[[str], Any], text: str, what: str) -> Any:
    """loads(text), refusing input nested deeper than MAX_DEPTH: a parser's own recursion limit
    (RecursionError, from a document nested 100,000 deep) or, below it, anything that would
    make the code reading the document recurse deeply."""
    try:
        doc = loads(text)
    except RecursionError:
        doc = None
        deep = True
    else:
        deep = isinstance(doc, (dict, list)) and too_deep(doc)
    if deep:
        raise BadInput(f"{what} is nested too deeply (more than {MAX_DEPTH} levels of arrays or tables)")
    return doc


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):            # 1e400: strict JSON has no infinity
        raise ValueError(f"number out of range: {text[:40]}")
    return x


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (bpbench writes null for a number that is not finite)")


def parse_json(text: str, what: str, strict: bool = True) -> Any:
    """JSON text as data, or BadInput naming `what`. Strict (the default): NaN, Infinity and
    numbers beyond a float are refused, as bpbench never writes them."""
    extra = {"parse_constant": _no_constant, "parse_float": _finite} if strict else {}
    try:
        return _parsed(lambda t: json.loads(t, **extra), text, what)
    except ValueError as e:             # json.JSONDecodeError, or from _finite / _no_constant
        raise BadInput(f"{what} is not valid JSON: {e}") from None


def read_json(path: Path | str, what: str, limit: int = DOCUMENT_LIMIT, strict: bool = True) -> Any:
    """A JSON file through the one reader: regular, bounded, UTF-8, nested at most MAX_DEPTH."""
    return parse_json(read_text_file(path, what, limit), f"{what} {path}", strict)


def parse_toml(text: str, what: str) -> dict[str, Any]:
    try:
        return _parsed(tomllib.loads, text, what)
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{what} is not valid TOML: {e}") from None


def read_toml(path: Path | str) -> dict[str, Any]:
    return parse_toml(read_text_file(path, "config file"), f"config file {path}")


def builtin(name: str) -> dict[str, Any]:
    """The shipped configs/NAME.toml (packaged as bpbench.configs)."""
    text = resources.files("bpbench.configs").joinpath(f"{name}.toml").read_text("utf-8")
    return parse_toml(text, f"built-in config {name}.toml")


# key -> the key that would overrule it: a value the user gives (file or flag) for the first drops
# a built-in value of the second, so `--epochs 2` is not overruled by a built-in `updates`.
OVERRULED_BY = {"epochs": "updates"}


def read_user_file(user_file: str | Path, keys: dict[str, Validator], name: str) -> dict[str, Any]:
    """A --config file's values, each one checked, even one a flag will override: a bad value
    in a file (`epochs = true`) is a mistake in that file whatever the command line says."""
    user = read_toml(user_file)
    for k, v in user.items():
        if k not in keys:
            raise BadInput(f"config file {user_file}: unknown key {quoted(k)} "
                           f"(known for {name}: {', '.join(sorted(keys))})")
        if isinstance(v, dict):
            raise BadInput(f"config file {user_file}: {quoted(k)} must be a value, not a table")
        meant = keys[k](f"{user_file}: {k}", v)
        # TOML is typed: a quoted "5" where a number belongs is a mistake (flags and --set
        # arrive as text, so only a file can say which one it meant): the key's validator
        # turning the text into a number or boolean says a number or boolean belonged there.
        if isinstance(v, str) and isinstance(meant, (bool, int, float)):
            kind = "true or false" if isinstance(meant, bool) else "a number"
            raise BadInput(f"config file {user_file}: {k} must be {kind}, not the string {quoted(v)}")
    return user


def resolve(name: str, keys: dict[str, Validator], user_file: str | Path | None,
            flags: dict[str, Any]) -> dict[str, Any]:
    """Merge built-in defaults < user config file < flags, then validate every value.

    The built-in file has `[defaults]` and optional per-value tables `[KEY.VALUE]` (any key, in
    file order) whose values apply when KEY has that value: `[data.scatter30]` trains seed 003's
    lr and epochs, `[digits."0-9"]` a different source's whole setup.
    """
    base = builtin(name)
    user = read_user_file(user_file, keys, name) if user_file is not None else {}
    flags = {k: v for k, v in flags.items() if v is not None}
    given = {**user, **flags}
    merged = dict(base["defaults"])
    for key, tables in base.items():
        if key != "defaults":
            merged.update(tables.get(str(given.get(key, merged.get(key))), {}))
    for k, stronger in OVERRULED_BY.items():
        if k in given and stronger not in given:
            merged.pop(stronger, None)
    merged.update(given)
    unknown = set(merged) - set(keys)
    if unknown:  # a flag or built-in key the experiment does not declare
        raise BadInput(f"{name} does not take {', '.join(sorted(unknown))}")
    def where(k: str) -> str:   # errors name what the user typed: the flag, or the file's key
        if k in flags:
            return f"--{k.replace('_', '-')}"
        return f"{user_file}: {k}" if k in user else k
    return {k: keys[k](where(k), v) for k, v in merged.items()}


def parse_set(items: list[str], flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """`--set key=value` pairs; values stay strings, the validators convert them.

    A key given twice -- two --set items, or a --set item and its own flag (`--manual --set
    variant=nn`) -- is bad input: one of the two would be silently ignored."""
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        key = k.strip().replace("-", "_")
        if not sep or not key:
            raise BadInput(f"--set expects KEY=VALUE, got {quoted(item)}")
        if key in out:
            raise BadInput(f"--set {cut(key)} is given twice")
        if flags and flags.get(key) is not None:
            raise BadInput(f"--set {cut(item.strip())} contradicts a flag that already sets {key} "
                           f"({flags[key]!r}): give it once")
        out[key] = v.strip()
    return out
