"""Every option of every command has help text."""

from __future__ import annotations

import argparse

from agent.cli import build_parser


def _parsers(p: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(p.prog, p)]
    for a in p._actions:  # argparse offers no public way to walk subcommands
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                out += _parsers(sub)
    return out


def test_every_option_has_help() -> None:
    missing = [
        f"{prog} {'/'.join(a.option_strings)}"
        for prog, p in _parsers(build_parser())
        for a in p._actions
        if a.option_strings and (not a.help or a.help == argparse.SUPPRESS)
    ]
    assert not missing, missing


def test_every_command_has_help() -> None:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices)
    assert all(helps.values()), helps
