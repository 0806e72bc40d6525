"""The fit directory contract: its file names, the ``fit.json`` format, its writers
(`write_posterior`, `write_fit_json`) and its validated reader (`load_fit` -> `Fit`).

Completeness protocol: ``pplaw fit`` (`pplaw_jax.fit.stage`) first deletes any old ``fit.json``,
writes every other file (``posterior.nc``, the plots) under a temporary name and renames it into
place, and writes ``fit.json`` last (also via temp + rename, `write_fit_json`).  So the presence
of ``fit.json`` means the directory is complete and consistent; `load_fit` refuses a directory
without it.  ``diagnostics.json`` is left instead of ``fit.json`` by a Bayesian fit that failed
its convergence checks.

fit.json layout (all numbers plain JSON floats; NaN/inf written as null)::

    law (the law fitted in full), law_form, param_names, parameterisation, method, seed, created, notes, plots
    law_choice: {mode: "auto"|"given", fitted, chosen, usable (false: select refuses), reason, and for auto
                 rule, best_heldout, rejected, untested, eligible, not_worse_than_best, differences_to_best}
    lack_of_fit: {pure_error: {sd_log_loss, df, ss, replicate_sets, replicated_runs, definition},
                  laws: {LAW: {ss_residual, df_residual, residual_sd_log_loss, pure_error_sd_log_loss, alpha,
                               F, df: [df_lof, df_pe], p, rejected (null: untestable), note}}, method}
    runs:  {file, n_runs, n_groups, mu|sigma|tokens|loss: [min, max]}
    point: {params: {name: float}, identified: {name: bool} (False: E ran to its bound),
            ci90: {name: [q05, q95] | null (unidentified)} ({} without bootstrap),
            ci90_zero_width: [name], ci90_notes: {name: str}, objective,
            huber_delta, huber_delta_rule: {rule, first_pass_robust_sd}, converged, n_starts,
            n_starts_at_best, optimiser_message, residual_scale_log,
            bootstrap: {n, failed, resampled, starts, draws: {name: [...]}} | null,
            optimum: {box, tokens_ref, mu, sigma, loss_at_tokens_ref, at_boundary}  (ppl law)}
    bayes: null | {summary: {name|noise: {mean, sd, q05, q50, q95, r_hat, ess_bulk, ess_tail}},
            divergences, max_r_hat, min_ess_bulk, thresholds, converged, problems, likelihood,
            student_df, priors (incl. interaction_scale), interaction_prior_on: [name], design, chains,
            warmup, samples, target_accept, chain_method, wall_s,
            optimum: {box, tokens_ref, mu|sigma|loss_at_tokens_ref: {mean, sd, q05, q50, q95},
                      fraction_at_boundary, credible_region: {level, method, polygons: [[[mu, sigma], ...]]},
                      point: {mu, sigma}} | null}
    comparison: null | (--law auto or ppl; LAW = ppl|data|mu|nointer|quad|surface, RIVAL = LAW other than ppl)
        {heldout: {method, baseline: "ppl", best: LAW | null,
                   laws: {LAW: {folds, leave_one_group_out, n_scored, n_nonfinite, rmse_log_loss, mae_loss,
                                max_abs_log_error, per_run_log_error: [per run, runs.csv order]} | {error}},
                   differences: {RIVAL: {rmse_diff (rival - ppl), ci90: [lo, hi],
                                 verdict: "better"|"worse"|"no detectable difference"} | {error}},
                   bootstrap: {n, seed, resampled}},
         loo: null | {method, best: LAW, disagreement: str,
                      laws: {LAW: {elpd_loo, se, p_loo, n_groups, pareto_k: {good_k, good, bad, very_bad},
                                   warning, rank, elpd_diff, dse, weight,
                                   nuts (rivals): {point_params, converged, problems, max_r_hat, min_ess_bulk,
                                                   divergences, wall_s} | {error}}}},
         wall_s: {heldout, nuts_all_laws (every law's NUTS, side by side: `law.bayes.fit_bayes_laws`), loo}}

posterior.nc: ArviZ InferenceData; ``posterior`` has one (chain, draw) variable per parameter
name plus ``noise`` (sd of log-loss); also log_likelihood (``log_loss`` over ``run``),
observed_data, constant_data (mu, sigma, tokens, run_id) and sample_stats.
"""

from __future__ import annotations

import json

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import atomic_write, write_json
from pplaw_jax.law.forms import get_law
from pplaw_jax.paths import AnyPath, as_path, local_copy

FIT_JSON = "fit.json"
POSTERIOR_NC = "posterior.nc"
DIAGNOSTICS_JSON = "diagnostics.json"  # instead of fit.json when the Bayesian fit did not converge
FORMAT_VERSION = 3  # 2: moments, run points, support region, rival comparison; 3: lack of fit, law choice


def write_posterior(fit_dir, idata) -> None:
    """Atomically write an ArviZ InferenceData as FIT_DIR/posterior.nc (netCDF, h5netcdf engine)."""
    atomic_write(as_path(fit_dir) / POSTERIOR_NC, lambda tmp: idata.to_netcdf(str(tmp), engine="h5netcdf"))


def write_fit_json(fit_dir, info: dict) -> None:
    """Atomically write FIT_DIR/fit.json, the marker of a complete fit directory: last of all."""
    write_json(as_path(fit_dir) / FIT_JSON, info)


class Fit:
    """A completed fit directory, as `load_fit` returns it.

    Attributes: ``law`` (a name of `pplaw_jax.law.forms.LAWS`), ``param_names``, ``point_params``
    (``{name: float}``, the robust point estimate), ``info`` (the whole parsed fit.json) and
    ``fit_dir``.  Posterior draws are read from posterior.nc on first use.
    """

    def __init__(self, fit_dir: AnyPath, info: dict):
        self.fit_dir = as_path(fit_dir)
        self.info = info
        self.law: str = info["law"]
        self.moments: str = info.get("moments", "ppl")
        self.param_names: tuple[str, ...] = tuple(info["param_names"])
        self.point_params: dict[str, float] = {k: float(v) for k, v in info["point"]["params"].items()}
        self._posterior: dict[str, np.ndarray] | None = None

    @property
    def has_posterior(self) -> bool:
        return self.info.get("bayes") is not None

    def _load_posterior(self) -> dict[str, np.ndarray] | None:
        if not self.has_posterior:
            return None
        if self._posterior is None:
            path = self.fit_dir / POSTERIOR_NC
            if not path.exists():
                raise PplawError(f"{path}: missing, although {self.fit_dir / FIT_JSON} has a Bayesian fit")
            from pplaw_jax.law.bayes import import_arviz

            az = import_arviz()
            with local_copy(path) as local:  # netCDF needs a file name: a URL's object is downloaded
                idata = az.from_netcdf(str(local))
                post = idata.posterior
                missing = [n for n in self.param_names if n not in post]
                if missing:
                    raise PplawError(f"{path}: posterior lacks variable(s) {', '.join(missing)}")
                names = [n for n in (*self.param_names, "noise") if n in post]
                self._posterior = {n: np.asarray(post[n].values, dtype=float).reshape(-1) for n in names}
        return self._posterior

    def posterior_draws(self) -> dict[str, np.ndarray] | None:
        """``{name: draws[S]}`` for the law's parameters (chains flattened), or None without a
        Bayesian fit.  Feed them to `predict_loss` with ``v[:, None]`` to evaluate many points."""
        post = self._load_posterior()
        return None if post is None else {n: post[n] for n in self.param_names}

    def bootstrap_draws(self) -> dict[str, np.ndarray] | None:
        """``{name: refits[B]}`` of the point fit's bootstrap, or None without a bootstrap."""
        boot = (self.info["point"].get("bootstrap") or {}).get("draws")
        return None if not boot else {n: np.asarray(boot[n], dtype=float) for n in self.param_names}

    def noise_draws(self) -> np.ndarray | None:
        """Draws ``[S]`` of the observation noise scale on log-loss, or None without a Bayesian fit
        (or a posterior.nc that has no ``noise``)."""
        post = self._load_posterior()
        return None if post is None else post.get("noise")

    @property
    def likelihood(self) -> tuple[str, float | None]:
        """``("normal", None)`` or ``("student", df)`` of the Bayesian fit's observation model."""
        bayes = self.info["bayes"] or {}
        return bayes.get("likelihood", "normal"), bayes.get("student_df")

    def support(self, margin: float | None = None):
        """The supported region of the fitted runs (`pplaw_jax.law.region.SupportRegion`), with
        the fit's trust margin unless `margin` is given; PplawError for a fit that records no run
        moments."""
        from pplaw_jax.law.region import SupportRegion

        points = (self.info.get("runs") or {}).get("points")
        if not points:
            raise PplawError(
                f"{self.fit_dir / FIT_JSON}: no run moments (runs.points); refit with this version of `pplaw fit`"
            )
        margin = (self.info.get("support") or {}).get("margin") if margin is None else margin
        mu, sigma = np.asarray(points, dtype=float).T
        return SupportRegion(mu, sigma) if margin is None else SupportRegion(mu, sigma, margin)

    def __repr__(self) -> str:
        return f"Fit(law={self.law!r}, dir={str(self.fit_dir)!r}, bayes={self.has_posterior})"


def load_fit(fit_dir) -> Fit:
    """Open a fit directory written by ``pplaw fit``; PplawError if it is missing or incomplete."""
    fit_dir = as_path(fit_dir)
    path = fit_dir / FIT_JSON
    if not path.exists():
        raise PplawError(f"{path}: not found (no fit there, or the fit did not complete)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PplawError(f"{path}: not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise PplawError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise PplawError(f"{path}: expected a JSON object, got {type(info).__name__}")
    for key in ("law", "param_names", "point"):
        if key not in info:
            raise PplawError(f"{path}: field {key!r} missing")
    get_law(info["law"])
    return Fit(fit_dir, info)
