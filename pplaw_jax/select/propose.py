"""Sequential design: which CPT runs to do next, and whether the optimum is located yet.

Each CPT run is the expensive unit, so after an initial design the next runs go where they most
help to locate the argmin of the fitted law (`thompson`, default) or, for a better global fit,
where the law's prediction is most uncertain (`uncertainty`).  Both search the same feasible set
as the final selection (`law.optimum.FeasibleGrid`: attainable at the budget and supported by the
runs) except that the supported region is widened by an exploration margin, so a boundary optimum
is explored just past the edge, never far outside.

* Thompson sampling of the argmin: each proposal is the argmin of one random posterior draw (or
  bootstrap refit); a proposal within `merge` (in the support's unit coordinates) of an earlier one
  is a duplicate and another draw is taken, until `k` distinct proposals or the draws run out.
* Uncertainty: greedily the feasible point with the largest sd of the predicted log-loss over the
  draws, excluding points within `merge` of earlier proposals.

Stopping rule (`stopping`), reported with every proposal: the estimate is the feasible grid
point of least expected loss over the draws; ``prob_within`` is the share of draws whose own argmin lies within
`radius` landscape standard deviations (of the moment kind) of it; ``max_expected_improvement`` is
the largest, over the feasible set, expected improvement over the *current best run* (the run
whose ``(mu, sigma)`` has the least expected loss), each draw measured against its own value there:
``mean_s max(0, log L_s(best run) - log L_s(x))``.  The optimum counts as located when
``prob_within >= stop_probability`` and the largest expected improvement is below the noise sd:
no further run is expected to beat the best run so far by more than a run's own noise.  The noise
is the pure error of the replicated runs (`law.lack_of_fit`) when the runs have replicates — the
fit's residual sd would include the law's own lack of fit and make the rule stop at once — else
the fit's noise estimate, and the record says which.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pplaw_jax.config import ProposeConfig
from pplaw_jax.errors import PplawError
from pplaw_jax.law import get_law
from pplaw_jax.law.optimum import FeasibleGrid
from pplaw_jax.law.region import SupportRegion

ACQUISITIONS = ("thompson", "uncertainty")
MERGE = 0.05  # proposals closer than this (in the support's unit coordinates) are merged
_DEFAULTS = ProposeConfig()  # `pplaw propose`'s defaults, written once in pplaw_jax.config


def _log_loss_draws(form, draws: Mapping[str, np.ndarray], mu, sigma, tokens) -> np.ndarray:
    """``[S, N]`` log-loss of every draw at every point (inf where not finite)."""
    log_e, theta = form.from_params({k: np.asarray(draws[k], dtype=float) for k in form.param_names})
    feats = form.features(mu, sigma, tokens, np)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.logaddexp(log_e[:, None], theta @ feats.T)
    return np.where(np.isfinite(out), out, np.inf)


def thompson(
    grid: FeasibleGrid,
    support: SupportRegion,
    law: str,
    draws,
    tokens: int,
    k: int,
    rng: np.random.Generator,
    merge: float = MERGE,
) -> list[dict]:
    """Up to `k` distinct argmins of random draws (see the module docstring)."""
    form = get_law(law)
    log_e, theta = form.from_params({n: np.asarray(draws[n], dtype=float) for n in form.param_names})
    opt = grid.argmin_draws(form, log_e, theta, tokens)
    chosen: list[dict] = []
    for s in rng.permutation(len(log_e)):
        if len(chosen) == k:
            break
        uv = support.to_unit(opt["mu"][s], opt["sigma"][s])
        if any(np.hypot(*(uv - c["uv"])) < merge for c in chosen):
            continue
        chosen.append(
            {
                "mu": float(opt["mu"][s]),
                "sigma": float(opt["sigma"][s]),
                "draw": int(s),
                "at_boundary": bool(opt["at_boundary"][s]),
                "uv": uv,
            }
        )
    return chosen


def uncertainty(
    grid: FeasibleGrid, support: SupportRegion, law: str, draws, tokens: int, k: int, merge: float = MERGE
) -> list[dict]:
    """Up to `k` feasible points of largest predictive sd of log-loss, `merge` apart."""
    form = get_law(law)
    mu, sigma = grid.mu[grid.mask], grid.sigma[grid.mask]
    ll = _log_loss_draws(form, draws, mu, sigma, tokens)
    ll = np.where(np.isfinite(ll), ll, np.nan)
    sd = np.nanstd(ll, axis=0)
    uv = support.to_unit(mu, sigma)
    chosen: list[dict] = []
    for i in np.argsort(-np.nan_to_num(sd, nan=-1.0)):
        if len(chosen) == k:
            break
        if any(np.hypot(*(uv[i] - c["uv"])) < merge for c in chosen):
            continue
        chosen.append({"mu": float(mu[i]), "sigma": float(sigma[i]), "predictive_sd_log": float(sd[i]), "uv": uv[i]})
    return chosen


def stopping(
    grid: FeasibleGrid,
    law: str,
    draws,
    tokens: int,
    noise_sd: float,
    landscape_sd: float,
    runs_mu,
    runs_sigma,
    radius: float = _DEFAULTS.radius,
    stop_probability: float = _DEFAULTS.stop_probability,
    noise_source: str = "given",
) -> dict:
    """The stopping rule of the module docstring, as a JSON-ready record; ``runs_mu, runs_sigma``
    are the fitted runs' moments (the candidates for the current best run).  Draws whose loss is
    not finite somewhere on the feasible set (a bootstrap refit can overflow far from its runs)
    are left out and counted."""
    form = get_law(law)
    mu, sigma = grid.mu[grid.mask], grid.sigma[grid.mask]
    ll = _log_loss_draws(form, draws, mu, sigma, tokens)
    ll_runs = _log_loss_draws(form, draws, np.asarray(runs_mu, float), np.asarray(runs_sigma, float), tokens)
    keep = np.all(np.isfinite(ll), axis=1) & np.all(np.isfinite(ll_runs), axis=1)
    out = {
        "radius_landscape_sd": radius,
        "stop_probability": stop_probability,
        "noise_sd_log": float(noise_sd),
        "noise_source": noise_source,
        "draws_used": int(keep.sum()),
        "draws_dropped_nonfinite": int((~keep).sum()),
    }
    if not keep.any():
        return {
            **out,
            "estimate": None,
            "best_run": None,
            "prob_within": 0.0,
            "max_expected_improvement_log": None,
            "located": False,
        }
    ll, ll_runs = ll[keep], ll_runs[keep]
    e = int(np.argmin(np.exp(ll).mean(axis=0)))  # least expected loss on the grid
    best = np.argmin(ll, axis=1)  # each draw's argmin
    dist = np.hypot(mu[best] - mu[e], sigma[best] - sigma[e]) / landscape_sd
    prob = float(np.mean(dist <= radius))
    r = int(np.argmin(np.exp(ll_runs).mean(axis=0)))  # the current best run, by expected loss
    ei = np.maximum(0.0, ll_runs[:, r : r + 1] - ll).mean(axis=0)  # each draw against its own value there
    max_ei = float(np.max(ei))
    cell = np.flatnonzero(grid.mask)[e]
    return {
        **out,
        "estimate": {
            "mu": float(mu[e]),
            "sigma": float(sigma[e]),
            "at_boundary": bool(grid.boundary[cell]),
            "at_corpus_edge": bool(grid.corpus_edge[cell]),
        },
        "best_run": {"index": r, "mu": float(np.asarray(runs_mu)[r]), "sigma": float(np.asarray(runs_sigma)[r])},
        "prob_within": prob,
        "max_expected_improvement_log": max_ei,
        "located": bool(prob >= stop_probability and max_ei < noise_sd),
    }


def propose(
    region,
    support: SupportRegion,
    law: str,
    draws,
    tokens: int,
    k: int,
    *,
    acquisition: str = "thompson",
    seed: int = 0,
    merge: float = MERGE,
) -> tuple[list[dict], FeasibleGrid]:
    """The next `k` (or fewer, after merging) run targets and the feasible grid they came from.
    `support` must already carry the exploration margin."""
    from pplaw_jax.select.target import feasible_grid

    if acquisition not in ACQUISITIONS:
        raise PplawError(f"--acquisition {acquisition!r}: expected one of {', '.join(ACQUISITIONS)}")
    if k < 1:
        raise PplawError(f"--n {k}: must be >= 1")
    grid = feasible_grid(region, support)
    if acquisition == "thompson":
        out = thompson(grid, support, law, draws, tokens, k, np.random.default_rng(seed), merge)
    else:
        out = uncertainty(grid, support, law, draws, tokens, k, merge)
    for p in out:
        p["uv"] = [float(v) for v in p["uv"]]
    return out, grid
