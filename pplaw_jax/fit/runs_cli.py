"""``pplaw runs``: collect finished CPT runs into the runs table `pplaw fit` reads.

    pplaw runs --out runs.csv --metric domain_loss [--include PREV.csv] [--round R]
               [--manifest SELDIR --runs-dir RUNS] [--run GROUP=RUN_DIR ...]

Rows, in order: those of ``--include`` (an earlier table, e.g. the previous round's), then one per
subset of ``SELDIR/manifest.csv`` (its run in ``RUNS/<name>/``, group from the manifest), then one
per ``--run`` (its own group). Each row comes from the run's ``eval.json`` (`runs_table.run_row`).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="runs table to write (CSV)")
    parser.add_argument(
        "--metric",
        choices=("domain_loss", "target_loss"),
        default="domain_loss",
        help="the eval.json figure that becomes the law's loss",
    )
    parser.add_argument("--include", default=None, help="an earlier runs table whose rows come first")
    parser.add_argument("--round", type=int, default=0, help="the round number recorded in new rows")
    parser.add_argument(
        "--manifest", default=None, help="a selection directory with manifest.csv (select design/windows, propose)"
    )
    parser.add_argument("--runs-dir", default=None, help="where the manifest's runs are (RUNS/<name>/eval.json)")
    parser.add_argument(
        "--run", action="append", default=[], metavar="GROUP=RUN_DIR", help="one more run, its own group; repeatable"
    )


def run(args: argparse.Namespace) -> int:
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
