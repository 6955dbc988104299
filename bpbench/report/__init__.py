"""Reports for people: one run, a comparison, plots, exports. Knows nothing of training: it reads
result dicts (see bpbench.results.schema) and renders them.

format.py holds the common nouns (units, `Tab`); run.py one run's tables; tables.py a
comparison's; progress.py a comparison's progress line; plots.py the PNGs (matplotlib, optional).
"""

from __future__ import annotations

from bpbench.report.format import Block, Tab, fmt_s
from bpbench.report.progress import CellProgress
from bpbench.report.run import print_gradcheck, print_peak, print_run, print_trace
from bpbench.report.tables import (
                                   comparison_blocks,
                                   compile_lines,
                                   markdown,
                                   noise_warning,
                                   print_comparison,
                                   show,
                                   verdicts,
                                   wide_console,
)

__all__ = ["Block", "CellProgress", "Tab", "comparison_blocks", "compile_lines", "fmt_s", "markdown",
           "noise_warning", "print_comparison", "print_gradcheck", "print_peak", "print_run", "print_trace",
           "show", "verdicts", "wide_console"]
