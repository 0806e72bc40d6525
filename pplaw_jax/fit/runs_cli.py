"""``pplaw runs``: collect finished CPT runs into the runs table `pplaw fit` reads.

    pplaw runs --out runs.csv --metric domain_loss [--include PREV.csv] [--round R]
               [--manifest SELDIR --runs-dir RUNS] [--run GROUP=RUN_DIR ...]

Rows, in order: those of ``--include`` (an earlier table, e.g. the previous round's), then one per
subset of ``SELDIR/manifest.csv`` (its run in ``RUNS/<name>/``, group from the manifest), then one
per ``--run`` (its own group). Each row comes from the run's ``eval.json`` (`runs_table.run_row`).
"""

from __future__ import annotations

import argparse

from pplaw_jax.commands import RunsCommand, add_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, RunsCommand)


def run(args: RunsCommand) -> int:
    from pplaw_jax.errors import PplawError
    from pplaw_jax.fit.runs_table import collect_runs, write_runs_table

    if (args.manifest is None) != (args.runs_dir is None):
        raise PplawError("give --manifest and --runs-dir together")
    extra = []
    for item in args.run:
        group, sep, path = item.partition("=")
        if not sep or not group or not path:
            raise PplawError(f"--run {item!r} is not of the form GROUP=RUN_DIR")
        extra.append((group, path))
    table = collect_runs(
        args.metric, args.round, include=args.include, manifest=args.manifest, runs_dir=args.runs_dir, extra=extra
    )
    if table.empty:
        raise PplawError("no runs to collect (give --include, --manifest or --run)")
    write_runs_table(args.out, table)
    return 0
