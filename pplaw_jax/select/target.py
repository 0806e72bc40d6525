"""The DOS target: the attainable ``(mu, sigma)`` with the least predicted loss at the budget.

Two choices over the same candidates (points of the `AttainableRegion` for this budget):

* ``point``: minimise ``predict_loss(law, point_params, mu, sigma, D)`` (the paper's target);
* ``posterior`` (uncertainty-aware): minimise the posterior expected loss
  ``mean_s predict_loss(law, draw_s, mu, sigma, D)`` over the fit's posterior draws.

``D`` is the token budget.  The search is a grid over the region (``mu`` evenly over its range;
``sigma`` as a fraction of the way between its least and most attainable value at that ``mu``)
refined twice by a finer grid around the best point.  A candidate whose loss is not finite (a
draw that overflows there) is never chosen.  The report compares the two targets: where they are,
the posterior expected loss and the point loss at each, and how much expected loss the point
target gives away (``expected_loss_gap >= 0`` up to grid resolution).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.law import predict_loss
from pplaw_jax.select.dos import AttainableRegion

_COARSE = (64, 32)  # mu x sigma-fraction points of the first grid
_FINE = 17  # points per axis of each refinement grid
_REFINEMENTS = 2
_BLOCK = 1_000_000  # draws x candidates per predict_loss call (bounds its temporaries)


@dataclass(frozen=True)
class Target:
    """A chosen target and what the law predicts there (``expected_loss`` is None without draws)."""

    mu: float
    sigma: float
    point_loss: float
    expected_loss: float | None

    def as_dict(self) -> dict:
        return {"mu": self.mu, "sigma": self.sigma, "point_loss": self.point_loss,
                "expected_loss": self.expected_loss}


@dataclass(frozen=True)
class TargetChoice:
    """Point-estimate and (when draws exist) posterior-expected-loss targets for one budget."""

    point: Target
    posterior: Target | None
    tokens: int

    def get(self, kind: str) -> Target:
        if kind == "point":
            return self.point
        if kind == "posterior":
            if self.posterior is None:
                raise PplawError("--target posterior needs a fit with a Bayesian posterior "
                                 "(posterior.nc); use --target point")
            return self.posterior
        raise PplawError(f"unknown target kind {kind!r}; choose 'posterior' or 'point'")

    def as_dict(self) -> dict:
        out = {"tokens": self.tokens, "point": self.point.as_dict(),
               "posterior": None if self.posterior is None else self.posterior.as_dict()}
        if self.posterior is not None:
            out["expected_loss_gap"] = self.point.expected_loss - self.posterior.expected_loss
        return out


def point_loss_fn(law: str, params: Mapping[str, float], tokens: int) -> Callable:
    """``f(mu, sigma) -> loss`` at the point estimate."""
    return lambda mu, sigma: predict_loss(law, params, mu, sigma, tokens)


def expected_loss_fn(law: str, draws: Mapping[str, np.ndarray], tokens: int) -> Callable:
    """``f(mu, sigma) -> mean loss over the posterior draws`` (inf where any draw is not finite)."""
    cols = {k: np.asarray(v, dtype=float)[:, None] for k, v in draws.items()}
    n_draws = len(next(iter(cols.values())))
    block = max(1, _BLOCK // max(n_draws, 1))

    def f(mu, sigma):
        mu, sigma = np.atleast_1d(mu), np.atleast_1d(sigma)
        out = np.empty(mu.shape)
        for s in range(0, mu.size, block):
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss = predict_loss(law, cols, mu[None, s:s + block], sigma[None, s:s + block], tokens)
            loss = np.where(np.isfinite(loss), loss, np.inf)
            out[s:s + block] = loss.mean(axis=0)
        return out

    return f


def minimise_over_region(region: AttainableRegion, loss: Callable) -> tuple[float, float, float]:
    """``(mu, sigma, loss)`` of the least `loss` over the region: coarse grid plus refinements."""
    n_mu, n_frac = _COARSE
    mu_grid = np.linspace(region.mu_min, region.mu_max, n_mu)
    frac_grid = np.linspace(0.0, 1.0, n_frac)
    mu_c, frac_c = np.repeat(mu_grid, n_frac), np.tile(frac_grid, n_mu)
    d_mu = (region.mu_max - region.mu_min) / max(n_mu - 1, 1)
    d_frac = 1.0 / max(n_frac - 1, 1)
    best = None
    for level in range(_REFINEMENTS + 1):
        mu, sigma = region.points(mu_c, frac_c)
        keep = (mu > 0) & (sigma > 0)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            values = np.where(keep, np.asarray(loss(mu, sigma), dtype=float), np.inf)
        values = np.where(np.isfinite(values), values, np.inf)
        i = int(np.argmin(values))
        if np.isfinite(values[i]) and (best is None or values[i] < best[2]):
            best = (float(mu[i]), float(sigma[i]), float(values[i]), float(mu_c[i]), float(frac_c[i]))
        if best is None:
            break
        if level < _REFINEMENTS:
            # a finer grid spanning one coarse step either side of the best point so far
            mu_f = best[3] + np.linspace(-d_mu, d_mu, _FINE)
            frac_f = np.clip(best[4] + np.linspace(-d_frac, d_frac, _FINE), 0.0, 1.0)
            mu_c, frac_c = np.repeat(mu_f, _FINE), np.tile(frac_f, _FINE)
            d_mu, d_frac = 2 * d_mu / (_FINE - 1), 2 * d_frac / (_FINE - 1)
    if best is None:
        raise PplawError("the law predicts no finite loss anywhere in the attainable region")
    return best[0], best[1], best[2]


def within_box(loss: Callable, box: Mapping[str, Sequence[float]]) -> Callable:
    """`loss` where ``box["mu"][0] <= mu <= box["mu"][1]`` (same for sigma), inf elsewhere."""
    (mu_lo, mu_hi), (s_lo, s_hi) = box["mu"], box["sigma"]

    def f(mu, sigma):
        mu, sigma = np.atleast_1d(mu), np.atleast_1d(sigma)
        inside = (mu >= mu_lo) & (mu <= mu_hi) & (sigma >= s_lo) & (sigma <= s_hi)
        return np.where(inside, np.broadcast_to(loss(mu, sigma), mu.shape), np.inf)

    return f


def choose_target(region: AttainableRegion, law: str, point_params: Mapping[str, float],
                  draws: Mapping[str, np.ndarray] | None, tokens: int,
                  box: Mapping[str, Sequence[float]] | None = None) -> TargetChoice:
    """Point and posterior targets among the attainable ``(mu, sigma)`` at `tokens` training tokens.

    `draws` are flattened posterior draws ``{name: [S]}`` (None: point target only).  A law that
    ignores perplexity (``"data"``) has no preferred ``(mu, sigma)`` and is refused.  `box`
    (``{"mu": [lo, hi], "sigma": [lo, hi]}``, usually the range the law was fitted on) keeps the
    search where the law is not extrapolating; its intersection with the region must not be empty.
    """
    if law == "data":
        raise PplawError("the fit uses the data-only law, whose loss does not depend on (mu, sigma); "
                         "DOS needs a perplexity-aware ('ppl') fit or an explicit target")
    point_f = point_loss_fn(law, point_params, tokens)
    expected_f = None if draws is None else expected_loss_fn(law, draws, tokens)
    if box is not None:
        point_f = within_box(point_f, box)
        expected_f = None if expected_f is None else within_box(expected_f, box)
    try:
        mu, sigma, loss = minimise_over_region(region, point_f)
    except PplawError:
        if box is None:
            raise
        raise PplawError(f"no attainable (mu, sigma) inside the fitted range {dict(box)}; "
                         "pass --extrapolate to search the whole attainable region") from None
    point = Target(mu, sigma, loss, None if expected_f is None else float(expected_f(mu, sigma)[0]))
    posterior = None
    if expected_f is not None:
        mu_p, sigma_p, exp_p = minimise_over_region(region, expected_f)
        posterior = Target(mu_p, sigma_p, float(np.ravel(point_f(mu_p, sigma_p))[0]), exp_p)
    return TargetChoice(point=point, posterior=posterior, tokens=int(tokens))
