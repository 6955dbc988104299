"""The docs show commands that run and output that those commands print.

(a) Every command line in a shell block of README.md, CONTRIBUTING.md and docs/*.md parses
    against the real CLI: click's `make_context` on the Typer app's command, nothing invoked. A `make X` line must name
    a Makefile target. A command shown failing on purpose ends with a comment that starts with
    `# exit 2` (it may fail to parse).
(b) A block after a marker holds lines of what a command prints, numbers aside:

        <!-- output-of: bpbench run bce --trace -->

    Each line of the block, with its numbers and time and size units masked and runs of spaces
    and table rules squeezed, must appear in that order among the lines the command prints (run
    in-process, 100 columns). `...` lines are elisions. Optional marker fields, one per line:
    `checked-with: CMD` runs a cheaper command whose output has the same lines (fewer epochs),
    `given: CMD` runs a command first (one that writes the file shown), and `machine-specific:
    WORD, ...` exempts lines holding one of the words (the CPU's name).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bpbench.cli import app

try:  # Typer >= 0.20 vendors click; older releases depend on it.
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"console", "shell", "sh", "bash"}
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARKER = re.compile(r"<!--\s*output-of:(.*?)-->", re.S)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")      # an environment prefix: VAR=value


@dataclass
class Block:
    doc: Path
    line: int                   # 1-based line of the opening fence
    lang: str
    lines: list[str]
    marker: dict[str, str] = field(default_factory=dict)

    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def parse_marker(text: str) -> dict[str, str]:
    fields = {"output-of": ""}
    key = "output-of"
    for part in text.strip().splitlines():
        m = re.match(r"\s*(checked-with|given|machine-specific):(.*)", part)
        if m:
            key, part = m.group(1), m.group(2)
        fields[key] = " ".join([fields.get(key, ""), part.strip()]).strip()
    return fields


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of a markdown file, each with the output-of marker right above it."""
    text = doc.read_text("utf-8")
    lines = text.splitlines()
    markers = {text.count("\n", 0, m.end()): parse_marker(m.group(1)) for m in MARKER.finditer(text)}
    out, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        above = i - 1                   # the marker's last line, blank lines aside
        while above >= 0 and not lines[above].strip():
            above -= 1
        indent, start, body = fence.group(1), i, []
        i += 1
        while i < len(lines) and not lines[i].startswith(indent + "```"):
            body.append(lines[i][len(indent):])
            i += 1
        out.append(Block(doc, start + 1, fence.group(2), body, markers.get(above, {})))
        i += 1
    return out


ALL_BLOCKS = [b for doc in DOCS for b in blocks(doc)]


def command_lines(block: Block) -> list[str]:
    """Shell lines of a block, `\\` continuations joined: `$ ` lines anywhere, every line of a
    shell block without prompts."""
    prompted = any(line.startswith("$ ") for line in block.lines)
    if not prompted and block.lang not in SHELL_LANGS:
        return []
    out, current = [], None
    for line in block.lines:
        if current is not None:
            current += " " + line.strip()
        elif line.startswith("$ "):
            current = line[2:]
        elif not prompted and line.strip() and not line.lstrip().startswith("#"):
            current = line
        else:
            continue
        if current.endswith("\\"):
            current = current[:-1]
        else:
            out.append(current.strip())
            current = None
    return out


def segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at |, &&, ;), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    redirect = False
    for token in lexer:
        if redirect:                    # the file of a redirection
            redirect = False
        elif token and set(token) <= set("<>&") and token != "&&":
            redirect = True
            if out[-1] and out[-1][-1].isdigit():   # 2>file: the 2 belongs to the redirection
                out[-1].pop()
        elif token and set(token) <= set("|&;"):
            out.append([])
        else:
            out[-1].append(token)
    return [s for s in out if s]


def bpbench_args(words: list[str]) -> list[str] | None:
    """The arguments of a bpbench invocation (`bpbench ...`, `python -m bpbench ...`, `torchrun
    ... -m bpbench ...`, after any VAR=value prefixes); None for any other program."""
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return None
    if Path(words[0]).name == "bpbench":
        return words[1:]
    for i in range(len(words) - 1):
        if words[i:i + 2] == ["-m", "bpbench"]:
            return words[i + 2:]
    return None


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text("utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


COMMAND = typer.main.get_command(app)
EXIT = getattr(click.exceptions, "Exit", typer.Exit)   # vendored click exits with Typer's own


def parse(args: list[str]) -> None:
    """Parse args as the CLI would, down to the subcommand, without invoking anything."""
    try:
        ctx = COMMAND.make_context("bpbench", list(args))
        # the group leaves the subcommand's words unparsed (click 8.2 renamed where)
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        rest = [*protected, *ctx.args]
        if rest:
            name, sub, sub_args = COMMAND.resolve_command(ctx, rest)
            sub.make_context(name, sub_args, parent=ctx)
    except EXIT as e:       # --help, --version: parsed, then they exit
        assert e.exit_code == 0


def shown_commands() -> list[tuple[str, str, bool]]:
    """(where, command line, shown failing) for every shell line and output marker in the docs."""
    out = []
    for b in ALL_BLOCKS:
        for line in command_lines(b):
            out.append((b.where(), line, bool(re.search(r"#\s*exit 2\b", line))))
        for key in ("output-of", "checked-with", "given"):
            if b.marker.get(key):
                out.append((b.where(), b.marker[key], False))
    return out


SHOWN = shown_commands()


def test_the_docs_show_commands():
    bp = [c for c in SHOWN if any(bpbench_args(s) is not None for s in segments(c[1]))]
    assert len(bp) >= 30, f"only {len(bp)} bpbench commands found in the docs: is the parser lost?"


@pytest.mark.parametrize("where,line,failing", SHOWN, ids=[f"{w} {l}" for w, l, _ in SHOWN])
def test_shown_command_parses(where, line, failing):
    for words in segments(line):
        if words[0] == "make":
            missing = [t for t in words[1:] if not t.startswith("-") and "=" not in t
                       and t not in make_targets()]
            assert not missing, f"{where}: `{line}`: no Makefile target {missing}"
            continue
        args = bpbench_args(words)
        if args is None:
            continue
        try:
            parse(args)
        except click.exceptions.UsageError as e:
            if not failing:
                pytest.fail(f"{where}: `{line}` does not parse: {e.format_message()}")


def test_a_wrong_command_is_refused():
    """The parse check can fail: an unknown flag or a missing argument is a usage error."""
    for args in (["run", "linreg", "--no-such-flag"], ["run"], ["no-such-command"],
                 ["compare", "--repeat", "many"]):
        with pytest.raises(click.exceptions.UsageError):
            parse(args)


NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
UNITS = [(re.compile(r"# ?(?:ns|µs|us|ms|s|min)\b"), "# s"), (re.compile(r"# ?[KMG]iB\b"), "# B")]
SQUEEZE = re.compile(r"([ ─━═])\1+")


def mask(line: str) -> str:
    """A line with its numbers (and their time or size unit) masked, runs of spaces or of a
    table's rule characters squeezed: what stays the same from one run to the next."""
    line = NUMBER.sub("#", line)
    for pattern, repl in UNITS:
        line = pattern.sub(repl, line)
    return SQUEEZE.sub(r"\1", line).strip()


def missing_lines(shown: list[str], printed: list[str]) -> list[str]:
    """The shown lines (masked) that are not, in order, among the printed ones."""
    printed_masked = [mask(p) for p in printed]
    missing, pos = [], 0
    for line in shown:
        target = mask(line)
        try:
            pos = printed_masked.index(target, pos) + 1
        except ValueError:
            missing.append(line)
    return missing


def test_mask_keeps_words_and_drops_figures():
    assert mask("│ step time  │ 28.8 µs median, IQR 15.3 µs   │") == mask("│ step time │ 1.2 ms median, IQR 880 µs │")
    assert mask("│    0 │  5,901 │     22 │") == mask("│ 0 │ 12 │ 7 │")
    assert mask("Epoch [100/1000], Loss: 0.0076, mse: 0.0075") != mask("Epoch [100/1000], Loss: 0.0076")
    assert mask("│ source_updates │ 699 │") != mask("│ updates before the source's last forward pass │ 699 │")
    assert missing_lines(["a 1", "b 2"], ["b 3", "a 4"]) == ["b 2"]      # order counts


OUTPUT_BLOCKS = [b for b in ALL_BLOCKS if b.marker.get("output-of")]


def shown_output(block: Block) -> list[str]:
    """The output lines of a marked block: no prompts, no elisions, no machine-specific lines."""
    words = [w.strip() for w in block.marker.get("machine-specific", "").split(",") if w.strip()]
    lines, skip = [], False
    for line in block.lines:
        if line.startswith("$ ") or skip:
            skip = line.endswith("\\")
            continue
        if line.strip() in ("", "...") or any(w in line for w in words):
            continue
        lines.append(line)
    return lines


def test_docs_have_checked_output():
    assert len(OUTPUT_BLOCKS) >= 4, "the docs lost their output-of markers"
    for b in OUTPUT_BLOCKS:
        assert shown_output(b), f"{b.where()}: an output-of marker over a block with no output"
        prompts = [line[2:].strip() for line in b.lines if line.startswith("$ ")]
        assert set(prompts) <= {b.marker["output-of"], b.marker.get("given")}, \
            f"{b.where()}: the block's command differs from its marker's"


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """Each command's output, run once, in-process, in a directory of its own."""
    cache: dict[str, list[str]] = {}
    runner = CliRunner()
    workdir = tmp_path_factory.mktemp("docs-commands")

    def run(command: str) -> list[str]:
        if command not in cache:
            words = shlex.split(command)
            args = bpbench_args(words)
            assert args is not None, f"not a bpbench command: {command}"
            env = dict(w.split("=", 1) for w in words[:len(words) - len(args)] if ASSIGNMENT.match(w))
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(workdir)
                r = runner.invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1", **env})
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                raise r.exception
            cache[command] = r.output.splitlines()
        return cache[command]
    return run


@pytest.mark.parametrize("block", OUTPUT_BLOCKS, ids=[f"{b.where()} {b.marker['output-of']}" for b in OUTPUT_BLOCKS])
def test_shown_output_is_what_the_command_prints(block, printed, quiet_machine):
    # (quiet_machine: the docs show a quiet machine's tables; a busy one's marks are tested apart)
    if block.marker.get("given"):
        printed(block.marker["given"])
    command = block.marker.get("checked-with") or block.marker["output-of"]
    missing = missing_lines(shown_output(block), printed(command))
    assert not missing, (f"{block.where()}: `{command}` no longer prints these lines (numbers aside):\n"
                         + "\n".join(missing))


def slugs(doc: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings (lower case, punctuation dropped,
    spaces to hyphens, -1, -2 ... for repeats)."""
    out: set[str] = set()
    in_fence = False
    for line in doc.read_text("utf-8").splitlines():
        in_fence ^= bool(FENCE.match(line))
        m = None if in_fence else re.match(r"^#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n, candidate = 0, slug
            while candidate in out:
                n += 1
                candidate = f"{slug}-{n}"
            out.add(candidate)
    return out


LINK = re.compile(r"\]\(([^)\s]*?)#([^)\s]+)\)")


def test_anchors_of_links_exist():
    """A link to a section names a heading of its file (files other pages add are checked once
    they exist)."""
    broken = []
    for doc in DOCS:
        for target, anchor in LINK.findall(doc.read_text("utf-8")):
            path = (doc.parent / target).resolve() if target else doc
            if path.suffix == ".md" and path.exists() and anchor not in slugs(path):
                broken.append(f"{doc.relative_to(REPO)}: {target}#{anchor}")
    assert not broken, "links to sections that do not exist:\n" + "\n".join(broken)


def test_slugs_follow_github():
    doc = REPO / "docs" / "measuring.md"
    assert {"where-the-time-goes---profile-ops", "the-limit-the-measured-peak"} <= slugs(doc)
