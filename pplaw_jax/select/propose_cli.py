"""``pplaw propose``: the next law-fitting CPT runs from a fit, and whether the optimum is located.

    pplaw propose --fit FITDIR --landscape DIR --n K --tokens BUDGET --out OUTDIR
                  [--acquisition thompson|uncertainty] [--trust-margin 0.25] [--selector tilted|bands]
                  [--prefix q] [--seed S] [--radius 0.25] [--stop-probability 0.9]

Writes the proposals like a design (`select.cli`): one subset per proposal (``OUTDIR/<name>/``,
realised by the selector the design used), ``OUTDIR/manifest.csv`` with the same columns, so the
same ``pplaw train`` -> ``runs.csv`` path consumes them, and last ``OUTDIR/propose.json`` with the
acquisition, the proposals' targets and the stopping rule (`propose.stopping`).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from pplaw_jax.commands import ProposeCommand, add_command
from pplaw_jax.config import ProposeConfig
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import write_json
from pplaw_jax.fit.fitdir import load_fit
from pplaw_jax.landscape.directory import read_landscape
from pplaw_jax.law import get_law
from pplaw_jax.paths import as_path
from pplaw_jax.select.cli import _manifest_row, _write_manifest, summary_record
from pplaw_jax.select.core import parse_budget
from pplaw_jax.select.dos import RankedLandscape
from pplaw_jax.select.io import write_selection
from pplaw_jax.select.propose import MERGE, propose, stopping
from pplaw_jax.select.selectors import select_target
from pplaw_jax.select.target import feasible_grid
from pplaw_jax.select.windows import format_budget


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, ProposeCommand)


def _noise(fit) -> tuple[float, str]:
    """The run-to-run noise sd of log-loss for the stopping rule: the replicates' pure error when
    there are replicates, else the posterior mean of the fit's noise, else its residual scale."""
    pe = ((fit.info.get("lack_of_fit") or {}).get("pure_error") or {}).get("sd_log_loss")
    if pe:
        return float(pe), "pure error of the replicated runs"
    noise = fit.noise_draws()
    if noise is not None:
        return float(np.mean(noise)), "posterior mean of the fit's noise (no replicated runs)"
    return float(fit.info["point"]["residual_scale_log"]), "point fit's residual scale (no replicated runs)"


def run(args: ProposeCommand) -> int:
    cfg: ProposeConfig = args.cfg
    budget = parse_budget(args.tokens)
    if not args.prefix.isidentifier():
        raise PplawError(f"--prefix {args.prefix!r}: letters, digits and _ only")
    selector = cfg.selector
    fit = load_fit(args.fit)
    draws, source = fit.posterior_draws(), "posterior"
    if draws is None:
        draws, source = fit.bootstrap_draws(), "bootstrap"
    if draws is None:
        raise PplawError(f"{args.fit}: neither a posterior nor bootstrap refits; refit with --bootstrap > 0")
    landscape = read_landscape(args.landscape)
    values = landscape.values(fit.moments)
    space = RankedLandscape(values, landscape.n_tokens, budget)
    noise_sd, noise_source = _noise(fit)
    if get_law(fit.law).uses_perplexity:
        proposals, _ = propose(
            space.region,
            fit.support(cfg.trust_margin),
            fit.law,
            draws,
            budget,
            cfg.n,
            acquisition=cfg.acquisition,
            seed=args.seed,
            merge=MERGE,
        )
        runs_mu, runs_sigma = np.asarray(fit.info["runs"]["points"], dtype=float).T
        stop = stopping(
            feasible_grid(space.region, fit.support()),
            fit.law,
            draws,
            budget,
            noise_sd,
            float(values.std()),
            runs_mu,
            runs_sigma,
            cfg.radius,
            cfg.stop_probability,
            noise_source,
        )
    else:  # the chosen law says (mu, sigma) do not matter: no run is expected to beat another
        proposals = []
        stop = {
            "located": True,
            "noise_sd_log": noise_sd,
            "noise_source": noise_source,
            "prob_within": 1.0,
            "max_expected_improvement_log": 0.0,
            "estimate": None,
            "reason": f"the fit's law ({fit.law!r}) ignores perplexity: no subset is predicted to beat another",
        }
    out = as_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("propose.json", "manifest.csv"):
        (out / stale).unlink(missing_ok=True)
    rows = []
    width = len(str(len(proposals) - 1))
    for i, p in enumerate(proposals):
        name, seed = f"{args.prefix}{i:0{width}d}", args.seed + i
        sel = select_target(
            selector, values, landscape.n_tokens, budget, p["mu"], p["sigma"], seed=seed, spaces={budget: space}
        )
        run_name = f"{name}_b{format_budget(budget)}"
        summary = summary_record(
            "propose",
            budget,
            sel,
            seed,
            landscape,
            fit.moments,
            fit=args.fit,
            selector=selector,
            group=name,
            target={"mu": p["mu"], "sigma": p["sigma"]},
            distance=sel.info["distance"],
            tilt=sel.info.get("tilt"),
            acquisition=cfg.acquisition,
        )
        write_selection(out / run_name, landscape, sel.indices, summary)
        rows.append(
            _manifest_row(
                run_name,
                name,
                0,
                i,
                budget,
                sel,
                landscape,
                target_mu=p["mu"],
                target_sigma=p["sigma"],
                distance=sel.info["distance"],
            )
        )
    _write_manifest(out, rows)
    write_json(
        out / "propose.json",
        {
            "fit": args.fit,
            "landscape": str(landscape.path),
            "moments": fit.moments,
            "selector": selector,
            "acquisition": cfg.acquisition,
            "draws": source,
            "n_requested": cfg.n,
            "n_proposed": len(proposals),
            "budget": budget,
            "trust_margin": cfg.trust_margin,
            "merge_distance": MERGE,
            "seed": args.seed,
            "proposals": proposals,
            "subsets": [r["name"] for r in rows],
            "stopping": stop,
        },
    )
    print(
        json.dumps(
            {
                "out": str(out),
                "runs": len(proposals),
                "acquisition": cfg.acquisition,
                "draws": source,
                "located": stop["located"],
                "prob_within": stop["prob_within"],
                "max_expected_improvement_log": stop["max_expected_improvement_log"],
                "noise_sd": noise_sd,
            }
        )
    )
    return 0
