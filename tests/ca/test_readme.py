"""The README's command summary is what `certwright` accepts: every command and
subcommand it lists exists and every flag it shows is one that command takes, so the
README cannot drift from the code (the brief: users and scripts rely on those names)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from certwright.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
WORD = re.compile(r"[a-z][a-z-]*")


def _command_lines() -> list[str]:
    text = README.read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        lines += [ln.strip() for ln in block.splitlines() if ln.strip().startswith("certwright ")]
    return lines


def _parse(line: str) -> tuple[list[str], list[str], list[str]]:
    """(command path, subcommand alternatives, flags) of one summary line."""
    tokens = line.split()[1:]
    path: list[str] = []
    for t in tokens:
        if not WORD.fullmatch(t):
            break
        path.append(t)
    subcommands: list[str] = []
    previous = ""
    for t in tokens[len(path):]:
        if "|" in t and not previous.lstrip("[").startswith("--"):
            subcommands += re.findall(r"(?:^|\|)([a-z][a-z-]*)(?=$|\||\s)", t)
        previous = t
    flags = re.findall(r"--[a-z][a-z0-9-]*", line)
    return path, subcommands, flags


def _help(args: list[str]) -> str:
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, (args, result.output)
    return result.output


def test_ok_the_readme_lists_commands() -> None:
    assert len(_command_lines()) >= 10


@pytest.mark.parametrize("line", _command_lines())
def test_ok_readme_command_exists_with_its_flags(line: str) -> None:
    path, subcommands, flags = _parse(line)
    assert path, line
    helps = [_help(path)] + [_help([*path, sub]) for sub in subcommands]
    text = "\n".join(helps)
    missing = [f for f in flags if f not in text]
    assert missing == [], (line, missing)


def test_fail_the_check_catches_a_flag_that_does_not_exist() -> None:
    path, _subcommands, flags = _parse("certwright crl --data DIR --no-such-flag")
    text = _help(path)
    assert [f for f in flags if f not in text] == ["--no-such-flag"]
