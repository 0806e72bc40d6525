"""`pplaw run CONFIG.yaml [key=value ...] [--until STAGE] [--force STAGE]`: the command line of
`pplaw_jax.pipeline.Study` (the stages, what each runs and how a rerun reuses them are described
there)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pplaw_jax.commands import RunCommand, add_command
from pplaw_jax.config import load_config
from pplaw_jax.fileio import output_lock
from pplaw_jax.paths import cache_root, is_url, url_key
from pplaw_jax.pipeline import COMPILATION_CACHE, Study

RUN_FLAGS_WITH_VALUE = ("--until", "--force")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, RunCommand)


def reorder_argv(argv: list[str]) -> list[str]:
    """``run CFG [flags and KEY=VALUE overrides in any order]`` with the positionals (the config
    and the overrides) first, so argparse reads overrides that follow a flag (``--until fit
    fit.law=ppl``) as overrides."""
    positionals, flags, rest = [], [], iter(argv[1:])
    for word in rest:
        if word in RUN_FLAGS_WITH_VALUE:
            flags += [word, next(rest, "")]
        elif word.startswith("-"):
            flags.append(word)
        else:
            positionals.append(word)
    return [argv[0], *positionals, *flags]


def run(args: RunCommand) -> int:
    cfg = load_config(args.config, args.overrides)
    with output_lock(cfg.out_dir):  # one study process per out_dir
        from pplaw_jax.distributed import configure_compilation_cache

        # every stage runs in this process: one cache, kept with the study, so a rerun reuses it too
        # (a study on an object store keeps it in the local cache: JAX writes it as local files)
        configure_compilation_cache(
            cache_root() / "jax" / url_key(cfg.out_dir)
            if is_url(cfg.out_dir)
            else Path(cfg.out_dir).resolve() / COMPILATION_CACHE
        )
        Study(cfg, force=set(args.force)).run(stop_after=args.until)
    return 0
