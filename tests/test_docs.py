"""Every command is documented in README.md, and README opens with the two commands."""

from __future__ import annotations

import re
from pathlib import Path

import click

from shared.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group: click.Group, ctx: click.Context, prefix: str = "deepmem"):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, ctx, f"{prefix} {name}")


def test_every_command_is_in_the_readme_and_has_help():
    ctx = click.Context(cli)
    names = list(_commands(cli, ctx))
    assert len(names) >= 8
    for name, command in names:
        top = " ".join(name.split()[:2])
        assert top in README, f"{top} is not documented in README.md"
        assert command.help, f"{name} has no help text"


def test_readme_starts_with_the_demo_and_test_commands():
    first_block = re.search(r"^    (.+)\n    (.+)\n", README, re.M)
    assert first_block.group(1).startswith("make demo") and first_block.group(2).startswith("make test")
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci
