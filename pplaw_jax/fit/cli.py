"""``pplaw fit``: fit the perplexity-aware scaling law (or another law of
`pplaw_jax.law.forms.LAWS`) to runs.csv; the stage itself is `pplaw_jax.fit.stage.fit_to_dir`.

Writes FITDIR/fit.json (last, so its presence means complete), FITDIR/posterior.nc (ArviZ
InferenceData, with a Bayesian fit) and FITDIR/*.png.  Exit 0 on success, 2 on bad input, 1 when
the Bayesian fit does not converge (unless --allow-unconverged).  The settings are `FitConfig`.
"""

from __future__ import annotations

import argparse
import sys

from pplaw_jax.commands import FitCommand, add_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, FitCommand)


def run(args: FitCommand) -> int:
    from pplaw_jax.fit.stage import NotConverged, fit_to_dir
    from pplaw_jax.law.bayes import Priors

    if args.cfg.folds == 1:
        from pplaw_jax.errors import PplawError

        raise PplawError("--folds 1: use 0 (leave one group out) or k >= 2")
    Priors.from_overrides(args.cfg.prior)  # a bad --prior fails before any work
    try:
        fit_to_dir(args.runs, args.out, args.cfg, seed=args.seed)
    except NotConverged as e:
        print(f"pplaw fit: {e}", file=sys.stderr)
        return 1
    return 0
