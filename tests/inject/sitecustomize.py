"""Test-only: one more tensor operation in every training step, for the regression gate's tests.

Python imports `sitecustomize` at start-up from the first directory on sys.path that has one, so
`PYTHONPATH=tests/inject:...` makes every bpbench process started with it, a callgrind child
included, run the changed step. Nothing of bpbench knows of it.
"""

from bpbench import training

_step = training.SupervisedSession.step


def _step_with_one_more_op(self):
    loss = _step(self)
    loss.add(0.0)      # the injected change: an extra operation per step
    return loss


training.SupervisedSession.step = _step_with_one_more_op
