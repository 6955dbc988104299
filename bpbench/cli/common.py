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


class OneLineErrors(typer.core.TyperGroup):
    """Turns usage errors, BadInput, OS errors and Ctrl-C/SIGTERM into one line on stderr and an
    exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _usable_streams()
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
        except click.exceptions.UsageError as e:
            fail(e.format_message())
        except BadInput as e:
            fail(str(e))
        except RunFailed as e:
            fail(str(e), EXIT_FAILED)
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


app = typer.Typer(cls=OneLineErrors, add_completion=True, no_args_is_help=True,
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
