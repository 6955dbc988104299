"""bpbench compare: the experiment matrix and the studies, planned, run cell by cell, and derived.

plan.py chooses and checks the cells, execute.py runs each in a fresh process, derive.py fills in
what follows from the finished cells (parity, ratios, baseline changes, the studies' sections).
Trust: a cell is named by its full overrides (`--set` included); a baseline cell matches on the
run's full resolved config, never on a label; a change is called only beyond the noise and a
threshold; a fast variant's speed counts only when it matches its reference. Studies are reached
through their registry; nothing here names one.
"""

from __future__ import annotations

from bpbench.comparison.derive import (
                                    CSV_COLUMNS,
                                    FAILED,
                                    csv_rows,
                                    derive,
                                    failures,
                                    refresh,
                                    regressions,
                                    summarize,
)
from bpbench.comparison.execute import (
                                    ISOLATION,
                                    Comparison,
                                    execute,
                                    output_lock,
                                    run_cell,
                                    why_unavailable,
)
from bpbench.comparison.plan import (
                                    check_cell,
                                    check_repeat,
                                    default_preset,
                                    load_preset,
                                    plan,
                                    resolve_devices,
                                    with_references,
)
from bpbench.results.cells import LABEL_KEYS, Cell, cell_key, make_cell
from bpbench.results.noise import step_samples

__all__ = ["CSV_COLUMNS", "FAILED", "ISOLATION", "LABEL_KEYS", "Cell", "Comparison", "cell_key", "check_cell",
           "check_repeat", "csv_rows", "default_preset", "derive", "execute", "failures", "load_preset", "make_cell", "output_lock",
           "plan", "refresh", "regressions", "resolve_devices", "run_cell", "step_samples", "summarize", "why_unavailable",
           "with_references"]
