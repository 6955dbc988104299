"""The two ways a run ends early, each with its own exit code.

The CLI turns these into one line on stderr; nothing below the CLI prints errors itself.
"""

EXIT_FAILED = 1        # a check failed: gradcheck out of tolerance; compare cells failed/diverged/mismatched
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_REGRESSION = 4    # compare/report --fail-on-regression: a cell slower than its baseline
EXIT_INTERRUPTED = 130


class BadInput(Exception):
    """The user asked for something we cannot do (exit 2, one line, no traceback)."""


class Diverged(Exception):
    """Training produced a NaN/inf loss (exit 3). Carries what was computed before it."""

    def __init__(self, epoch: int, loss: float, partial=None):
        super().__init__(f"loss became {loss} at epoch {epoch}: the run diverged (try a smaller --lr)")
        self.epoch = epoch
        self.loss = loss
        self.partial = partial
