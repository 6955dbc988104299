"""Measuring one run in this process: the loop, its clocks, its records, what it counts, and the
machine's ceilings it is set against."""
