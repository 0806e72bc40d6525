"""``pplaw fit``: fit the perplexity-aware scaling law (or another law of `forms.LAWS`) to runs.csv.

Writes FITDIR/fit.json (last, so its presence means complete), FITDIR/posterior.nc (ArviZ
InferenceData, with a Bayesian fit) and FITDIR/*.png.  Exit 0 on success, 2 on bad input, 1 when
the Bayesian fit does not converge (unless --allow-unconverged).
"""

from __future__ import annotations

import argparse
import sys

from pplaw_jax.errors import PplawError
from pplaw_jax.law.bayes import Priors, SamplerConfig
from pplaw_jax.law.fitdir import FitOptions, NotConverged, fit_to_dir
from pplaw_jax.law.forms import LAWS
from pplaw_jax.law.support import DEFAULT_MARGIN
from pplaw_jax.moments import MOMENTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SamplerConfig()
    p = parser
    p.add_argument("--runs", required=True, help="CSV with columns mu_<kind>, sigma_<kind>, tokens, loss "
                                                 "(optional run_id, group)")
    p.add_argument("--out", required=True, help="fit directory to write")
    p.add_argument("--law", choices=sorted(LAWS), default="ppl", help="law form (default: ppl)")
    p.add_argument("--moments", choices=MOMENTS, default="ppl",
                   help="mu and sigma of the runs: ppl = chunk-perplexity mean/std (the paper's), "
                        "logppl = chunk mean-NLL mean/std (columns mu_<kind>, sigma_<kind> of runs.csv)")
    p.add_argument("--method", choices=("point", "bayes", "both"), default="both",
                   help="point: Huber fit + bootstrap; bayes: NUTS started at the point fit; both (default)")
    p.add_argument("--chains", type=int, default=d.chains, help=f"NUTS chains (default {d.chains})")
    p.add_argument("--warmup", type=int, default=d.warmup, help=f"NUTS warmup steps per chain (default {d.warmup})")
    p.add_argument("--samples", type=int, default=d.samples, help=f"NUTS samples per chain (default {d.samples})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--likelihood", choices=("normal", "student"), default="normal",
                   help="observation model on log-loss (student: robust to outlier runs)")
    p.add_argument("--student-df", type=float, default=d.student_df, help="Student-t degrees of freedom")
    p.add_argument("--target-accept", type=float, default=d.target_accept, help="NUTS target acceptance")
    p.add_argument("--prior", action="append", default=[], metavar="NAME=VALUE",
                   help="override a prior constant (log_E_loc, log_E_scale, intercept_loc, intercept_scale, "
                        "coef_scale, interaction_scale, noise_scale); repeatable")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits for point intervals (default 200)")
    p.add_argument("--starts", type=int, default=16, help="random starts added to the OLS grid starts (default 16)")
    p.add_argument("--folds", type=int, default=0,
                   help="held-out comparison: 0 (default) leaves one run group out at a time; k >= 2: k folds "
                        "of run groups")
    p.add_argument("--trust-margin", type=float, default=DEFAULT_MARGIN,
                   help="the supported region is the runs' convex hull in (log mu, log sigma), each "
                        "scaled by the runs' range, widened by this distance (default "
                        f"{DEFAULT_MARGIN:g}); the optimum is searched inside it")
    p.add_argument("--tokens-ref", type=float, help="D at which the surface and optimum loss are shown "
                                                     "(default: median tokens of the runs)")
    p.add_argument("--level", type=float, default=0.9, help="credible level of intervals/regions (default 0.9)")
    p.add_argument("--max-rhat", type=float, default=d.max_rhat, help=f"convergence: max r_hat (default {d.max_rhat})")
    p.add_argument("--min-ess", type=float, default=d.min_ess_per_chain,
                   help=f"convergence: min bulk ESS per chain (default {d.min_ess_per_chain:g})")
    p.add_argument("--max-divergences", type=int, default=d.max_divergences,
                   help=f"convergence: max divergent transitions (default {d.max_divergences})")
    p.add_argument("--allow-unconverged", action="store_true", help="keep a Bayesian fit that fails the checks")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the rival laws' validation (e.g. the intermediate fits of a sequential design)")


def options_from_args(args) -> FitOptions:
    for flag, value, ok in (
        ("--chains", args.chains, args.chains >= 2),
        ("--warmup", args.warmup, args.warmup >= 1),
        ("--samples", args.samples, args.samples >= 4),
        ("--bootstrap", args.bootstrap, args.bootstrap >= 0),
        ("--starts", args.starts, args.starts >= 0),
        ("--folds", args.folds, args.folds == 0 or args.folds >= 2),
        ("--level", args.level, 0 < args.level < 1),
        ("--target-accept", args.target_accept, 0 < args.target_accept < 1),
        ("--student-df", args.student_df, args.student_df > 0),
        ("--trust-margin", args.trust_margin, args.trust_margin >= 0),
    ):
        if not ok:
            raise PplawError(f"{flag} {value}: out of range (see pplaw fit --help)")
    sampler = SamplerConfig(
        chains=args.chains, warmup=args.warmup, samples=args.samples, seed=args.seed,
        likelihood=args.likelihood, student_df=args.student_df, target_accept=args.target_accept,
        max_rhat=args.max_rhat, min_ess_per_chain=args.min_ess, max_divergences=args.max_divergences,
    )
    return FitOptions(
        law=args.law, moments=args.moments, method=args.method, bootstrap=args.bootstrap, n_random=args.starts, folds=args.folds,
        seed=args.seed, priors=Priors.from_overrides(args.prior), sampler=sampler,
        trust_margin=args.trust_margin,
        tokens_ref=args.tokens_ref, level=args.level, plots=not args.no_plots, compare=not args.no_compare,
        allow_unconverged=args.allow_unconverged,
    )


def run(args) -> int:
    opts = options_from_args(args)
    try:
        fit_to_dir(args.runs, args.out, opts)
    except NotConverged as e:
        print(f"pplaw fit: {e}", file=sys.stderr)
        return 1
    return 0
