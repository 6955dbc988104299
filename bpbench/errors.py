"""The two ways a run ends early, each with its own exit code.

The CLI turns these into one line on stderr; nothing below the CLI prints errors itself.
"""

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class BadInput(Exception):
    """The user asked for something we cannot do (exit 2, one line, no traceback)."""


class Diverged(Exception):
    """Training produced a NaN/inf loss, or NaN/inf inside the model: parameters, or values that
    torch refused (`inside`), exit 3. Carries what was computed before it."""

    def __init__(self, epoch: int, loss: float, partial=None, inside: bool = False):
        what = "the model's values became NaN/inf" if inside else f"loss became {loss}"
        super().__init__(f"{what} at epoch {epoch}: the run diverged (try a smaller --lr)")
        self.epoch = epoch
        self.loss = loss
        self.partial = partial
