"""The comparison studies of `bpbench compare`, one module per study."""
