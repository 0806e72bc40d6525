"""How every `pplaw` parser reads and prints its flags.

simple-parsing builds the flags of the settings dataclasses (`config.add_settings`); argparse's
help would show its internals (``--model None``, ``--moments [Literal]``, ``--plots bool``,
``ScoreConfig ['cfg']:``). `Parser` turns a ``Literal`` field into argparse choices (so a bad value
reads "invalid choice: 'x' (choose from 'ppl', 'logppl')"), and `HelpFormatter` prints a metavar
per kind of value (``N`` for counts, ``TOKENS`` for budgets, the choices ``{ppl,logppl}``, else
the flag's name), switches as ``--plots, --no-plots``, each default once, and the settings group
as "settings".
"""

from __future__ import annotations

import argparse
import re
import typing

from simple_parsing import ArgumentParser
from simple_parsing.help_formatter import TEMPORARY_TOKEN
from simple_parsing.helpers.custom_actions import BooleanOptionalAction

METAVARS = {int: "N", "parse_budget": "TOKENS"}  # by type (or the parsing function's name)
SETTINGS_GROUP = re.compile(r"^\w+ \[.*\]$")  # simple-parsing's group title: "ScoreConfig ['cfg']"


class Parser(ArgumentParser):
    """simple-parsing's parser, with ``Literal`` types as plain string choices."""

    def _preprocessing(self, *args, **kwargs) -> None:
        super()._preprocessing(*args, **kwargs)
        literals = {f.dest: _literal_values(f.type) for w in self._wrappers for f in w.fields}
        for action in self._actions:
            if literals.get(action.dest):
                action.choices = literals[action.dest]
                action.type = str
                action.metavar = None
            if action.metavar in ("[int]", "[float]", "[str]", "list", "bool", "[Literal]"):
                action.metavar = None  # simple-parsing's type names: the formatter names them
            if isinstance(action, BooleanOptionalAction):
                action.help = (action.help or "").removesuffix(" (default: %(default)s)")
            elif action.nargs == "?" and action.option_strings:
                action.nargs = None  # an Optional setting still takes one value when given

    def format_help(self) -> str:
        self._preprocessing()  # the settings' flags exist only once simple-parsing has added them
        return super().format_help()

    def format_usage(self) -> str:
        self._preprocessing()
        return super().format_usage()


def _literal_values(annotation) -> list[str] | None:
    """The values of a ``Literal[...]`` or ``Optional[Literal[...]]`` annotation; None otherwise."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _literal_values(inner[0]) if typing.get_origin(annotation) is typing.Union and len(inner) == 1 else None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Metavars that say what a value is, switches without one, each default shown once."""

    def _metavar_for(self, action: argparse.Action) -> str:
        name = getattr(action.type, "__name__", None)
        return METAVARS.get(action.type) or METAVARS.get(name) or action.dest.rpartition(".")[2].upper()

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return self._metavar_for(action)

    def _get_default_metavar_for_positional(self, action: argparse.Action) -> str:
        return self._metavar_for(action)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, BooleanOptionalAction):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)

    def _format_usage(self, usage, actions, groups, prefix) -> str:
        switches = [a for a in actions if isinstance(a, BooleanOptionalAction)]
        saved = [(a, a.nargs) for a in switches]
        for a in switches:
            a.nargs = 0  # usage: [--plots] rather than [--plots [PLOTS]]
        try:
            return super()._format_usage(usage, actions, groups, prefix)
        finally:
            for a, nargs in saved:
                a.nargs = nargs

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace(TEMPORARY_TOKEN, "")
        default = action.default
        if (
            "default" in text.lower()
            or action.required
            or default in (None, argparse.SUPPRESS, [], ())
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        if isinstance(action, BooleanOptionalAction):
            shown = action.option_strings[0 if default else 1]
        else:
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"

    def start_section(self, heading) -> None:
        super().start_section("settings" if heading and SETTINGS_GROUP.match(heading) else heading)
