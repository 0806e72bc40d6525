"""Each subcommand's inputs are one dataclass (`pplaw_jax.commands`) shared by its parser and by
`pplaw run`: an instance turned into a command line (`argv`) parses back into the same instance,
for every command, with every argument given a value other than its default."""

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from pplaw_jax import commands as C
from pplaw_jax.cli import INPUTS, build_parser


def _example(cls: type[C.Command]) -> C.Command:
    """`cls` with a non-default value in every argument (one member of each exclusive group)."""
    hints = typing.get_type_hints(cls)
    values, groups = {}, set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("settings"):
            continue
        meta, hint = f.metadata, str(hints[f.name])
        if meta["exclusive"]:
            if meta["exclusive"] in groups:
                continue
            groups.add(meta["exclusive"])
        choices = meta["argparse"].get("choices")
        if choices:
            value = [choices[-1]] if hint.startswith("list") else choices[-1]
        elif "list[float]" in hint:
            value = [1.5, 2.25]
        elif "list[str]" in hint:
            value = ["a.b=1", "c=d"]
        elif "int" in hint:
            value = 7
        elif "float" in hint:
            value = 0.25
        else:
            value = f"value-of-{f.name}"
        assert value != f.default, f.name
        values[f.name] = value
    return cls(**values)


@pytest.mark.parametrize("name", sorted(C.COMMAND_CLASSES))
def test_a_command_line_parses_back_into_its_command(name):
    cls = C.COMMAND_CLASSES[name]
    cmd = _example(cls)
    words = C.argv(cmd)
    assert all(isinstance(w, str) for w in words)
    parser, _ = build_parser(words)
    args = parser.parse_args(words)
    assert C.command_class(args) is cls
    assert C.from_namespace(cls, args) == cmd


def test_defaults_parse_back_too():
    """A command with only its required arguments: the defaults `argv` writes are the parser's."""
    cmd = C.TrainCommand(model="m", data="d", out="o")
    args = build_parser(C.argv(cmd))[0].parse_args(C.argv(cmd))
    assert C.from_namespace(C.TrainCommand, args) == cmd


def test_inputs_are_declared_on_the_commands():
    assert INPUTS["train"] == (
        "model",
        "tokenizer",
        "data",
        "selection",
        "eval_data",
        "general_eval_data",
        "target_eval_data",
    )
    assert "run" not in INPUTS and "data cpython-docs" not in INPUTS  # nothing an --out could overwrite


def test_the_pipeline_types_no_flag():
    """`pplaw run` builds command objects: no ``--flag`` string literal in pipeline.py."""
    source = Path(C.__file__).with_name("pipeline.py").read_text()
    literals = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)]
    assert not [s for s in literals if isinstance(s, str) and s.startswith("--")]
