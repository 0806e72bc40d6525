"""`fit_to_dir`: the whole ``pplaw fit`` stage, from runs.csv to a complete fit directory.

Steps: validate runs -> every candidate law's point fit, lack-of-fit test against the pure error
of replicated runs (`law.lack_of_fit`) and held-out error (whole run groups left out) -> the law
choice (`law.choice`; ``--law auto``, the default, or the given law with its own lack-of-fit
verdict) -> the chosen law's robust point fit (+ bootstrap) -> optional NUTS fit -> optimum inside
the supported region (the runs' hull widened by the trust margin, `law.region`) and its interior
check -> model comparison -> plots -> posterior.nc -> fit.json (last; see `fitdir` for the protocol).
The numerics are `pplaw_jax.law`; this module reads runs.csv (`runs_table`) and writes the fit
directory (`fitdir`, `plots`).

Candidates: every law of `law.forms.LAWS` with ``--law auto`` or ``--law ppl`` (the paper's law
against its rivals ``data``, ``mu``, ``nointer``, ``quad``, ``surface``); a given other law alone.
Model comparison (``--compare``, default on, with more than one candidate): each law's held-out
RMSE difference to ``ppl`` with a group-bootstrap interval; with ``--method bayes|both`` every other
law is also fitted with NUTS (same priors recipe, sampler settings, seed and chain starts) and all
are compared by PSIS leave-one-group-out.  The rivals' diagnostics are reported in the comparison
block but do not fail the run; the fitted law's do.  ``--no-compare`` (the intermediate fits of a
sequential design) skips the comparison, not the law choice.

If the fitted law's NUTS fit does not converge and `allow_unconverged` is False, no fit.json is
written: ``diagnostics.json`` and the trace plot are left for inspection and
`NotConverged` is raised.
"""

from __future__ import annotations

import datetime as _dt
import time
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np

from pplaw_jax.config import AUTO, LACK_OF_FIT_ALPHA, FitConfig
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import file_sha256, write_json
from pplaw_jax.fit import plots
from pplaw_jax.fit.fitdir import (
    DIAGNOSTICS_JSON,
    FIT_JSON,
    FORMAT_VERSION,
    POSTERIOR_NC,
    write_fit_json,
    write_posterior,
)
from pplaw_jax.fit.runs_table import read_runs
from pplaw_jax.law.choice import assess_laws, choose_law
from pplaw_jax.law.collinearity import collinearity
from pplaw_jax.law.forms import LAWS, get_law
from pplaw_jax.law.optimum import FeasibleGrid, optimum_summary
from pplaw_jax.law.point import compare_heldout, describe_heldout, fit_point
from pplaw_jax.law.predictive import predictive
from pplaw_jax.law.region import SupportRegion
from pplaw_jax.law.runs import Runs
from pplaw_jax.logs import get_logger
from pplaw_jax.paths import as_path

MIN_TOKEN_SPAN = 4.0  # budgets spanning less do not identify a law's token exponent


class NotConverged(PplawError):
    """The Bayesian fit failed its convergence checks; the message lists the problems (exit 1,
    not 2: the input was fine, the sampler was not)."""


def _feasible(runs: Runs, opts: FitConfig) -> tuple[SupportRegion, FeasibleGrid]:
    """The supported region of the runs and the search grid over it."""
    support = SupportRegion(runs.mu, runs.sigma, opts.trust_margin)
    return support, FeasibleGrid(*support.bounds(), support.contains)


class _Log:
    """Progress records of logger ``pplaw.fit``, stamped with the seconds since the fit started."""

    def __init__(self):
        self.logger, self.t0 = get_logger("fit"), time.perf_counter()

    def __call__(self, msg: str) -> None:
        self.logger.info(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}")


def _point_optimum(form, point, grid: FeasibleGrid, tokens_ref: float) -> dict:
    """The point fit's argmin in the supported region and, over its bootstrap refits, the share
    of argmins on the region's edge."""
    log_e, theta = form.from_params(point.params)
    opt = grid.argmin_draws(form, np.array([log_e]), theta[None], tokens_ref)
    out = {
        "tokens_ref": float(tokens_ref),
        "mu": float(opt["mu"][0]),
        "sigma": float(opt["sigma"][0]),
        "loss_at_tokens_ref": float(opt["loss"][0]),
        "at_boundary": bool(opt["at_boundary"][0]),
        "bootstrap_fraction_at_boundary": None,
    }
    boot = point.bootstrap_params
    if boot is not None:
        log_e, theta = form.from_params(boot)
        out["bootstrap_fraction_at_boundary"] = float(
            np.mean(grid.argmin_draws(form, log_e, theta, tokens_ref)["at_boundary"])
        )
    return out


def fit_to_dir(runs_path, out_dir, opts: FitConfig, seed: int = 0) -> dict:
    """Fit, write FITDIR, and return the fit.json content (raises NotConverged / PplawError)."""
    from pplaw_jax.law.bayes import Priors, SamplerConfig

    say = _Log()
    auto = opts.law == AUTO
    candidates = tuple(LAWS) if auto or (opts.law == "ppl" and opts.compare) else (opts.law,)
    runs = read_runs(runs_path, get_law("ppl" if auto else opts.law), opts.moments)
    priors = Priors.from_overrides(opts.prior)
    sampler = SamplerConfig.from_fit_config(opts, seed)
    span = float(runs.tokens.max() / runs.tokens.min())
    if span < MIN_TOKEN_SPAN:
        raise PplawError(
            f"{runs.source}: the runs' token counts span only {span:.4g}x; every law's token exponent "
            f"needs budgets spanning at least {MIN_TOKEN_SPAN:g}x (largest / smallest) to be identified"
        )
    tokens_ref = float(opts.tokens_ref or np.median(runs.tokens))
    if not (np.isfinite(tokens_ref) and tokens_ref > 0):
        raise PplawError(f"--tokens-ref {tokens_ref}: must be > 0")
    out = as_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / FIT_JSON).unlink(missing_ok=True)  # from here on the directory is incomplete
    for stale in (DIAGNOSTICS_JSON, POSTERIOR_NC, *plots.PLOT_FILES):
        (out / stale).unlink(missing_ok=True)
    bayes_wanted = opts.method in ("bayes", "both")
    say(
        f"{runs.n} runs ({runs.n_groups} groups) from {runs.source}; law {opts.law}"
        + ("" if auto else f": {get_law(opts.law).description}")
    )

    # every candidate's point fit, lack-of-fit test and held-out error: what the law choice rests on
    t0 = time.perf_counter()
    assessed = assess_laws(
        runs,
        candidates,
        alpha=LACK_OF_FIT_ALPHA,
        n_random=opts.starts,
        folds=opts.folds,
        seed=seed,
        bootstrap=sampler.chains if bayes_wanted else 0,  # refits start NUTS chains
        outlier_share=opts.outlier_share,
        min_runs_per_param=opts.min_runs_per_param,
    )
    full, heldout, lof, pe = assessed.fits, assessed.heldout, assessed.lof, assessed.pure_error
    choice = _law_choice(opts.law, heldout, lof, runs, seed)
    law = choice["fitted"]
    form = get_law(law)
    say(
        f"lack of fit (pure error sd {pe.sd if pe.sd is None else round(pe.sd, 5)}, df {pe.df}): "
        + ", ".join(f"{k} p={v['p'] if v['p'] is None else round(v['p'], 4)}" for k, v in lof.items())
    )
    say(f"law choice: {choice['reason']} ({time.perf_counter() - t0:.1f}s)")

    support, grid = _feasible(runs, opts) if form.uses_perplexity else (None, None)
    n_boot = opts.bootstrap if opts.method in ("point", "both") else 0
    point = fit_point(runs, form, n_random=opts.starts, bootstrap=n_boot, seed=seed)
    say(f"point fit of {law!r} done (objective {point.objective:.5g}, {n_boot} bootstrap refits)")
    if not point.converged:
        say(f"warning: point fit best objective reached from only {point.n_agree} of {point.n_starts} starts")
    point_json = point.to_json()
    if grid is not None:
        point_json["optimum"] = _point_optimum(form, point, grid, tokens_ref)

    info = {
        "format_version": FORMAT_VERSION,
        "law": form.name,
        "law_form": form.description,
        "law_choice": choice,
        "lack_of_fit": {
            "pure_error": pe.to_json(),
            "laws": lof,
            "method": "F test of each law's point-fit residuals on log-loss against the pure "
            "error of replicated runs (law.lack_of_fit)",
        },
        "moments": opts.moments,
        "param_names": list(form.param_names),
        "parameterisation": {
            "positive (fitted in log)": ["E", form.scale_name],
            "free in sign": list(form.exponent_names),
            "fitted on": "log loss",
        },
        "method": opts.method,
        "runs": {
            "file": str(runs.source),
            "sha256": file_sha256(runs_path) if as_path(runs_path).is_file() else None,  # what was fitted
            "n_runs": runs.n,
            "n_groups": runs.n_groups,
            "mu": [float(runs.mu.min()), float(runs.mu.max())],
            "sigma": [float(runs.sigma.min()), float(runs.sigma.max())],
            "tokens": [float(runs.tokens.min()), float(runs.tokens.max())],
            "loss": [float(runs.loss.min()), float(runs.loss.max())],
            "points": [[float(m), float(v)] for m, v in zip(runs.mu, runs.sigma)],
            "collinearity": collinearity(runs.mu, runs.sigma, runs.tokens) if form.uses_perplexity else None,
        },
        "support": None if support is None else support.to_json(),
        "point": point_json,
        "bayes": None,
        "comparison": None,
        "seed": seed,
        "options": {  # the resolved settings this directory was produced with
            **asdict(opts),
            "seed": seed,
            "priors": asdict(priors),
            "sampler": asdict(sampler),
        },
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "notes": {
            "huber_delta": "on log-loss residuals: 1.345 x robust sd of a first pass with delta 1e-3 (see "
            "point.huber_delta_rule)",
            "ci90": "5%/95% percentiles of bootstrap refits over run groups (empty without a bootstrap); null "
            "for a parameter that is not identified (point.identified, point.ci90_notes)",
            "optimum": "argmin of predicted loss inside the supported region (support); independent of D "
            "for this law; fraction_at_boundary = share of posterior (or bootstrap) draws whose "
            "argmin lies on the region's edge (no interior optimum when large)",
            "law_choice": "law is the law fitted here; law_choice.usable is false when it failed the "
            "lack-of-fit test (or nothing could be chosen): `pplaw select` then refuses",
        },
    }

    compare = len(candidates) > 1 and opts.compare
    bayes, idata, post_opt, rival_fits, nuts_s = None, None, None, {}, 0.0
    if bayes_wanted:
        from pplaw_jax.law.bayes import fit_bayes_laws

        # the rivals' posteriors, for the PSIS-LOO comparison, are sampled beside this law's
        rivals = {k: full[k] for k in heldout if k != law and k in full} if compare else {}
        say(
            f"NUTS: {sampler.chains} chains x ({sampler.warmup} warmup + {sampler.samples} samples) of {law!r}"
            + (f" and, for the comparison, of {', '.join(map(repr, rivals))}" if rivals else "")
        )
        t0 = time.perf_counter()
        rival_fits = fit_bayes_laws(runs, {law: point, **rivals}, priors, sampler)
        nuts_s = time.perf_counter() - t0
        bayes = rival_fits.pop(law)
        bjson = bayes.to_json()
        say(
            f"NUTS done in {nuts_s:.1f}s ({bayes.chain_method}); {law!r}: max r_hat {bjson['max_r_hat']:.4f}, "
            f"min ESS {bjson['min_ess_bulk']:.0f}, divergences {bjson['divergences']}"
        )
        idata = bayes.to_idata()
        names = list(form.param_names) + ["noise"]
        if not bjson["converged"]:
            msg = "Bayesian fit did not converge: " + "; ".join(bjson["problems"])
            if not opts.allow_unconverged:
                write_json(out / DIAGNOSTICS_JSON, bjson)
                if opts.plots:
                    plots.plot_trace(idata, names, out / "trace.png")
                raise NotConverged(
                    f"{msg}. Diagnostics in {out / DIAGNOSTICS_JSON}, traces in {out / 'trace.png'}; "
                    "try more --warmup/--samples, a higher --target-accept, --likelihood student, "
                    "or pass --allow-unconverged to keep this fit"
                )
            say(f"warning: {msg} (kept: --allow-unconverged)")
        flat = bayes.flat()
        draws = {k: flat[k] for k in form.param_names}
        if grid is not None:
            assert support is not None  # built together with the grid (`_feasible`)
            log_e, theta = form.from_params(draws)
            post_opt = grid.argmin_draws(form, log_e, theta, tokens_ref)
            bjson["optimum"] = optimum_summary(post_opt, tokens_ref, support.bounds(), opts.level)
            bjson["optimum"]["point"] = {"mu": point_json["optimum"]["mu"], "sigma": point_json["optimum"]["sigma"]}
        else:
            bjson["optimum"] = None
        info["bayes"] = bjson

    if compare:
        info["comparison"] = _compare(runs, law, bayes, rival_fits, nuts_s, full, heldout, seed, opts, say)

    if opts.plots:
        say("plots")
        _plots(out, form, runs, point, bayes, idata, support, tokens_ref, info, post_opt, opts, seed)
        info["plots"] = sorted(p.name for p in out.glob("*.png") if p.name in plots.PLOT_FILES)
    if idata is not None:
        write_posterior(out, idata)
    write_fit_json(out, info)
    say(f"wrote {out / FIT_JSON}")
    return info


def _law_choice(law: str, heldout: dict, lof: dict, runs: Runs, seed: int) -> dict:
    """The law_choice block: the automatic choice (`law.choice`), or the given law with its own
    lack-of-fit verdict; ``fitted`` is the law fitted in full, ``usable`` whether it may select."""
    if law != AUTO:
        if law not in lof:  # too few runs for it, or it could not be fitted
            raise PplawError(f"{runs.source}: {heldout[law]}")
        rejected = (lof.get(law) or {}).get("rejected") is True
        return {
            "mode": "given",
            "fitted": law,
            "chosen": law,
            "usable": not rejected,
            "reason": f"{law!r} was given (--law {law})"
            + ("; it fails the lack-of-fit test, so it is not used to select" if rejected else ""),
        }
    choice = choose_law(heldout, lof, runs.groups, seed)
    fitted = choice["chosen"]
    if fitted is None:  # nothing usable: fit the law that predicts held-out groups best, for the record
        rmse = {k: r.rmse_log for k, r in heldout.items() if not isinstance(r, str)}
        if not rmse:
            raise PplawError(
                f"{runs.source}: no law could be fitted and validated on these runs: "
                + "; ".join(f"{k}: {r}" for k, r in heldout.items())
            )
        fitted = min(rmse, key=lambda k: rmse[k])
    return {"mode": AUTO, "fitted": fitted, "usable": choice["chosen"] is not None, **choice}


def _compare(runs, law, bayes, rival_fits, nuts_s, full, heldout, seed, opts, say) -> dict:
    """Held-out differences of every law to the paper's (``ppl``) and, with a posterior, PSIS
    leave-one-group-out over every law's NUTS fit (the fitted `law`'s is `bayes`, the rivals'
    `rival_fits`, sampled beside it in `nuts_s` seconds)."""
    from pplaw_jax.law.bayes import loo_compare

    t0 = time.perf_counter()
    comparison = compare_heldout(heldout, runs.groups, "ppl", seed=seed)
    comparison["method"] = (
        describe_heldout(runs, opts.folds, seed=seed) + "; differences: rival's held-out "
        "RMSE of log-loss minus ppl's (negative: the rival predicts left-out groups better), 90% "
        f"interval from {comparison['bootstrap']['n']} resamples of the groups with replacement, "
        "both RMSEs recomputed on the resampled held-out errors; verdict 'better'/'worse' only "
        "when the interval excludes 0, else 'no detectable difference'"
    )
    comp: dict[str, Any] = {"heldout": comparison, "loo": None, "wall_s": {"heldout": time.perf_counter() - t0}}
    say(
        "held-out rmse(log loss): "
        + ", ".join(f"{k} {v.get('rmse_log_loss', v.get('error'))}" for k, v in comparison["laws"].items())
    )
    say(
        "rival vs ppl: "
        + ", ".join(f"{k} {v.get('verdict', v.get('error'))}" for k, v in comparison["differences"].items())
    )
    if bayes is None:
        return comp

    fits, rivals = {law: bayes, **rival_fits}, {}
    for name in heldout:
        if name == law:
            continue
        if name not in full:
            rivals[name] = {"error": heldout[name]}
            continue
        diag = fits[name].diagnostics()
        rivals[name] = {
            "point_params": full[name].params,
            "converged": diag["converged"],
            "problems": diag["problems"],
            "max_r_hat": diag["max_r_hat"],
            "min_ess_bulk": diag["min_ess_bulk"],
            "divergences": diag["divergences"],
            "wall_s": fits[name].wall_s,
        }
        if not diag["converged"]:
            say(
                f"warning: rival {name!r}'s NUTS fit (comparison only) did not converge: " + "; ".join(diag["problems"])
            )
    comp["wall_s"]["nuts_all_laws"] = nuts_s
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # only ArviZ's Pareto-k warning, which the output counts per law; anything else still shows
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto distribution")
        loo = loo_compare(fits)
    comp["wall_s"]["loo"] = time.perf_counter() - t0
    for name, r in rivals.items():
        loo["laws"].setdefault(name, {})["nuts"] = r
    loo["disagreement"] = _disagreement(loo, comparison)
    comp["loo"] = loo
    say(f"PSIS leave-one-group-out prefers {loo['best']!r}; {loo['disagreement']}")
    return comp


def _disagreement(loo: dict, heldout: dict) -> str:
    """Plain-language: does PSIS-LOO prefer the law that held-out RMSE ranks best?"""
    best_loo, best_ho = loo["best"], heldout["best"]
    bad = {k: v["pareto_k"]["bad"] + v["pareto_k"]["very_bad"] for k, v in loo["laws"].items() if "pareto_k" in v}
    caveat = ""
    if any(bad.values()):
        caveat = (
            " PSIS-LOO is unreliable for some groups (Pareto k above good_k: "
            + ", ".join(f"{k} {n}" for k, n in bad.items() if n)
            + ")."
        )
    ranked = sorted((v["rank"], k) for k, v in loo["laws"].items() if "rank" in v)
    margin = ""
    if len(ranked) > 1:
        second = loo["laws"][ranked[1][1]]
        margin = f" (by {second['elpd_diff']:.2f} +- {second['dse']:.2f} elpd over {ranked[1][1]!r})"
    if best_ho is None:
        return f"cannot tell: no law has a held-out error; PSIS-LOO prefers {best_loo!r}{margin}.{caveat}"
    sig = ""
    if best_ho != heldout["baseline"]:
        sig = f" (its held-out difference to {heldout['baseline']!r}: {heldout['differences'][best_ho]['verdict']})"
    if best_loo == best_ho:
        return f"no: PSIS-LOO{margin} and held-out RMSE both prefer {best_loo!r}{sig}.{caveat}"
    return f"yes: PSIS-LOO prefers {best_loo!r}{margin} but held-out RMSE ranks {best_ho!r} best{sig}.{caveat}"


def _plots(out, form, runs, point, bayes, idata, support, tokens_ref, info, opt, opts, seed):
    names = list(form.param_names) + ["noise"]
    if bayes is not None:
        flat = bayes.flat()
        draws = {k: flat[k] for k in form.param_names}
        likelihood, df = bayes.config.likelihood, bayes.config.student_df
        pred = predictive(
            form.name, draws, flat["noise"], likelihood, df, runs.mu, runs.sigma, runs.tokens, opts.level, seed
        )
        label = f"posterior mean, {int(100 * opts.level)}% predictive interval"
        plots.plot_trace(idata, names, out / "trace.png")
        plots.plot_pair(idata, list(form.param_names), out / "pair.png")
        from pplaw_jax.law.bayes import prior_predictive

        prior_draws = prior_predictive(runs, bayes.design, bayes.priors, likelihood, df, seed=seed)
        plots.plot_prior_predictive(runs, prior_draws, out / "prior_predictive.png", opts.level)
    else:
        draws = point.bootstrap_params
        if draws is not None:
            pred = predictive(form.name, draws, None, "normal", None, runs.mu, runs.sigma, runs.tokens, opts.level)
            pred["mean"] = point.predict(runs.mu, runs.sigma, runs.tokens)
            label = f"point fit, {int(100 * opts.level)}% bootstrap interval"
        else:
            p = point.predict(runs.mu, runs.sigma, runs.tokens)
            pred, label = {"mean": p, "ci_lo": p, "ci_hi": p}, "point fit"
    plots.plot_pred_vs_obs(runs, pred, out / "pred_vs_obs.png", label)
    plots.plot_loss_vs_tokens(
        form.name,
        point.params,
        runs,
        out / "loss_vs_tokens.png",
        draws=draws,
        uses_perplexity=form.uses_perplexity,
        level=opts.level,
    )
    if support is not None:
        bopt = (info["bayes"] or {}).get("optimum")
        plots.plot_surface(
            form.name,
            point.params,
            runs,
            support,
            tokens_ref,
            out / "surface.png",
            point_opt=info["point"]["optimum"],
            post_opt=opt,
            region=bopt["credible_region"] if bopt else None,
        )
