"""The documentation and the tool must not drift apart, and the documentation reads as a manual.

- The README's Quickstart is exactly two commands, and `.ci/run` runs the second verbatim.
- Every option docs/commands.md lists for a command exists in that command's --help,
  and every option of --help is in docs/commands.md.
- Every command's --help ends with an Examples block whose lines fit an 80-column terminal.
- The README is a landing page (at most 250 lines); README, docs/ and CHANGELOG hold no clock
  times, no development sessions and no paths outside the repository.
"""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlm.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS_MD = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]   # every command has a section
MANUAL = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def quickstart_commands():
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    section = section.split("(`.ci/run`", 1)[0]
    return [c.strip() for c in re.findall(r"```\n(.+?)\n\s*```", section, flags=re.S)]


def test_quickstart_is_two_commands_and_ci_runs_the_second_verbatim():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()
    assert "corpora/" in commands[0] and "charlm sample" in commands[0]


def reference_section(command):
    """The `### `charlm COMMAND ...` section of docs/commands.md, up to the next heading of level 2 or 3."""
    start = COMMANDS_MD.index(f"### `charlm {command}")
    ends = [i for i in (COMMANDS_MD.find("\n### ", start + 1), COMMANDS_MD.find("\n## ", start + 1)) if i != -1]
    return COMMANDS_MD[start:min(ends) if ends else None]


def help_text(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"},
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def help_options(text):
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", text)) - {"--help", "--no-stop-at-eos", "--no-echo-prime"}


def test_every_command_has_one_reference_section():
    for command in COMMANDS:
        assert COMMANDS_MD.count(f"### `charlm {command}") == 1, command


@pytest.mark.parametrize("command", COMMANDS)
def test_reference_options_exist_in_help(command):
    text = help_text(command)
    section = reference_section(command)
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*)", section))
    documented |= set(re.findall(r"\[(--[a-z][a-z0-9-]*)", section.split("\n", 1)[0]))
    missing = {o for o in documented if o not in text}
    assert not missing, f"docs/commands.md documents options that `charlm {command} --help` lacks: {missing}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_options_are_documented_in_the_reference(command):
    section = reference_section(command)
    undocumented = {o for o in help_options(help_text(command)) if o not in section}
    assert not undocumented, f"`charlm {command} --help` options missing from docs/commands.md: {undocumented}"


def test_the_option_checks_can_fail():
    """Negative control: a section with an option --help lacks, and --help with one the section lacks."""
    section = "### `charlm sample [--no-such-option]`\n\n| `--also-missing` | | |\n"
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*)", section))
    documented |= set(re.findall(r"\[(--[a-z][a-z0-9-]*)", section.split("\n", 1)[0]))
    assert documented - set(help_options(help_text("sample"))) == {"--no-such-option", "--also-missing"}
    assert {o for o in help_options(help_text("sample")) if o not in section} >= {"--temperature", "--num"}


@pytest.mark.parametrize("command", COMMANDS + [None])
def test_help_ends_with_examples(command):
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"}, terminal_width=200)
    assert result.exit_code == 0
    tail = result.output[result.output.rindex("Examples"):]
    assert "charlm " in tail


@pytest.mark.parametrize("command", COMMANDS)
def test_help_examples_fit_an_80_column_terminal(command):
    """An example that wraps reads as two commands (its comment used to land on a line of its own)."""
    [c] = [c for c in app.registered_commands if (c.name or c.callback.__name__) == command]
    examples = c.epilog.split("```")[1].strip("\n").splitlines()
    assert examples and all(len(line) <= 76 for line in examples), [line for line in examples if len(line) > 76]


def test_readme_is_a_landing_page():
    assert len(README.splitlines()) <= 250
    for page in ("commands", "training", "model", "checkpoint", "performance", "experiments"):
        assert f"(docs/{page}.md" in README, page
        assert (ROOT / "docs" / f"{page}.md").is_file(), page


CLOCK_TIME = re.compile(r"\b([01]?\d|2[0-3]):[0-5]\d\b")
SESSION = re.compile(r"\b[Ss]ession \d+")
OUTSIDE_PATH = re.compile(r"(?<![\w/.])(\.\./)?shared/|kn_char\.py")


def manual_faults(text):
    """The lines of a user document that read as a diary: clock times, sessions, paths outside the repository."""
    return [line for line in text.splitlines()
            if CLOCK_TIME.search(line) or SESSION.search(line) or OUTSIDE_PATH.search(line)]


def test_the_diary_checks_can_fail():
    assert manual_faults("measured at 12:04 UTC\nin session 2\nsee ../shared/peers\nkn_char.py\nshared/data")\
        == ["measured at 12:04 UTC", "in session 2", "see ../shared/peers", "kn_char.py", "shared/data"]
    assert manual_faults("ratio 1.27× at batch 32×64\n`charlm/bench/peers/`\nΣ_{t=1}^{n+1}") == []


@pytest.mark.parametrize("path", MANUAL, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_user_documents_are_a_manual_not_a_diary(path):
    assert path.is_file()
    assert manual_faults(path.read_text(encoding="utf-8")) == []
