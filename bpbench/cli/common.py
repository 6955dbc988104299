"""What every command shares: the Typer app, one-line errors and exit codes, signals, output checks.

Keep torch out of the cli package's imports: `bpbench --help` and `bpbench list` must start fast.
Every error a user can cause ends in one line on stderr and exit code 2 (see bpbench/errors.py).
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from bpbench import __version__
from bpbench.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BadInput,
    RunFailed,
    cut,
)

try:  # Typer >= 0.20 vendors click; older releases depend on it.
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click

# click < 8.2 has no NoArgsIsHelpError (it prints help itself).
_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())


MESSAGE_LIMIT = 3000    # characters: what a message quotes is cut (errors.quoted); this is the backstop


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    sys.stderr.write(f"bpbench: error: {cut(' '.join(message.split()), MESSAGE_LIMIT)}\n")
    sys.stderr.flush()
    raise SystemExit(code)


class PlainHelp:
    """Help as a man page writes it: `run [OPTIONS] EXPERIMENT`, each value named by a word (N,
    FILE, KEY=VALUE) and a flag by none, instead of Typer's `{experiment}`, `<bool>`, `<str>`,
    `<path>` and `<list[str]>`. Options name their own metavars where a word says more; the rest
    are named here from their type."""

    def get_params(self, ctx):
        params = super().get_params(ctx)   # Typer adds some (--help, --install-completion) late
        for param in params:
            if param.metavar is None:
                param.metavar = _value_name(param)
            if type(param) is typer.core.TyperArgument:
                param.__class__ = _NamedArgument
        return params

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]


class Command(PlainHelp, typer.core.TyperCommand):
    """Every command of the app."""


class _NamedArgument(typer.core.TyperArgument):
    """An argument its name describes (EXPERIMENT): no type beside it."""

    def display_type_rich(self, ctx) -> None:
        return None


# What the value of an option (by parameter name) is called, where its type alone says too little.
VALUE_NAMES = {"set_": "KEY=VALUE", "variant": "NAME", "preset": "NAME", "data": "NAME", "dtype": "NAME",
               "digits": "0,1|0-9", "data_dir": "DIR", "baseline": "FILE|NAME", "format": "FORMAT",
               "fmt": "FORMAT", "device": "DEVICE", "threads": "N,N,..."}


def _value_name(param) -> str:
    if isinstance(param, typer.core.TyperArgument):
        return "FILE" if param.type_descriptor.is_path else param.name.upper()
    if getattr(param, "is_flag", False):
        return ""
    kind = getattr(param, "type_descriptor", None)
    if kind is None:        # a plain click option (none here takes a value)
        return ""
    if kind.is_path:
        return "DIR" if param.name.endswith("dir") else "FILE"
    return {int: "N", float: "X"}.get(kind.annotation) or VALUE_NAMES.get(param.name, "VALUE")


class OneLineErrors(PlainHelp, typer.core.TyperGroup):
    """Turns usage errors, BadInput, OS errors and Ctrl-C/SIGTERM into one line on stderr and an
    exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _usable_streams()
        _usable_columns()
        try:
            os.getcwd()
        except FileNotFoundError:    # torch's own libraries abort the process from a deleted cwd
            fail("the current directory no longer exists: cd to one that does")
        previous = _terminate_like_interrupt()
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except _NoArgsIsHelp:  # Typer has already printed the help
            raise SystemExit(0)
        except click.exceptions.NoSuchOption as e:
            fail(_no_such_option(e))
        except click.exceptions.UsageError as e:
            fail(e.format_message())
        except BadInput as e:
            fail(str(e))
        except RunFailed as e:
            fail(str(e), EXIT_FAILED)
        except (ImportError, MemoryError) as e:
            if not _out_of_address_space(e):
                raise
            fail(f"out of memory loading the libraries ({' '.join(str(e).split())[:200] or type(e).__name__}): "
                 "an address-space limit (ulimit -v) leaves too little for torch", EXIT_FAILED)
        except OSError as e:   # a file the user named that the system refuses, a full stdout, ...
            fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else e.strerror or str(e))
        except (typer.Abort, KeyboardInterrupt):
            fail("interrupted", EXIT_INTERRUPTED)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        raise SystemExit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:   # before Typer turns it into a silent exit 130
            fail("interrupted", EXIT_INTERRUPTED)


def _out_of_address_space(e: BaseException) -> bool:
    """torch's shared libraries cannot be mapped (or Python cannot allocate) under `ulimit -v`."""
    return isinstance(e, MemoryError) or "failed to map segment" in str(e) or "cannot allocate memory" in str(e)


def _no_such_option(e) -> str:
    """click offers every option within a loose likeness (--epoch: "--epochs, --foreach, --nproc");
    here only the close ones (difflib's ratio 0.8, dashes aside) and those the typed name begins."""
    import difflib
    names = [o for p in e.ctx.command.get_params(e.ctx) for o in (*p.opts, *p.secondary_opts)] \
        if e.ctx else list(e.possibilities or ())
    bare = {o.lstrip("-"): o for o in names if o.startswith("--")}
    typed = e.option_name.lstrip("-")
    close = difflib.get_close_matches(typed, list(bare), n=3, cutoff=0.8)
    picks = close + [b for b in bare if typed and b.startswith(typed) and b not in close]
    return f"No such option: {e.option_name}" + (f" (did you mean {' or '.join(bare[b] for b in picks[:3])}?)"
                                                  if picks else "")


def _usable_columns() -> None:
    """A $COLUMNS that is no width (0, -5, "abc") is dropped, as if unset: rich took 0 for a
    width and printed nothing at all (tables, help)."""
    value = os.environ.get("COLUMNS")
    if value is not None and not (value.strip().isdigit() and int(value) > 0):
        del os.environ["COLUMNS"]


def _usable_streams() -> None:
    """Printing never fails on the streams themselves: a closed stdout/stderr (`>&-`) becomes
    os.devnull (an --output file is still written), and a character the stream's encoding lacks
    (PYTHONIOENCODING=ascii; the tables draw with box characters) is escaped, not an error."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        elif isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _terminate_like_interrupt():
    """SIGTERM (kill, a scheduler, compare stopping a cell) takes the Ctrl-C path: one line, exit
    130, finished work kept, child processes stopped. Returns the handler it replaced (None
    when signals cannot be set here: not the main thread)."""
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:   # started to ignore it (nohup-like)
            return None
        return signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:
        return None


class App(typer.Typer):
    """The app: every command made with `Command`."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or Command, **kwargs)


app = App(cls=OneLineErrors, add_completion=True, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  pretty_exceptions_enable=False,
                  help="A command-line lab for backpropagation: the same small models trained with "
                       "hand-written gradients, autograd and nn modules, on CPU and GPU, timed and "
                       "memory-profiled by one harness.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bpbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """bpbench: backpropagation, by hand and by autograd, measured."""


def _is_stdout(path: Path) -> bool:
    try:
        a, b = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):   # no real stdout (a test runner)
        return str(path) in ("/dev/stdout", "/proc/self/fd/1")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


FORMATS = ("table", "markdown", "json")


def _format(fmt: Optional[str], as_json: bool, choices: tuple[str, ...] = FORMATS) -> str:
    if fmt is not None and fmt not in choices:
        raise BadInput(f"unknown --format {fmt!r} (choose from: {', '.join(choices)})")
    if as_json and fmt not in (None, "json"):
        raise BadInput(f"--json and --format {fmt} contradict each other")
    return "json" if as_json else fmt or "table"
