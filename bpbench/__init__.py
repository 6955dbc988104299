"""bpbench: a command-line lab for backpropagation.

Importing this package must stay cheap: torch is imported only by the modules that train.
"""

__version__ = "0.1.0"
