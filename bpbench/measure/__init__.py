"""Measuring one run in this process: the loop, its clocks, its records, what it counts."""
