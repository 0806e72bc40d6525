"""A space-filling 2-D design of law-fitting subsets, realised by the selector the final step uses.

Why.  Contiguous perplexity windows move ``mu`` and ``sigma`` together (corr 0.68 and feature
VIFs of 24-70 on the committed cpu_tiny grid) and spend two thirds of the runs on repeated token
counts, which cannot move the law's argmin.  A design instead spreads the runs over the region of
``(mu, sigma)`` the landscape can supply and over the token budgets at once:

* Region: each run's target lies in the `AttainableRegion` of the landscape at *its own* budget,
  in the fit's coordinates ``log mu`` and ``log sigma``: ``mu`` log-spaced over its range and, at
  each ``mu``, ``sigma`` log-spaced between its least and most attainable value, both with an
  inset (default 5% of each unit coordinate) so no target sits on the region's edge.  A smaller
  budget can draw a narrower band (a smaller ``sigma``) than a larger one, so the small runs reach
  the edge of what the corpus can supply at the final budget, which lies between them: an optimum
  there ("drop the tail") is then inside the runs' support, not beyond it.
* Space filling: a maximin Latin hypercube over (``mu`` coordinate, ``sigma`` coordinate, budget
  level): among `candidates` random Latin hypercubes (budget levels assigned in equal shares), the
  one whose smallest pairwise distance in standardised ``(log mu, log sigma, log D)`` is largest,
  preferring those with ``|corr(log mu, log sigma)| <= 0.3``.  Every run has its own
  ``(mu, sigma)``: none is spent repeating a point at another budget.
* Replicated centre points: `n_centre` runs at the region's centre and the middle budget, each
  with its own seed (a re-drawn subset with a stochastic selector, and another training seed),
  so run-to-run noise is measured rather than absorbed into lack of fit.

Each target is realised as a subset by the selector the final selection uses (`tilted` or the
two-band `bands` DOS), so the law is fitted on the same family of subsets it later selects from:
two moments do not pin a subset down.  The realised (exact) moments, not the targets, are what the
runs record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.law.collinearity import collinearity
from pplaw_jax.law.region import AttainableRegion
from pplaw_jax.select.core import Selection
from pplaw_jax.select.dos import RankedLandscape
from pplaw_jax.select.selectors import SELECTORS, select_target
from pplaw_jax.select.windows import format_budget

MIN_BUDGET_SPAN = 16.0
MIN_DESIGN_CHUNKS = 3  # a subset of fewer chunks has no meaningful sigma
MAX_ABS_CORR = 0.3


@dataclass(frozen=True)
class DesignPoint:
    """One run of the design: its name, group (runs left out together), budget and target.

    ``replicate`` is 0 for space-filling points and ``1..n_centre`` for centre replicates;
    ``seed`` is the offset added to the study seed for this run's subset and training.
    """

    name: str
    group: str
    budget: int
    replicate: int
    seed: int
    target_mu: float
    target_sigma: float


def unit_to_region(region: AttainableRegion, u_mu, u_sigma, inset: float) -> tuple[np.ndarray, np.ndarray]:
    """Map unit coordinates to ``(mu, sigma)``: log-spaced ``mu`` over the region's range and
    log-spaced ``sigma`` between its bounds at that ``mu``, each unit coordinate inset by `inset`."""
    u_mu = inset + (1 - 2 * inset) * np.asarray(u_mu, dtype=float)
    u_sigma = inset + (1 - 2 * inset) * np.asarray(u_sigma, dtype=float)
    mu = np.exp(np.log(region.mu_min) + u_mu * (np.log(region.mu_max) - np.log(region.mu_min)))
    lo, hi = region.sigma_bounds(mu)
    lo = np.maximum(lo, 1e-12)
    hi = np.maximum(hi, lo)
    return mu, np.exp(np.log(lo) + u_sigma * (np.log(hi) - np.log(lo)))


def design_targets(
    regions: dict[int, AttainableRegion],
    budgets,
    n: int,
    n_centre: int = 3,
    seed: int = 0,
    inset: float = 0.05,
    candidates: int = 2000,
) -> tuple[list[DesignPoint], dict]:
    """The design's points (space-filling first, then the centre replicates) and a record of how
    they were chosen (criterion value, correlation of the targets); `regions` maps each budget to
    the region its runs' targets come from."""
    budgets = sorted({int(b) for b in budgets})
    if n - n_centre < 2:
        raise PplawError(f"--n {n} with --centre {n_centre}: need at least 2 space-filling points")
    if n_centre < 0:
        raise PplawError(f"--centre {n_centre}: must be >= 0")
    if len(budgets) < 2 or budgets[-1] / budgets[0] < MIN_BUDGET_SPAN:
        raise PplawError(
            f"--budgets {' '.join(map(str, budgets))}: the design needs budgets spanning "
            f"at least {MIN_BUDGET_SPAN:g}x (largest / smallest) so the law's D exponent is identified"
        )
    if not 0 <= inset < 0.5:
        raise PplawError(f"inset {inset}: must be in [0, 0.5)")
    m = n - n_centre
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xD351]))
    log_b = np.log(budgets)
    # standardisation of the criterion's coordinates: the regions' log ranges and the budgets' span
    grid = np.meshgrid(np.linspace(0, 1, 21), np.linspace(0, 1, 21))
    corners = np.concatenate([np.stack(unit_to_region(regions[b], *grid, inset)).reshape(2, -1) for b in budgets], 1)
    span = np.array([np.ptp(np.log(corners[0])), np.ptp(np.log(corners[1])), np.ptp(log_b)])
    span = np.where(span > 0, span, 1.0)

    def targets(u_mu, u_sig, level):
        mu, sigma = np.empty(u_mu.size), np.empty(u_mu.size)
        for k, b in enumerate(budgets):
            at = level == k
            mu[at], sigma[at] = unit_to_region(regions[b], u_mu[at], u_sig[at], inset)
        return mu, sigma

    best, best_key = None, None
    for _ in range(candidates):
        u_mu = (rng.permutation(m) + rng.random(m)) / m
        u_sig = (rng.permutation(m) + rng.random(m)) / m
        level = rng.permutation(np.resize(np.arange(len(budgets)), m))
        mu, sigma = targets(u_mu, u_sig, level)
        pts = np.column_stack([np.log(mu), np.log(sigma), log_b[level]]) / span
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
        min_d = float(d[np.triu_indices(m, 1)].min())
        corr = float(np.corrcoef(np.log(mu), np.log(sigma))[0, 1])
        key = (abs(corr) <= MAX_ABS_CORR, min_d)
        if best_key is None or key > best_key:
            best, best_key = (mu, sigma, level, corr), key
    if best is None or best_key is None:
        raise PplawError(f"candidates {candidates}: must be >= 1")
    mu, sigma, level, corr = best
    width = len(str(m - 1))
    points = [
        DesignPoint(
            f"p{i:0{width}d}_b{format_budget(budgets[level[i]])}",
            f"p{i:0{width}d}",
            budgets[level[i]],
            0,
            i,
            float(mu[i]),
            float(sigma[i]),
        )
        for i in range(m)
    ]
    mid = budgets[len(budgets) // 2]
    c_mu, c_sigma = unit_to_region(regions[mid], np.array([0.5]), np.array([0.5]), inset)
    points += [
        DesignPoint(f"c{k}_b{format_budget(mid)}", "centre", mid, k, m + k - 1, float(c_mu[0]), float(c_sigma[0]))
        for k in range(1, n_centre + 1)
    ]
    record = {
        "criterion": "maximin distance in standardised (log mu, log sigma, log D)",
        "min_distance": best_key[1],
        "targets_corr_log_mu_log_sigma": corr,
        "corr_constraint_met": bool(best_key[0]),
        "candidates": candidates,
        "inset": inset,
    }
    return points, record


def realise(
    selector: str, values: np.ndarray, n_tokens: np.ndarray, point: DesignPoint, seed: int, spaces: dict
) -> Selection:
    """The subset for one design point; `spaces` caches `RankedLandscape`s by budget (bands)."""
    return select_target(
        selector,
        values,
        n_tokens,
        point.budget,
        point.target_mu,
        point.target_sigma,
        seed=seed + point.seed,
        spaces=spaces,
    )


def build_design(
    values: np.ndarray,
    n_tokens: np.ndarray,
    budgets,
    n: int,
    n_centre: int = 3,
    selector: str = "tilted",
    seed: int = 0,
    inset: float = 0.05,
    candidates: int = 2000,
) -> tuple[list[DesignPoint], list[Selection], dict]:
    """Targets, realised subsets and diagnostics of a design over chunk `values`
    (``ppl`` or ``log ppl``, see `pplaw_jax.moments`)."""
    if selector not in SELECTORS:
        raise PplawError(f"--selector {selector!r}: expected one of {', '.join(SELECTORS)}")
    budgets = sorted({int(b) for b in budgets})
    total = int(np.sum(n_tokens))
    if budgets[-1] >= total:
        raise PplawError(
            f"--budgets: the largest budget {budgets[-1]} is not below the landscape's "
            f"{total} tokens; a design needs room to choose"
        )
    typical = float(np.median(n_tokens))
    if budgets[0] < MIN_DESIGN_CHUNKS * typical:
        raise PplawError(
            f"--budgets: the smallest budget {budgets[0]} holds about {budgets[0] / typical:.1f} chunks of "
            f"this landscape (median {typical:.0f} tokens); a subset's sigma needs at least "
            f"{MIN_DESIGN_CHUNKS} chunks: raise it to {int(np.ceil(MIN_DESIGN_CHUNKS * typical))} or more"
        )
    regions = {b: RankedLandscape(values, n_tokens, b).region for b in budgets}
    points, record = design_targets(regions, budgets, n, n_centre, seed, inset, candidates)
    spaces: dict = {}
    selections = [realise(selector, values, n_tokens, p, seed, spaces) for p in points]
    mu = np.array([s.mu for s in selections])
    sigma = np.array([s.sigma for s in selections])
    tokens = np.array([s.tokens for s in selections])
    diagnostics = {
        "targets": record,
        "realised": collinearity(mu, sigma, tokens),
        "max_distance_to_target": float(max(s.info["distance"] for s in selections)),
        "regions": {str(b): r.describe() for b, r in regions.items()},
    }
    return points, selections, diagnostics
