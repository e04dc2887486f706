"""The README's *Command line* block names every command the parser has, and no other; and
`--version` says the version the package is built as."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from app.cli import build_parser
from app.main import main

ROOT = Path(__file__).resolve().parents[2]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ]  # argparse keeps its subcommands there
    return dict(actions[0].choices) if actions else {}


def parser_commands() -> set[str]:
    commands = set()
    for name, sub in _subcommands(build_parser()).items():
        children = _subcommands(sub)
        commands |= {f"{name} {child}" for child in children} if children else {name}
    return commands


def readme_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Command line", 1)[1].split("```", 2)[1]


def readme_commands() -> set[str]:
    """`registry-auth NAME [CHILD|CHILD ...] ARGS` lines; a child is a lowercase word starting
    one of the |-separated parts."""
    commands = set()
    for line in readme_block().splitlines():
        words = line.split(maxsplit=2)
        if len(words) < 2 or words[0] != "registry-auth" or words[1].startswith("-"):
            continue
        parts = [part.split() for part in (words[2] if len(words) > 2 else "").split("|")]
        children = [p[0] for p in parts if p and re.fullmatch(r"[a-z][a-z-]*", p[0])]
        name = words[1]
        commands |= {f"{name} {child}" for child in children} if children else {name}
    return commands


def test_the_readme_lists_every_command_and_only_those() -> None:
    assert readme_commands() == parser_commands()


def test_version_is_the_packaged_one(capsys: pytest.CaptureFixture[str]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert "registry-auth --version" in readme_block()
    assert capsys.readouterr().out == f"registry-auth {pyproject['project']['version']}\n"
