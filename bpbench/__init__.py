"""bpbench: a command-line lab for backpropagation.

    import bpbench
    bpbench.run("linreg", "manual")          # one run: a bpbench.Run (renders as a table in Jupyter)
    bpbench.compare("linreg", "bce")         # the matrix: a bpbench.Comparison

Importing this package must stay cheap: torch is imported only by the modules that train, and
the public functions (bpbench.api) load on first use.
"""

__version__ = "0.1.0"

__all__ = ["run", "compare", "Run", "Comparison", "__version__"]


def __getattr__(name: str):
    if name in ("run", "compare", "Run", "Comparison"):
        from bpbench import api
        return getattr(api, name)
    raise AttributeError(f"module 'bpbench' has no attribute {name!r}")
