"""A newcomer's first minutes: --help that reads as a man page, typo suggestions that are close,
and shell completion of the registries' names."""

import pytest
from typer.testing import CliRunner

from bpbench import config as C
from bpbench import experiments, studies, variants
from bpbench.cli import app

COMMANDS = [["run"], ["compare"], ["report"], ["gradcheck"], ["peak"], ["list"], []]


def helptext(*args: str, columns: int = 80) -> str:
    r = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_values_by_words_not_by_python_types(command):
    text = helptext(*command)
    for typed in ("<bool>", "<str>", "<path>", "<list[str]>", "<int>", "<float>", " TEXT "):
        assert typed not in text, (command, typed)
    assert "{" not in text.splitlines()[1]           # the usage line: EXPERIMENT, not {experiment}


def test_usage_lines_name_the_arguments():
    assert "run [OPTIONS] EXPERIMENT" in helptext("run")
    assert "report [OPTIONS] FILE" in helptext("report")
    assert "compare [OPTIONS] [TARGETS]..." in helptext("compare")


def test_every_value_name_stays_whole_at_80_columns():
    """"resident|dataloade / r": a long metavar folded across lines in the Data panel."""
    text = helptext("run")
    keys = {**C.COMMON_KEYS, **variants.option_keys(),
            **{k: v for i in experiments.REGISTRY.values() for k, v in i.options.items() if isinstance(v, C.Key)}}
    for name, key in keys.items():
        if not key.boolean:
            assert f"--{name.replace('_', '-')} " in text and f" {key.value_name} " in text, (name, key.value_name)
    assert "--nproc          N " in text


@pytest.mark.parametrize("typed,says", [("--epoch", "(did you mean --epochs?)"), ("--seeed", "(did you mean --seed?)"),
                                        ("--warmup", "(did you mean --warmup-steps?)"), ("--verbose", "")])
def test_a_mistyped_option_suggests_only_the_close_ones(cli, typed, says):
    """--epoch suggested '--epochs, --foreach, --nproc'."""
    r = cli("run", "linreg", typed, "3")
    assert r.exit_code == 2 and r.stderr == f"bpbench: error: No such option: {typed}{' ' + says if says else ''}\n"


def complete(words: str) -> str:
    r = CliRunner().invoke(app, [], prog_name="bpbench",
                           env={"_BPBENCH_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": words})
    return r.stdout


def test_shell_completion_offers_the_registries_names():
    assert all(f'"{name}"' in complete("bpbench run ") for name in experiments.REGISTRY)
    assert [n for n in studies.REGISTRY if f'"{n}"' in complete("bpbench compare ")] == list(studies.REGISTRY)
    offered = complete("bpbench run shopping --variant ")
    assert all(f'"{v}"' in offered for v in experiments.REGISTRY["shopping"].variants)
    assert '"compiled"' not in offered               # shopping offers manual and autograd alone
    assert '"xor"' in complete("bpbench run bce --data ") and '"offline"' not in complete("bpbench run bce --data ")
    assert '"scatter30"' in complete("bpbench run linreg --data s")
    assert '"offline"' in complete("bpbench run mnist01 --data ") and '"mnist"' in complete("bpbench gradcheck mnist01 --data ")


@pytest.mark.parametrize("columns", ["0", "-5", "abc"])
def test_a_columns_value_that_is_no_width_is_ignored(columns):
    """COLUMNS=0: rich took 0 for the width and printed nothing at all, help and tables alike."""
    for args, shows in ((["--help"], "Train one experiment"), (["list"], "linreg")):
        r = CliRunner().invoke(app, args, env={"COLUMNS": columns})
        assert r.exit_code == 0 and shows in r.stdout, (args, r.stdout)
