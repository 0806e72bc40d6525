"""pplaw: choose continual pre-training data with a perplexity-aware data scaling law.

The command-line entry point, one subcommand per pipeline stage. Each stage module exposes
`add_arguments(parser)` and `run(args) -> int` (and may expose `reorder_argv(argv)`, applied
before parsing); they are imported lazily so that `pplaw fit --help` does not pay for loading the
model code (no subcommand's `--help` imports JAX).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
import types

from pplaw_jax import __version__, logs
from pplaw_jax.commands import COMMAND_CLASSES, command_class, from_namespace, inputs
from pplaw_jax.config import check_settings, parser_options
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import check_not_over_inputs, check_output_path, discard_temporaries, output_lock

# subcommand -> (module, one-line help, example)
COMMANDS = {
    "data": (
        "pplaw_jax.data.cli",
        "build corpus files: cpython-docs, cut, cloze, contaminate",
        "pplaw data cpython-docs --out data   (also: pplaw data cut ..., pplaw data cloze ...)",
    ),
    "scratch": (
        "pplaw_jax.train.scratch_cli",
        "a tokenizer and config for a model trained from scratch",
        "pplaw scratch --data data/general_train.jsonl --vocab-size 2048 --out base hidden_size=128",
    ),
    "score": (
        "pplaw_jax.landscape.cli",
        "score every chunk of a corpus with a frozen model",
        "pplaw score --model smollm2-135m-instruct --data corpus/train.jsonl --out land --seq-len 512",
    ),
    "landscape": (
        "pplaw_jax.landscape.export",
        "a landscape as per-document columns of its corpus",
        "pplaw landscape export --landscape land --data corpus/train.jsonl.gz --out land_export",
    ),
    "runs": (
        "pplaw_jax.fit.runs_cli",
        "collect finished CPT runs into the runs table",
        "pplaw runs --manifest grid/selections --runs-dir grid/runs --out grid/runs.csv",
    ),
    "fit": (
        "pplaw_jax.fit.cli",
        "fit the perplexity-aware (or data-only) scaling law to runs.csv",
        "pplaw fit --runs grid/runs.csv --out fit --moments logppl",
    ),
    "predict": (
        "pplaw_jax.fit.predict_cli",
        "predict loss at (mu, sigma, tokens) from a fit",
        "pplaw predict --fit fit --mu 3.1 --sigma 0.6 --tokens 1e6",
    ),
    "select": (
        "pplaw_jax.select.cli",
        "choose a training subset of a landscape under a token budget",
        "pplaw select --landscape land --fit fit --tokens 1e6 --out sel   "
        "(also: pplaw select design ..., pplaw select windows ...)",
    ),
    "propose": (
        "pplaw_jax.select.propose_cli",
        "propose the next law-fitting runs from a fit (sequential design)",
        "pplaw propose --fit fit --landscape land --n 3 --tokens 1e5 --out round1",
    ),
    "train": (
        "pplaw_jax.train.cli",
        "continual pre-training on a selection, with evaluation",
        "pplaw train --model base/hf --data corpus/train.jsonl --selection sel --tokens 1e6 --out run",
    ),
    "eval": (
        "pplaw_jax.train.eval_cli",
        "multiple-choice downstream evaluation",
        "pplaw eval --model run/hf --tasks tasks.jsonl --out eval.json",
    ),
    "report": (
        "pplaw_jax.report",
        "write report.md (tables, figures, verdicts with intervals) of a study",
        "pplaw report runs/quickstart",
    ),
    "run": (
        "pplaw_jax.run_cli",
        "run the whole study from a YAML config",
        "pplaw run experiments/configs/quickstart.yaml out_dir=runs/qs final.seeds=[0,1]",
    ),
}

EXAMPLES = """examples:
  pplaw run experiments/configs/quickstart.yaml out_dir=runs/quickstart   # a whole study, on CPU
  pplaw score --model HuggingFaceTB/SmolLM2-135M --data corpus.jsonl --out land   # one stage
  pplaw COMMAND --help                                                     # each command's flags"""

COMPILING = {"score", "train", "eval", "fit"}  # subcommands that compile with XLA
# subcommands that print their own JSON summary line on success; the others get {"command", "out"}
PRINTS_JSON = {
    "score",
    "landscape",
    "train",
    "eval",
    "predict",
    "select",
    "propose",
}
FILE_OUTPUTS = {name for name, cls in COMMAND_CLASSES.items() if cls.OUT_IS_FILE}  # --out is a file
# Subcommands that lock their --out directory themselves, per host, once jax.distributed is up
# (`fileio.output_lock`); `run` locks its study directory. The others are locked here.
SELF_LOCKING = {"score", "train", "run"}
# Each subcommand's inputs (argparse dests), which its --out may not be, be inside or contain
# (`fileio.check_not_over_inputs`)
INPUTS = {name: inputs(cls) for name, cls in COMMAND_CLASSES.items() if inputs(cls)}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, types.ModuleType | None]:
    options = parser_options()
    parser = options.pop("parser_class")(prog="pplaw", description=__doc__.splitlines()[0], epilog=EXAMPLES, **options)
    parser.add_argument("--version", action="version", version=f"pplaw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (mod_name, help_text, example) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}", **options)
        if name == wanted:
            module = importlib.import_module(mod_name)
            module.add_arguments(p)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # pplaw runs its models in JAX: transformers' "PyTorch was not found" advice is noise here
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    parser, module = build_parser(argv)
    # `pplaw run CFG --until X key=v`: overrides may follow the flags
    if module is not None and hasattr(module, "reorder_argv"):
        argv = module.reorder_argv(argv)
    try:
        args = parser.parse_args(argv)
        check_settings(args)  # ranges of the stage's config (argparse checked types and enums)
    except SystemExit as e:  # argparse printed the help, or usage and its one error line
        return int(e.code or 0)
    except PplawError as e:  # an argument type that checks its value (e.g. --tokens 2.5)
        print(f"pplaw {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    if module is None:
        parser.print_help()
        return 2
    logs.setup()
    if args.command in COMPILING:
        import jax

        from pplaw_jax.distributed import configure_compilation_cache
        from pplaw_jax.paths import cache_root

        # run alone: $PPLAW_COMPILATION_CACHE, else one per user (the next `pplaw fit` of a runs
        # table of the same size loads its NUTS program instead of compiling it); run by `pplaw
        # run`, the study's own, which it configured before its first command
        if jax.config.values.get("jax_compilation_cache_dir") is None:
            configure_compilation_cache(cache_root() / "jax")
    cmd = from_namespace(command_class(args), args)  # the subcommand's typed inputs
    try:
        out = getattr(args, "out", None)
        file_out = args.command in FILE_OUTPUTS or f"{args.command} {getattr(args, 'mode', '')}" in FILE_OUTPUTS
        if out is not None:  # an output that cannot be written, or would be written over an input, fails first
            check_output_path(out, "file" if file_out else "dir")
            command = f"{args.command} {args.mode}" if getattr(args, "mode", None) else args.command
            check_not_over_inputs(
                out, "--out", {f"--{d.replace('_', '-')}": getattr(args, d, None) for d in INPUTS.get(command, ())}
            )
        if out is None or file_out or args.command in SELF_LOCKING:
            code = int(module.run(cmd) or 0)
        else:
            with output_lock(out):  # one writer per output directory
                discard_temporaries(out)  # what a killed writer of this directory left behind
                code = int(module.run(cmd) or 0)
        if code == 0 and out is not None and not file_out:
            _record_command(out, argv, args)
        if code == 0 and args.command not in PRINTS_JSON:
            name = " ".join(filter(None, (args.command, getattr(args, "mode", None))))
            print(json.dumps({"command": name, "out": str(out or getattr(args, "study", None) or _study_dir(args))}))
        return code
    except PplawError as e:
        print(f"pplaw {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # SIGINT: one line, the shell's code, and everything written so far resumable
        print(f"pplaw {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(
            f"pplaw {args.command}: error: no space left on the device writing {e.filename or 'the output'}; "
            "free space and run the same command again to resume",
            file=sys.stderr,
        )
        return 2


def _study_dir(args) -> str:
    """`pplaw run`'s study directory (its config's out_dir)."""
    from pplaw_jax.config import load_config

    return load_config(args.config, args.overrides).out_dir


COMMAND_JSON = "command.json"  # in every output directory: the command that completed it


def _record_command(out: str, argv: list[str], args) -> None:
    """Write ``OUT/command.json``: the command line and the resolved settings it ran with (every
    field of its config, defaults included), so an output directory says what produced it. On a
    multi-host run only process 0 writes it."""
    import dataclasses

    if "jax" in sys.modules and sys.modules["jax"].process_index() != 0:
        return
    from pplaw_jax.fileio import write_json
    from pplaw_jax.paths import as_path

    settings = {
        k: dataclasses.asdict(v)
        for k, v in vars(args).items()
        if dataclasses.is_dataclass(v) and not isinstance(v, type)
    }
    mode = getattr(args, "mode", None)
    if mode in settings:  # `select design`: its own settings, not those of the parent `select`
        settings = {mode: settings[mode]}
    if as_path(out).is_dir():
        write_json(as_path(out) / COMMAND_JSON, {"pplaw": __version__, "argv": ["pplaw", *argv], "settings": settings})


if __name__ == "__main__":
    sys.exit(main())
