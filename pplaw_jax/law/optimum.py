"""The loss-minimising ``(mu*, sigma*)`` inside a feasible set, per parameter draw, and whether
it is interior.

A law of the registry is ``L = E + exp(features(mu, sigma, D) @ theta)``, so for a fixed token count
the minimiser of ``L`` is the minimiser of ``features @ theta`` whatever ``E`` is.  For the
perplexity-aware law the ``log D`` term is additive, so the optimum does not depend on ``D`` at all
(only the loss reached there does); ``tokens_ref`` is used for the reported loss.

The feasible set is where a target may go: the runs' supported region (`region.SupportRegion`)
and, at selection time, also the ``(mu, sigma)`` the landscape can supply at the budget (the
*attainable* region, `region.AttainableRegion`).  It is represented by `FeasibleGrid`: a log-spaced
``n x n`` grid over its
bounding box with a mask of the feasible cells.  A feasible cell has two kinds of edge, told apart
by its four neighbours (evaluated one step beyond the box too):

* the **edge of the runs** (``boundary``): a neighbour the corpus could supply but no run supports.
  An argmin there is extrapolation: the law says "go further" where it has no evidence;
* the **edge of the corpus** (``corpus_edge``): every infeasible neighbour is unattainable. An
  argmin there, inside the runs' support, is a valid answer ("drop the noisy tail": the best
  subset is as far as the corpus allows, and runs reach that far).

Without an attainable region (at fit time) every edge is an edge of the runs.  Each draw's argmin
is taken over the feasible cells (one matrix product per chunk of draws); the share of draws whose
argmin is on the edge of the runs is the interior-optimum check: a surface whose optimum lies
beyond the runs puts (most) draws' argmins there.  A single target (point estimate or posterior
expected loss) is refined by a finer local grid around its best cell, kept inside the feasible set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.law.forms import LawForm

CHUNK = 256
GRID = 121
REFINE = 21
MAX_KDE_DRAWS = 2000  # the region's KDE uses the first draws only (KDE cost is quadratic)


class FeasibleGrid:
    """A log-spaced grid over ``mu_range x sigma_range``, the mask of the feasible cells
    (`supported` and, if given, `attainable`) and their two kinds of edge (module doc)."""

    def __init__(self, mu_range, sigma_range, supported: Callable, attainable: Callable | None = None, n: int = GRID):
        (mu_lo, mu_hi), (s_lo, s_hi) = mu_range, sigma_range
        if not (0 < mu_lo < mu_hi and 0 < s_lo < s_hi):
            raise PplawError(
                f"feasible set is empty or degenerate: mu in {list(mu_range)}, sigma in {list(sigma_range)}"
            )
        self.log_step = (np.log(mu_hi / mu_lo) / (n - 1), np.log(s_hi / s_lo) / (n - 1))
        self.feasible_fn = supported if attainable is None else (lambda m, s: supported(m, s) & attainable(m, s))
        self.mus, self.sigmas = np.geomspace(mu_lo, mu_hi, n), np.geomspace(s_lo, s_hi, n)
        # the masks on the grid padded by one step on every side, so the box's own edge is classified too
        pad_mu = np.exp(np.log(mu_lo) + self.log_step[0] * np.arange(-1, n + 1))
        pad_s = np.exp(np.log(s_lo) + self.log_step[1] * np.arange(-1, n + 1))
        mg, sg = np.meshgrid(pad_mu, pad_s, indexing="ij")
        sup = np.asarray(supported(mg.ravel(), sg.ravel()), dtype=bool).reshape(n + 2, n + 2)
        att = (
            np.ones_like(sup)
            if attainable is None
            else np.asarray(attainable(mg.ravel(), sg.ravel()), dtype=bool).reshape(n + 2, n + 2)
        )
        feas = sup & att
        mask = feas[1:-1, 1:-1]
        if not mask.any():
            raise PplawError(
                "the feasible set holds no point of the search grid (the supported "
                "region and the attainable region do not overlap)"
            )
        beyond_runs = att & ~sup  # the corpus has it, the runs do not reach it
        neighbours = (
            (slice(None, -2), slice(1, -1)),
            (slice(2, None), slice(1, -1)),
            (slice(1, -1), slice(None, -2)),
            (slice(1, -1), slice(2, None)),
        )
        runs_edge = np.zeros_like(mask)
        any_infeasible = np.zeros_like(mask)
        for nb in neighbours:
            runs_edge |= beyond_runs[nb]
            any_infeasible |= ~feas[nb]
        self.mu, self.sigma = mg[1:-1, 1:-1].ravel(), sg[1:-1, 1:-1].ravel()
        self.mus, self.sigmas = pad_mu[1:-1], pad_s[1:-1]
        self.mask = mask.ravel()
        self.boundary = (mask & runs_edge).ravel()  # the edge of the runs: the interior check's edge
        self.corpus_edge = (mask & any_infeasible & ~runs_edge).ravel()

    def argmin_draws(self, form: LawForm, log_e, theta, tokens_ref: float) -> dict[str, np.ndarray]:
        """For each of the S draws (``log_e[S]``, ``theta[S, k]``): ``mu``, ``sigma``, ``loss`` (at
        `tokens_ref`) of its least loss over the feasible cells, ``at_boundary`` (on the edge of the
        runs) and ``at_corpus_edge``."""
        log_e, theta = np.atleast_1d(log_e), np.atleast_2d(theta)
        feats = form.features(self.mu[self.mask], self.sigma[self.mask], tokens_ref, np)
        cells = np.flatnonzero(self.mask)
        best = np.empty(len(theta), dtype=np.int64)
        best_ex = np.empty(len(theta))
        for lo in range(0, len(theta), CHUNK):
            with np.errstate(over="ignore", invalid="ignore"):
                ex = theta[lo : lo + CHUNK] @ feats.T
            ex = np.where(np.isfinite(ex), ex, np.inf)
            i = np.argmin(ex, axis=1)
            best[lo : lo + CHUNK] = cells[i]
            best_ex[lo : lo + CHUNK] = ex[np.arange(len(i)), i]
        return {
            "mu": self.mu[best],
            "sigma": self.sigma[best],
            "loss": np.exp(np.logaddexp(log_e, best_ex)),
            "at_boundary": self.boundary[best],
            "at_corpus_edge": self.corpus_edge[best],
        }

    def minimise(self, loss: Callable) -> tuple[float, float, float, bool]:
        """``(mu, sigma, loss, at_boundary)`` of the least `loss(mu, sigma)` over the feasible set:
        the best feasible cell, then a finer grid spanning one cell around it (feasible points only)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            values = np.where(self.mask, np.asarray(loss(self.mu, self.sigma), dtype=float), np.inf)
        values = np.where(np.isfinite(values), values, np.inf)
        i = int(np.argmin(values))
        if not np.isfinite(values[i]):
            raise PplawError("the law predicts no finite loss anywhere in the feasible set")
        off = np.linspace(-1.0, 1.0, REFINE)
        lm = np.log(self.mu[i]) + self.log_step[0] * off
        ls = np.log(self.sigma[i]) + self.log_step[1] * off
        mu_f, s_f = np.exp(np.repeat(lm, REFINE)), np.exp(np.tile(ls, REFINE))
        ok = np.asarray(self.feasible_fn(mu_f, s_f), dtype=bool)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            fine = np.where(ok, np.asarray(loss(mu_f, s_f), dtype=float), np.inf)
        fine = np.where(np.isfinite(fine), fine, np.inf)
        j = int(np.argmin(fine))
        if fine[j] < values[i]:
            return float(mu_f[j]), float(s_f[j]), float(fine[j]), bool(self.boundary[i])
        return float(self.mu[i]), float(self.sigma[i]), float(values[i]), bool(self.boundary[i])


def _quantiles(x) -> dict[str, float]:
    x = np.asarray(x, dtype=float)
    return {
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "q05": float(np.quantile(x, 0.05)),
        "q50": float(np.quantile(x, 0.5)),
        "q95": float(np.quantile(x, 0.95)),
    }


def credible_region(mu, sigma, mu_range, sigma_range, level: float = 0.9) -> dict:
    """Highest-density region of the ``(mu*, sigma*)`` draws holding `level` of them.

    A Gaussian KDE in log coordinates is evaluated at the draws; the density threshold is the
    ``1 - level`` quantile of those values, and the region is that KDE contour (one or more closed
    polygons, clipped to the box).  If the draws are (nearly) a single point, e.g. all on one corner
    of the box, the region is the rectangle of their marginal quantiles instead.
    """
    import contourpy
    from scipy.stats import gaussian_kde

    x, y = np.log(mu)[:MAX_KDE_DRAWS], np.log(sigma)[:MAX_KDE_DRAWS]
    qlo, qhi = (1 - level) / 2, 1 - (1 - level) / 2
    rect = {
        "level": level,
        "method": "marginal quantile rectangle (draws nearly degenerate)",
        "polygons": [_rectangle(np.quantile(mu, [qlo, qhi]), np.quantile(sigma, [qlo, qhi]))],
    }
    if x.size < 10 or np.std(x) < 1e-6 or np.std(y) < 1e-6:
        return rect
    try:
        kde = gaussian_kde(np.vstack([x, y]))
    except np.linalg.LinAlgError:
        return rect
    threshold = np.quantile(kde(np.vstack([x, y])), 1 - level)
    pad_x, pad_y = 0.25 * np.ptp(x) + 1e-3, 0.25 * np.ptp(y) + 1e-3
    gx = np.linspace(x.min() - pad_x, x.max() + pad_x, 120)
    gy = np.linspace(y.min() - pad_y, y.max() + pad_y, 120)
    gxx, gyy = np.meshgrid(gx, gy)
    dens = kde(np.vstack([gxx.ravel(), gyy.ravel()])).reshape(gxx.shape)
    # the default line_type (LineType.Separate) returns one [N, 2] array per line
    lines = cast("list[np.ndarray]", contourpy.contour_generator(gx, gy, dens).lines(threshold))
    polygons = []
    for line in lines:
        if len(line) < 3:
            continue
        pts = np.column_stack([np.clip(np.exp(line[:, 0]), *mu_range), np.clip(np.exp(line[:, 1]), *sigma_range)])
        keep = np.concatenate([[True], np.any(np.diff(pts, axis=0) != 0, axis=1)])  # clipping repeats vertices
        if keep.sum() >= 3:
            polygons.append(pts[keep].tolist())
    if not polygons:
        return rect
    return {"level": level, "method": "KDE highest-density contour in log(mu), log(sigma)", "polygons": polygons}


def _rectangle(mr, sr):
    return [[mr[0], sr[0]], [mr[1], sr[0]], [mr[1], sr[1]], [mr[0], sr[1]], [mr[0], sr[0]]]


def optimum_summary(
    opt: dict, tokens_ref, bounds: tuple[tuple[float, float], tuple[float, float]], level: float = 0.9
) -> dict:
    """fit.json block for the optimum of many draws: marginal summaries, the share at the feasible
    set's boundary and the credible region (`bounds` = ``(mu_range, sigma_range)`` to clip it to)."""
    return {
        "tokens_ref": float(tokens_ref),
        "mu": _quantiles(opt["mu"]),
        "sigma": _quantiles(opt["sigma"]),
        "loss_at_tokens_ref": _quantiles(opt["loss"]),
        "fraction_at_boundary": float(np.mean(opt["at_boundary"])),
        "fraction_at_corpus_edge": float(np.mean(opt["at_corpus_edge"])),
        "credible_region": credible_region(opt["mu"], opt["sigma"], *bounds, level),
        "note": "the optimum (mu*, sigma*) does not depend on D; the loss there is given at tokens_ref",
    }
