"""The measurement harness: times and profiles anything that follows the `Trainable` protocol.

It knows nothing of any experiment. Its pieces are separate and small:
`timer` (per-step clocks, CUDA-aware), `stats` (median / IQR), `memory` (RSS sampling, CUDA peaks,
memory_profiler's line table) and `loop` (the training loop that drives a Trainable).
"""
