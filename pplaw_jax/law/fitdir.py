"""`fit_to_dir`: the whole ``pplaw fit`` stage, from runs.csv to a complete fit directory.

Steps: validate runs -> robust point fit (+ bootstrap) -> optional NUTS fit -> optimum inside the
box -> model comparison -> plots -> posterior.nc -> fit.json (last; see `io` for the protocol).

Model comparison (``--law ppl`` only): held-out error of both laws' point fits on k folds of runs,
always; with ``--method bayes|both`` the data-only law is also fitted with NUTS (same priors
recipe, sampler settings and seed) and the two are compared by PSIS-LOO.  The comparison law's
diagnostics are reported in the comparison block but do not fail the run; the main law's do.

If the main law's NUTS fit does not converge and `allow_unconverged` is False, no fit.json is
written: ``diagnostics.json`` and the trace plot are left for inspection and
`NotConverged` is raised.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import write_json
from pplaw_jax.law import plots
from pplaw_jax.law.data import Runs, read_runs
from pplaw_jax.law.forms import LAWS, get_law
from pplaw_jax.law.io import FIT_JSON, FORMAT_VERSION, POSTERIOR_NC, write_posterior
from pplaw_jax.law.optimum import minimise_over_box, optimum_summary, point_optimum_summary
from pplaw_jax.law.point import HUBER_DELTA, fit_point, heldout_error
from pplaw_jax.law.predictive import predictive

DIAGNOSTICS_JSON = "diagnostics.json"


class NotConverged(Exception):
    """The Bayesian fit failed its convergence checks; the message lists the problems."""


@dataclass(frozen=True)
class FitOptions:
    law: str = "ppl"
    moments: str = "ppl"  # which runs.csv moments are mu and sigma (pplaw_jax.moments)
    method: str = "both"  # point | bayes | both
    bootstrap: int = 200
    n_random: int = 16
    folds: int = 5
    seed: int = 0
    priors: object = None  # bayes.Priors; None = defaults
    sampler: object = None  # bayes.SamplerConfig; None = defaults
    mu_range: tuple[float, float] | None = None
    sigma_range: tuple[float, float] | None = None
    tokens_ref: float | None = None
    level: float = 0.9
    plots: bool = True
    allow_unconverged: bool = False
    log: object = field(default=sys.stderr, repr=False)


def _box(runs: Runs, opts: FitOptions):
    box = {}
    for name, given, values in (("mu", opts.mu_range, runs.mu), ("sigma", opts.sigma_range, runs.sigma)):
        lo, hi = given if given is not None else (float(values.min()), float(values.max()))
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
            raise PplawError(f"--{name}-range {lo} {hi}: need 0 < LO < HI")
        box[name] = (float(lo), float(hi))
    return box


class _Log:
    """Progress lines on stderr, stamped with the seconds since the fit started."""

    def __init__(self, stream):
        self.stream, self.t0 = stream, time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"pplaw fit [{time.perf_counter() - self.t0:6.1f}s]: {msg}", file=self.stream, flush=True)


def fit_to_dir(runs_path, out_dir, opts: FitOptions) -> dict:
    """Fit, write FITDIR, and return the fit.json content (raises NotConverged / PplawError)."""
    from pplaw_jax.law.bayes import Priors, SamplerConfig

    say = _Log(opts.log)
    if opts.method not in ("point", "bayes", "both"):
        raise PplawError(f"--method {opts.method!r}: expected point, bayes or both")
    form = get_law(opts.law)
    runs = read_runs(runs_path, form, opts.moments)
    priors = opts.priors or Priors()
    sampler = opts.sampler or SamplerConfig(seed=opts.seed)
    box = _box(runs, opts) if form.uses_perplexity else None
    tokens_ref = float(opts.tokens_ref or np.median(runs.tokens))
    if not (np.isfinite(tokens_ref) and tokens_ref > 0):
        raise PplawError(f"--tokens-ref {tokens_ref}: must be > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / FIT_JSON).unlink(missing_ok=True)  # from here on the directory is incomplete
    for stale in (DIAGNOSTICS_JSON, POSTERIOR_NC, *plots.PLOT_FILES):
        (out / stale).unlink(missing_ok=True)
    bayes_wanted = opts.method in ("bayes", "both")

    say(f"{runs.n} runs ({runs.n_groups} groups) from {runs.source}; law {form.name}: {form.description}")
    n_boot = opts.bootstrap if opts.method in ("point", "both") else 0
    point = fit_point(runs, form, n_random=opts.n_random, bootstrap=n_boot, seed=opts.seed)
    say(f"point fit done (objective {point.objective:.5g}, {n_boot} bootstrap refits)")
    if not point.converged:
        say(f"warning: point fit best objective reached from only {point.n_agree} of {point.n_starts} starts")
    point_json = point.to_json()
    if box is not None:
        log_e, theta = form.from_params(point.params)
        opt = minimise_over_box(form, np.array([log_e]), theta[None], box["mu"], box["sigma"], tokens_ref)
        point_json["optimum"] = point_optimum_summary(opt, box["mu"], box["sigma"], tokens_ref)

    info = {
        "format_version": FORMAT_VERSION,
        "law": form.name,
        "law_form": form.description,
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
            "n_runs": runs.n,
            "n_groups": runs.n_groups,
            "mu": [float(runs.mu.min()), float(runs.mu.max())],
            "sigma": [float(runs.sigma.min()), float(runs.sigma.max())],
            "tokens": [float(runs.tokens.min()), float(runs.tokens.max())],
            "loss": [float(runs.loss.min()), float(runs.loss.max())],
        },
        "point": point_json,
        "bayes": None,
        "comparison": None,
        "seed": opts.seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": {
            "huber_delta": f"{HUBER_DELTA} on log-loss residuals (Chinchilla approach 3)",
            "ci90": "5%/95% percentiles of bootstrap refits over run groups (empty without a bootstrap)",
            "optimum": "argmin of predicted loss inside the box; independent of D for this law",
        },
    }

    bayes, idata, post_opt = None, None, None
    if bayes_wanted:
        from pplaw_jax.law.bayes import fit_bayes

        say(f"NUTS: {sampler.chains} chains x ({sampler.warmup} warmup + {sampler.samples} samples)")
        bayes = fit_bayes(runs, point, priors, sampler)
        bjson = bayes.to_json()
        say(f"NUTS done in {bayes.wall_s:.1f}s ({bayes.chain_method}); max r_hat {bjson['max_r_hat']:.4f}, "
             f"min ESS {bjson['min_ess_bulk']:.0f}, divergences {bjson['divergences']}")
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
        if box is not None:
            log_e, theta = form.from_params(draws)
            post_opt = minimise_over_box(form, log_e, theta, box["mu"], box["sigma"], tokens_ref)
            bjson["optimum"] = optimum_summary(post_opt, box["mu"], box["sigma"], tokens_ref, opts.level)
            bjson["optimum"]["point"] = {"mu": point_json["optimum"]["mu"], "sigma": point_json["optimum"]["sigma"]}
        else:
            bjson["optimum"] = None
        info["bayes"] = bjson

    if form.name == "ppl":
        info["comparison"] = _compare(runs, point, bayes, idata, priors, sampler, opts, say)

    if opts.plots:
        say("plots")
        _plots(out, form, runs, point, bayes, idata, box, tokens_ref, info, post_opt, opts)
        info["plots"] = sorted(p.name for p in out.glob("*.png") if p.name in plots.PLOT_FILES)
    if idata is not None:
        write_posterior(out / POSTERIOR_NC, idata)
    write_json(out / FIT_JSON, info)
    say(f"wrote {out / FIT_JSON}")
    return info


def _compare(runs, point, bayes, idata, priors, sampler, opts, say) -> dict:
    from pplaw_jax.law.bayes import fit_bayes, loo_compare

    base = LAWS["data"]
    heldout = {}
    for form in (LAWS["ppl"], base):
        try:
            heldout[form.name] = heldout_error(runs, form, folds=opts.folds, seed=opts.seed).to_json()
        except PplawError as e:  # e.g. a fold too small for the law: report it, keep the fit
            heldout[form.name] = {"error": str(e)}
    comp = {
        "heldout": {
            "method": f"{min(opts.folds, runs.n_groups)}-fold over run groups, point fits, errors of left-out runs",
            "laws": heldout,
        },
        "loo": None,
    }
    say("held-out rmse(log loss): " + ", ".join(f"{k} {v.get('rmse_log_loss', v.get('error'))}" for k, v in heldout.items()))
    if bayes is not None:
        say("fitting the data-only law with NUTS for the LOO comparison")
        base_point = fit_point(runs, base, n_random=opts.n_random, bootstrap=sampler.chains, seed=opts.seed)
        base_bayes = fit_bayes(runs, base_point, priors, sampler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pareto-k warnings are counted in the output instead
            loo = loo_compare({"ppl": idata, "data": base_bayes.to_idata()})
        diag = base_bayes.diagnostics()
        loo["data_law_fit"] = {
            "point_params": base_point.params,
            "converged": diag["converged"],
            "problems": diag["problems"],
            "summary": diag["summary"],
        }
        if not diag["converged"]:
            say("warning: the data-only law's NUTS fit (comparison only) did not converge: "
                 + "; ".join(diag["problems"]))
        comp["loo"] = loo
        say(f"PSIS-LOO prefers {loo['best']!r}")
    return comp


def _plots(out, form, runs, point, bayes, idata, box, tokens_ref, info, opt, opts):
    names = list(form.param_names) + ["noise"]
    if bayes is not None:
        flat = bayes.flat()
        draws = {k: flat[k] for k in form.param_names}
        likelihood, df = bayes.config.likelihood, bayes.config.student_df
        pred = predictive(form.name, draws, flat["noise"], likelihood, df, runs.mu, runs.sigma, runs.tokens,
                          opts.level, opts.seed)
        label = f"posterior mean, {int(100 * opts.level)}% predictive interval"
        plots.plot_trace(idata, names, out / "trace.png")
        plots.plot_pair(idata, list(form.param_names), out / "pair.png")
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
    plots.plot_loss_vs_tokens(form.name, point.params, runs, out / "loss_vs_tokens.png", draws=draws,
                              uses_perplexity=form.uses_perplexity, level=opts.level)
    if box is not None:
        bopt = (info["bayes"] or {}).get("optimum")
        plots.plot_surface(
            form.name, point.params, runs, {"mu": box["mu"], "sigma": box["sigma"]}, tokens_ref,
            out / "surface.png", point_opt=info["point"]["optimum"], post_opt=opt,
            region=bopt["credible_region"] if bopt else None,
        )
