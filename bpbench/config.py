"""Configuration as plain data: built-in TOML < --config FILE < command-line flags.

Torch-free on purpose: `bpbench list` and argument checking run before torch is imported.
Every value is validated here, so a bad one fails before any work starts.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bpbench.errors import BadInput

Validator = Callable[[str, Any], Any]


# ---- validators: each takes (key, raw value) and returns the clean value or raises BadInput ----

def positive_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise BadInput(f"{key} must be a positive integer, got {v!r}")
    try:
        n = int(v)
    except ValueError:
        raise BadInput(f"{key} must be a positive integer, got {v!r}") from None
    if n <= 0:
        raise BadInput(f"{key} must be a positive integer, got {n}")
    return n


def non_negative_int(key: str, v: Any) -> int:
    if isinstance(v, bool):
        raise BadInput(f"{key} must be an integer >= 0, got {v!r}")
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise BadInput(f"{key} must be an integer >= 0, got {v!r}") from None
    if n < 0:
        raise BadInput(f"{key} must be an integer >= 0, got {n}")
    return n


def any_int(key: str, v: Any) -> int:
    if isinstance(v, bool):
        raise BadInput(f"{key} must be an integer, got {v!r}")
    try:
        return int(v)
    except (TypeError, ValueError):
        raise BadInput(f"{key} must be an integer, got {v!r}") from None


def positive_float(key: str, v: Any) -> float:
    if isinstance(v, bool):
        raise BadInput(f"{key} must be a positive number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise BadInput(f"{key} must be a positive number, got {v!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise BadInput(f"{key} must be a positive finite number, got {v}")
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

    def __call__(self, key: str, v: Any) -> Any:
        return self.check(key, v)

    def flag(self, name: str) -> str:
        dashed = name.replace("_", "-")
        return f"--{dashed}/--no-{dashed}" if self.boolean else f"--{dashed}"


# Keys every experiment understands. Experiment-specific keys are declared in the registry,
# variant-specific ones (e.g. `fused`) in the variants registry.
COMMON_KEYS: dict[str, Key] = {
    "variant": Key(text, "Variant name (see `bpbench list`).", "Variant"),
    "device": Key(one_of("cpu", "cuda"), "cpu or cuda."),
    "batch_size": Key(batch_size, "'full' (gradient descent) or N."),
    "epochs": Key(positive_int, "Passes over the training data."),
    "lr": Key(positive_float, "Learning rate."),
    "seed": Key(any_int, "Seed for every random choice (default: the config's)."),
    "warmup_steps": Key(non_negative_int, "Updates timed apart as warm-up."),
    "data": Key(text, "Data set (per experiment; see README).", "Data"),
    "log_every": Key(non_negative_int, "Print a progress line every N epochs.", "Output"),
    "eval_every": Key(non_negative_int, "Evaluate every N epochs (history).", "Output"),
    "threads": Key(positive_int, "CPU threads for torch (torch.set_num_threads; default: torch's)."),
    "flops": Key(boolean, "After training, count one step's FLOPs and look up the measured peak (default "
                          "on; FlopCounterMode imports torch._dynamo, ~1.5 s, in a process that has not).",
                 "Output", boolean=True),
}


def read_toml(path: Path | str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"config file {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise BadInput(f"config file {p} is not UTF-8 text") from None


def builtin(name: str) -> dict[str, Any]:
    """The shipped configs/NAME.toml (packaged as bpbench.configs)."""
    return tomllib.loads(resources.files("bpbench.configs").joinpath(f"{name}.toml").read_text("utf-8"))


def resolve(name: str, keys: dict[str, Validator], user_file: str | Path | None,
            flags: dict[str, Any]) -> dict[str, Any]:
    """Merge built-in defaults < user config file < flags, then validate every value.

    The built-in file has `[defaults]` and optional `[data.NAME]` tables whose values apply when
    that data set is chosen (seed 000 and seed 003 train with different lr and epochs).
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
    flags = {k: v for k, v in flags.items() if v is not None}
    data = flags.get("data", user.get("data", base["defaults"].get("data")))
    merged = dict(base["defaults"])
    merged.update(base.get("data", {}).get(data, {}))
    merged.update(user)
    merged.update(flags)
    unknown = set(merged) - set(keys)
    if unknown:  # a flag or built-in key the experiment does not declare
        raise BadInput(f"{name} does not take {', '.join(sorted(unknown))}")
    def where(k: str) -> str:   # errors name what the user typed: the flag, or the file's key
        if k in flags:
            return f"--{k.replace('_', '-')}"
        return f"{user_file}: {k}" if k in user else k
    return {k: keys[k](where(k), v) for k, v in merged.items()}


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values stay strings, the validators convert them."""
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise BadInput(f"--set expects KEY=VALUE, got {item!r}")
        out[k.strip().replace("-", "_")] = v.strip()
    return out
