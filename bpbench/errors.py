"""Exit codes, and the exception for bad input.

The CLI turns BadInput into one line on stderr; nothing below the CLI prints errors itself. A
diverged run is not an exception: it is a result with status "diverged" (exit 3).
"""

EXIT_FAILED = 1        # a check failed: gradcheck out of tolerance; compare cells failed/diverged/mismatched
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_REGRESSION = 4    # compare/report --fail-on-regression: a cell slower than its baseline
EXIT_INTERRUPTED = 130


class BadInput(Exception):
    """The user asked for something we cannot do (exit 2, one line, no traceback)."""


class RunFailed(Exception):
    """The run could not finish for another reason, e.g. one of its ranks died (exit 1, one line)."""


QUOTE_LIMIT = 60       # characters of a user's text an error message repeats


def cut(text: str, limit: int = QUOTE_LIMIT) -> str:
    """A user's text as a message repeats it unquoted, cut to `limit` characters with "…"."""
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` as a message quotes it (repr), cut to about `limit` characters with "…": a 10 MB
    TOML key must not become a 10 MB error line. Built from a bounded prefix, so a huge string or
    list is never rendered whole just to be cut."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"
    import reprlib
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    text = short.repr(value)
    return text if len(text) <= limit + 10 else text[:limit] + "…"
