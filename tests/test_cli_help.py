"""Every `pplaw ... --help` reads like a command's help, not the parser's internals: metavars
instead of `None` / type names, the choices of an enum, each default once, an example, and
`python -m pplaw_jax` works."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from pplaw_jax.cli import COMMANDS, build_parser, main

INTERNALS = ("None", "typing.", "Literal[", "['cfg']", "<function", "[int]", "[float]", "[str]")
TYPE_METAVAR = re.compile(r"-[\w-]+ \[?(int|float|str|bool|list)\b")  # --seq-len int, --plots bool


def every_command() -> list[tuple[str, ...]]:
    """Each subcommand and each mode below it (`data cut`, `select design`, ...)."""
    out: list[tuple[str, ...]] = [()]
    for name in COMMANDS:
        out.append((name,))
        parser, _ = build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                out += [(name, mode) for mode in action.choices]
    return out


@pytest.mark.parametrize("command", every_command(), ids=lambda c: " ".join(c) or "pplaw")
def test_help_shows_no_parser_internals(command, capsys):
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    for internal in INTERNALS:
        assert internal not in text, f"{internal!r} in `pplaw {' '.join(command)} --help`:\n{text}"
    assert not TYPE_METAVAR.search(text), TYPE_METAVAR.search(text).group()
    for line in text.replace("\n                        ", " ").splitlines():
        assert line.count("(default") <= 1, line
    assert re.search(r"^examples?:\n  pplaw ", text, re.M), "no example"


def test_a_bad_choice_names_the_choices(capsys):
    assert main(["fit", "--runs", "r.csv", "--out", "o", "--moments", "nll"]) == 2
    err = capsys.readouterr().err
    assert "argument --moments: invalid choice: 'nll' (choose from 'ppl', 'logppl')" in err and "typing" not in err


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "pplaw_jax", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("pplaw ")


def test_a_command_without_its_own_summary_prints_one_json_line(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text('{"id": "a", "text": "some words here"}\n')
    assert main(["data", "cut", "--data", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "cut.jsonl")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == {"command": "data cut", "out": str(tmp_path / "cut.jsonl")}
