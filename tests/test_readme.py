"""The README and the tool must not drift apart.

- The Quickstart is exactly two commands, and `.ci/run` runs the second verbatim.
- Every option the README's command reference lists exists in that command's --help,
  and every option of --help is in the README.
- Every command's --help ends with an Examples block.
"""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlm.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]   # every command has a README section


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


def readme_section(command):
    start = README.index(f"### `charlm {command}")
    end = README.find("\n### ", start + 1)
    return README[start:end if end != -1 else None]


def help_text(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"},
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def help_options(text):
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", text)) - {"--help", "--no-stop-at-eos", "--no-echo-prime"}


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_options_exist_in_help(command):
    text = help_text(command)
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*)", readme_section(command)))
    documented |= set(re.findall(r"\[(--[a-z][a-z0-9-]*)", readme_section(command).split("\n", 1)[0]))
    missing = {o for o in documented if o not in text}
    assert not missing, f"README documents options that `charlm {command} --help` lacks: {missing}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_options_are_documented_in_readme(command):
    section = readme_section(command)
    undocumented = {o for o in help_options(help_text(command)) if o not in section}
    assert not undocumented, f"`charlm {command} --help` options missing from the README: {undocumented}"


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
