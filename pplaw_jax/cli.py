"""`pplaw` command-line entry point: one subcommand per pipeline stage.

Each stage module exposes `add_arguments(parser)` and `run(args) -> int`; they are imported lazily
so that `pplaw fit --help` does not pay for loading the model code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import check_output_path, output_lock

# subcommand -> (module, one-line help)
COMMANDS = {
    "score": ("pplaw_jax.landscape.cli", "score every chunk of a corpus with a frozen model"),
    "fit": ("pplaw_jax.law.cli", "fit the perplexity-aware (or data-only) scaling law to runs.csv"),
    "predict": ("pplaw_jax.law.predict_cli", "predict loss at (mu, sigma, tokens) from a fit"),
    "select": ("pplaw_jax.select.cli", "choose a training subset of a landscape under a token budget"),
    "propose": ("pplaw_jax.select.propose_cli", "propose the next law-fitting runs from a fit (sequential design)"),
    "train": ("pplaw_jax.train.cli", "continual pre-training on a selection, with evaluation"),
    "eval": ("pplaw_jax.train.eval_cli", "multiple-choice downstream evaluation"),
    "run": ("pplaw_jax.pipeline", "run the whole study from a YAML config"),
}

FILE_OUTPUTS = {"eval", "predict"}  # subcommands whose --out is a file, not a directory
# Subcommands that lock their --out directory themselves, per host, once jax.distributed is up
# (`fileio.output_lock`); `run` locks its study directory. The others are locked here.
SELF_LOCKING = {"score", "train", "run"}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = argparse.ArgumentParser(prog="pplaw", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (mod_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            module = importlib.import_module(mod_name)
            module.add_arguments(p)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    if module is None:
        parser.print_help()
        return 2
    try:
        out = getattr(args, "out", None)
        if out is not None:  # an output that cannot be written fails first
            check_output_path(out, "file" if args.command in FILE_OUTPUTS else "dir")
        if out is None or args.command in FILE_OUTPUTS | SELF_LOCKING:
            return int(module.run(args) or 0)
        with output_lock(out):  # one writer per output directory
            return int(module.run(args) or 0)
    except PplawError as e:
        print(f"pplaw {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
