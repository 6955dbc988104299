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
