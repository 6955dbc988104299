"""Configuration as plain data: built-in TOML < --config FILE < command-line flags.

Torch-free on purpose: `bpbench list` and argument checking run before torch is imported.
Every value is validated here, so a bad one fails before any work starts.
"""

from __future__ import annotations

import math
import stat
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, TextIO

from bpbench.errors import BadInput

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
    raise BadInput(f"{key} must be {what}, got {v!r}")


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
    import os
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
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
        raise BadInput(f"{key} must be a positive finite number, got {v}")
    return x


def fraction(key: str, v: Any) -> float:
    """A share strictly between 0 and 1 (a held-out fraction of 1 leaves nothing to train on)."""
    x = _number(key, v, "a number between 0 and 1")
    if not 0 < x < 1:
        raise BadInput(f"{key} must be between 0 and 1 (exclusive), got {v}")
    return x


def batch_size(key: str, v: Any) -> int | str:
    """'full' (gradient descent on the whole data set) or a positive integer."""
    if isinstance(v, str) and v.strip().lower() == "full":
        return "full"
    return positive_int(key, v)


def text(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise BadInput(f"{key} must be a non-empty string, got {v!r}")
    return v


def boolean(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "1", "yes", "false", "0", "no"):
        return v.lower() in ("true", "1", "yes")
    raise BadInput(f"{key} must be true or false, got {v!r}")


def one_of(*choices: str) -> Validator:
    def check(key: str, v: Any) -> str:
        if v not in choices:
            raise BadInput(f"unknown {key} {v!r} (choose from: {', '.join(choices)})")
        return v
    return check


def int_list(key: str, v: Any) -> list[int]:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise BadInput(f"{key} must be a list of positive integers, got {v!r}")
    return [positive_int(key, i) for i in items]


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
    metavar: str = "TEXT"            # what --help shows for the value
    label: str | None = None         # its short name in a comparison cell's label ("H=500")

    def __call__(self, key: str, v: Any) -> Any:
        return self.check(key, v)

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


def open_text_file(path: Path | str, what: str, newline: str | None = None) -> TextIO:
    """A user's input file opened as UTF-8 text, or BadInput naming it: missing, unreadable
    (permissions, a name too long for the file system) or not a regular file (a directory; a
    FIFO or /dev/zero that would block or never end). A byte-order mark, as Excel's "CSV UTF-8"
    and Notepad write, is dropped."""
    p = Path(path)
    try:
        if not stat.S_ISREG(p.stat().st_mode):
            raise BadInput(f"{what} {p} is not a regular file")
        return p.open(encoding="utf-8-sig", newline=newline)
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {p}") from None
    except OSError as e:
        raise BadInput(f"cannot read {what} {p}: {e.strerror or e}") from None


def read_text_file(path: Path | str, what: str) -> str:
    with open_text_file(path, what) as f:
        try:
            return f.read()
        except UnicodeDecodeError:
            raise BadInput(f"{what} {path} is not UTF-8 text") from None


def read_toml(path: Path | str) -> dict[str, Any]:
    text = read_text_file(path, "config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"config file {path} is not valid TOML: {e}") from None


def builtin(name: str) -> dict[str, Any]:
    """The shipped configs/NAME.toml (packaged as bpbench.configs)."""
    return tomllib.loads(resources.files("bpbench.configs").joinpath(f"{name}.toml").read_text("utf-8"))


# key -> the key that would overrule it: a value the user gives (file or flag) for the first drops
# a built-in value of the second, so `--epochs 2` is not overruled by a built-in `updates`.
OVERRULED_BY = {"epochs": "updates"}


def resolve(name: str, keys: dict[str, Validator], user_file: str | Path | None,
            flags: dict[str, Any]) -> dict[str, Any]:
    """Merge built-in defaults < user config file < flags, then validate every value.

    The built-in file has `[defaults]` and optional per-value tables `[KEY.VALUE]` (any key, in
    file order) whose values apply when KEY has that value: `[data.scatter30]` trains seed 003's
    lr and epochs, `[digits."0-9"]` a different source's whole setup.
    """
    base = builtin(name)
    user: dict[str, Any] = {}
    if user_file is not None:
        user = read_toml(user_file)
        for k, v in user.items():
            if k not in keys:
                raise BadInput(f"config file {user_file}: unknown key {k!r} "
                               f"(known for {name}: {', '.join(sorted(keys))})")
            if isinstance(v, dict):
                raise BadInput(f"config file {user_file}: {k!r} must be a value, not a table")
            # TOML is typed: a quoted "5" where a number belongs is a mistake (flags and --set
            # arrive as text, so only a file can say which one it meant): the key's validator
            # turning the text into a number or boolean says a number or boolean belonged there.
            if isinstance(v, str):
                try:
                    meant = keys[k](k, v)
                except BadInput:
                    meant = v     # a bad value: the validation below says why
                if isinstance(meant, (bool, int, float)):
                    kind = "true or false" if isinstance(meant, bool) else "a number"
                    raise BadInput(f"config file {user_file}: {k} must be {kind}, not the string {v!r}")
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
            raise BadInput(f"--set expects KEY=VALUE, got {item!r}")
        if key in out:
            raise BadInput(f"--set {key} is given twice")
        if flags and flags.get(key) is not None:
            raise BadInput(f"--set {item.strip()} contradicts a flag that already sets {key} "
                           f"({flags[key]!r}): give it once")
        out[key] = v.strip()
    return out
