"""The law-guided target: the supported, attainable ``(mu, sigma)`` with the least predicted loss,
chosen only when the fit locates an interior optimum.

Feasible set.  A target must be *attainable* (a subset of the budget's tokens can have it: the
`AttainableRegion`) and *supported* (inside the fitted runs' convex hull in the fit's
coordinates, widened by the trust margin: `law.region.SupportRegion`).  The per-axis box of the
runs is not enough: its empty corners are where no run has been, and the committed cpu_tiny
study selected there and lost to random.

Targets over the same feasible set (`law.optimum.FeasibleGrid`, refined locally):

* ``point``: minimise ``predict_loss(law, point_params, mu, sigma, D)`` (the paper's target);
* ``posterior`` (uncertainty-aware): minimise the posterior expected loss
  ``mean_s predict_loss(law, draw_s, mu, sigma, D)`` over the fit's draws.

``D`` is the token budget.  A candidate whose loss is not finite (a draw that overflows there) is
never chosen.

Interior-optimum check.  Each draw's argmin over the feasible set is located; when more than
`max_boundary_fraction` (default 0.2) of them lie on the *edge of the runs* (a neighbour the
corpus could supply but no run supports, `law.optimum`), the optimum is somewhere the data do not
reach: `choose_target` raises `NoInteriorOptimum` (the CLI exits 2, writes refused.json and says
where to add runs) unless ``allow_boundary``.  An argmin on the *edge of the corpus* inside the
runs' support is a valid answer (e.g. "drop the noisy tail": as far as the corpus allows, where
runs have been) and is reported as such (``fraction_at_corpus_edge``).  The draws are the
posterior's, or for a point-only fit its bootstrap refits.

Every refusal is a `Refusal` (a PplawError with a JSON-ready ``details`` record for refused.json):
no interior optimum, a law that failed its lack-of-fit test, or a law that ignores perplexity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pplaw_jax.config import MAX_BOUNDARY_FRACTION
from pplaw_jax.errors import PplawError
from pplaw_jax.law import get_law, predict_loss
from pplaw_jax.law.optimum import FeasibleGrid
from pplaw_jax.law.region import AttainableRegion, SupportRegion

_BLOCK = 1_000_000  # draws x candidates per predict_loss call (bounds its temporaries)


class Refusal(PplawError):
    """The fit gives no supported recommendation; ``details`` is the JSON-ready record (with a
    ``refused`` reason) that the CLI writes to ``refused.json``."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


class NoInteriorOptimum(Refusal):
    """The fit's argmin lies on the edge of the runs' support (inside what the corpus can supply)
    in too many draws."""


@dataclass(frozen=True)
class Target:
    """A chosen target and what the law predicts there (``expected_loss`` is None without draws)."""

    mu: float
    sigma: float
    point_loss: float
    expected_loss: float | None
    at_boundary: bool

    def as_dict(self) -> dict:
        return {
            "mu": self.mu,
            "sigma": self.sigma,
            "point_loss": self.point_loss,
            "expected_loss": self.expected_loss,
            "at_boundary": self.at_boundary,
        }


@dataclass(frozen=True)
class TargetChoice:
    """Point-estimate and (when draws exist) posterior-expected-loss targets for one budget, with
    the interior-optimum check."""

    point: Target
    posterior: Target | None
    tokens: int
    interior: dict

    def get(self, kind: str) -> Target:
        if kind == "point":
            return self.point
        if kind == "posterior":
            if self.posterior is None:
                raise PplawError(
                    "--target posterior needs a fit with a Bayesian posterior (posterior.nc); use --target point"
                )
            return self.posterior
        raise PplawError(f"unknown target kind {kind!r}; choose 'posterior' or 'point'")

    def as_dict(self) -> dict:
        out = {
            "tokens": self.tokens,
            "point": self.point.as_dict(),
            "posterior": None if self.posterior is None else self.posterior.as_dict(),
            "interior": self.interior,
        }
        if self.posterior is not None:
            point_loss, posterior_loss = self.point.expected_loss, self.posterior.expected_loss
            # a posterior target comes with draws, so both targets have an expected loss
            assert point_loss is not None and posterior_loss is not None
            out["expected_loss_gap"] = point_loss - posterior_loss
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
                loss = predict_loss(law, cols, mu[None, s : s + block], sigma[None, s : s + block], tokens)
            loss = np.where(np.isfinite(loss), loss, np.inf)
            out[s : s + block] = loss.mean(axis=0)
        return out

    return f


def feasible_grid(region: AttainableRegion, support: SupportRegion) -> FeasibleGrid:
    """The search grid over the attainable points that the runs support."""
    (m_lo, m_hi), (s_lo, s_hi) = support.bounds()
    r_sig = np.concatenate([region.window_sigma, region.extremes_sigma])
    r_sig = r_sig[r_sig > 0]
    if r_sig.size == 0:
        raise PplawError("every attainable subset has sigma 0 (all chunks share one value)")
    mu_range = (max(m_lo, region.mu_min), min(m_hi, region.mu_max))
    sigma_range = (max(s_lo, float(r_sig.min())), min(s_hi, float(r_sig.max())))
    if not (mu_range[0] < mu_range[1] and sigma_range[0] < sigma_range[1]):
        raise PplawError(
            "the supported region of the fitted runs and the (mu, sigma) this landscape "
            "can supply at the budget do not overlap"
        )
    return FeasibleGrid(mu_range, sigma_range, support.contains, region.contains)


def choose_target(
    region: AttainableRegion,
    law: str,
    point_params: Mapping[str, float],
    draws: Mapping[str, np.ndarray] | None,
    tokens: int,
    support: SupportRegion,
    *,
    draws_source: str = "posterior",
    max_boundary_fraction: float = MAX_BOUNDARY_FRACTION,
    allow_boundary: bool = False,
) -> TargetChoice:
    """Point and posterior targets among the supported, attainable ``(mu, sigma)`` at `tokens`.

    `draws` are flattened draws ``{name: [S]}`` (posterior, or bootstrap refits with
    ``draws_source="bootstrap"``); with None the interior check uses the point estimate alone and
    there is no posterior target.
    ``posterior`` is only computed for ``draws_source="posterior"``.  Raises `NoInteriorOptimum`
    when more than `max_boundary_fraction` of the draws have their argmin on the feasible set's
    edge, unless `allow_boundary`.  A law that ignores perplexity (``"data"``) is refused.
    """
    form = get_law(law)
    if not form.uses_perplexity:
        raise Refusal(
            "the fit's law is the data-only law: loss does not depend on (mu, sigma) here, so no "
            "perplexity target beats random; DOS needs a perplexity-aware fit or an explicit target",
            {"refused": "law ignores perplexity", "law": law},
        )
    grid = feasible_grid(region, support)
    point_f = point_loss_fn(law, point_params, tokens)
    mu, sigma, loss, edge = grid.minimise(point_f)
    expected_f = None if draws is None else expected_loss_fn(law, draws, tokens)
    point = Target(mu, sigma, loss, None if expected_f is None else float(expected_f(mu, sigma)[0]), edge)
    posterior = None
    if expected_f is not None and draws_source == "posterior":
        mu_p, sigma_p, exp_p, edge_p = grid.minimise(expected_f)
        posterior = Target(mu_p, sigma_p, float(np.ravel(point_f(mu_p, sigma_p))[0]), exp_p, edge_p)
    interior: dict[str, Any] = {
        "max_boundary_fraction": max_boundary_fraction,
        "allow_boundary": allow_boundary,
        "support": support.to_json(),
    }
    if draws is None:  # no draws: the point estimate's own argmin is the whole evidence
        interior.update(
            draws=1, source="point", fraction_at_boundary=float(point.at_boundary), fraction_at_corpus_edge=None
        )
    else:
        log_e, theta = form.from_params({k: np.asarray(draws[k], dtype=float) for k in form.param_names})
        opt = grid.argmin_draws(form, log_e, theta, tokens)
        interior.update(
            draws=int(len(log_e)),
            source=draws_source,
            fraction_at_boundary=float(np.mean(opt["at_boundary"])),
            fraction_at_corpus_edge=float(np.mean(opt["at_corpus_edge"])),
            argmin_mu_q05_q95=np.quantile(opt["mu"], [0.05, 0.95]).tolist(),
            argmin_sigma_q05_q95=np.quantile(opt["sigma"], [0.05, 0.95]).tolist(),
        )
    choice = TargetChoice(point=point, posterior=posterior, tokens=int(tokens), interior=interior)
    frac = interior["fraction_at_boundary"]
    if frac > max_boundary_fraction and not allow_boundary:
        best = posterior or point
        raise NoInteriorOptimum(
            f"no interior optimum: {100 * frac:.0f}% of the {interior['draws']} {draws_source} draws put "
            f"the law's argmin on the edge of the region the runs support (their hull + trust margin "
            f"{support.margin:g}) where {int(tokens)} tokens of this landscape could go further "
            f"(threshold {100 * max_boundary_fraction:.0f}%): the optimum lies beyond the runs. Best "
            f"supported point: mu={best.mu:.4g}, sigma={best.sigma:.4g} (predicted loss "
            f"{best.expected_loss or best.point_loss:.4g}). Add CPT runs beyond that edge (`pplaw "
            "propose`) and refit, or pass --allow-boundary to select there anyway",
            {"refused": "no interior optimum", **choice.as_dict()},
        )
    return choice
