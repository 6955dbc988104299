"""Shell completion of names: experiments, variants, studies and data sets, from the torch-free
registries and built-in configs (`bpbench --install-completion` sets the shell up).

Each completer takes Typer's (ctx, incomplete) and returns (name, help) pairs.
"""

from __future__ import annotations

from typing import Any


def _matching(pairs, incomplete: str) -> list[tuple[str, str]]:
    return [(name, text) for name, text in pairs if name.startswith(incomplete)]


def _experiment(ctx) -> Any | None:
    """The registry entry of the experiment already on the command line, if any (while an option's
    value is completed, click leaves the positional words in ctx.args)."""
    from bpbench import experiments
    words = [(ctx.params or {}).get("experiment"), *(ctx.args or [])]
    return next((experiments.REGISTRY[w] for w in words if w in experiments.REGISTRY), None)


def experiments(ctx, incomplete: str) -> list[tuple[str, str]]:
    from bpbench import experiments as E
    return _matching(((i.name, i.summary) for i in E.REGISTRY.values()), incomplete)


def targets(ctx, incomplete: str) -> list[tuple[str, str]]:
    """compare's targets: experiments and studies."""
    from bpbench import studies
    study = ((s.name, f"study: {s.summary}") for s in studies.REGISTRY.values())
    return experiments(ctx, incomplete) + _matching(study, incomplete)


def variants(ctx, incomplete: str) -> list[tuple[str, str]]:
    """The experiment's variants when it is named already, else every registered one."""
    from bpbench import variants as V
    info = _experiment(ctx)
    names = info.variants if info else list(V.REGISTRY)
    return _matching(((n, V.REGISTRY[n].summary) for n in names), incomplete)


def data_sets(info) -> list[str]:
    """An experiment's built-in data sets: its data key's choices, or the names its built-in config
    gives `data` (the default, any per-value table's, and the [data.NAME] tables)."""
    from bpbench import config as C
    key = info.options.get("data")
    choices = getattr(key, "choices", None) or getattr(getattr(key, "check", None), "choices", None)
    if choices:
        return list(choices)
    base = C.builtin(info.name)
    names = [base["defaults"].get("data")] + list(base.get("data", {}))
    names += [table.get("data") for key, tables in base.items() if key not in ("defaults", "data")
              for table in tables.values() if isinstance(table, dict)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


def data(ctx, incomplete: str) -> list[tuple[str, str]]:
    """The built-in data sets of the experiment named, else of all (a .csv or .npz file is a data
    set too; Typer's completers offer names only)."""
    from bpbench import experiments as E
    info = _experiment(ctx)
    names = {n: f"{i.name} data set" for i in ([info] if info else E.REGISTRY.values()) for n in data_sets(i)}
    return _matching(names.items(), incomplete)


# config key -> its completer (bpbench run's generated options)
BY_KEY = {"variant": variants, "data": data}
