"""The loss-minimising ``(mu*, sigma*)`` inside a feasible box, per parameter draw.

A law of the registry is ``L = E + exp(features(mu, sigma, D) @ theta)``, so for a fixed token count
the minimiser of ``L`` is the minimiser of ``features @ theta`` whatever ``E`` is.  For the
perplexity-aware law the ``log D`` term is additive, so the optimum does not depend on ``D`` at all
(only the loss reached there does); ``tokens_ref`` is used for the reported loss.

Method, robust to the law's non-convexity and to optima on the box edge: a dense log-spaced grid
over the box evaluated for all draws at once (one matrix product per chunk of draws), then a finer
local grid around each draw's best cell.  The resolution is ``1/(grid*refine)`` of the box's log
width per axis (about 0.1% with the defaults).
"""

from __future__ import annotations

import numpy as np

from pplaw_jax.law.forms import LawForm

CHUNK = 256
MAX_KDE_DRAWS = 2000  # the region's KDE uses the first draws only (KDE cost is quadratic)


def _axis(lo, hi, n):
    return np.geomspace(lo, hi, n)


def minimise_over_box(
    form: LawForm,
    log_e: np.ndarray,
    theta: np.ndarray,
    mu_range: tuple[float, float],
    sigma_range: tuple[float, float],
    tokens_ref: float,
    *,
    grid: int = 161,
    refine: int = 21,
) -> dict[str, np.ndarray]:
    """For each of the S draws (``log_e[S]``, ``theta[S, k]``) return ``mu``, ``sigma``, ``loss``
    (at `tokens_ref`) of the minimum inside the box, and ``at_boundary`` (bool)."""
    log_e, theta = np.atleast_1d(log_e), np.atleast_2d(theta)
    mus, sigmas = _axis(*mu_range, grid), _axis(*sigma_range, grid)
    mg, sg = np.meshgrid(mus, sigmas, indexing="ij")
    feats = form.features(mg.ravel(), sg.ravel(), tokens_ref, np)  # [G, k]
    best_mu, best_sigma, best_ex = (np.empty(len(theta)) for _ in range(3))
    lmu, lsig = np.log(mu_range), np.log(sigma_range)
    step_mu, step_sig = np.diff(np.log(mus))[0], np.diff(np.log(sigmas))[0]
    offsets = np.linspace(-1.0, 1.0, refine)
    for lo in range(0, len(theta), CHUNK):
        th = theta[lo : lo + CHUNK]
        idx = np.argmin(th @ feats.T, axis=1)
        i, j = np.unravel_index(idx, mg.shape)
        # local grid: +-1 coarse cell around the best cell, clipped to the box (edges stay reachable)
        lm = np.clip(np.log(mus[i])[:, None] + step_mu * offsets, *lmu)
        ls = np.clip(np.log(sigmas[j])[:, None] + step_sig * offsets, *lsig)
        m_loc = np.exp(np.repeat(lm, refine, axis=1))
        s_loc = np.exp(np.tile(ls, (1, refine)))
        f_loc = form.features(m_loc, s_loc, tokens_ref, np)  # [c, refine^2, k]
        ex = np.einsum("cgk,ck->cg", f_loc, th)
        b = np.argmin(ex, axis=1)
        rows = np.arange(len(th))
        best_mu[lo : lo + CHUNK] = m_loc[rows, b]
        best_sigma[lo : lo + CHUNK] = s_loc[rows, b]
        best_ex[lo : lo + CHUNK] = ex[rows, b]
    at_boundary = (
        np.isclose(np.log(best_mu), lmu[0], atol=1e-9)
        | np.isclose(np.log(best_mu), lmu[1], atol=1e-9)
        | np.isclose(np.log(best_sigma), lsig[0], atol=1e-9)
        | np.isclose(np.log(best_sigma), lsig[1], atol=1e-9)
    )
    return {
        "mu": best_mu,
        "sigma": best_sigma,
        "loss": np.exp(np.logaddexp(log_e, best_ex)),
        "at_boundary": at_boundary,
    }


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
    lines = contourpy.contour_generator(gx, gy, dens).lines(threshold)
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


def optimum_summary(opt: dict, mu_range, sigma_range, tokens_ref, level: float = 0.9) -> dict:
    """fit.json block for the optimum of many draws: marginal summaries and the credible region."""
    return {
        "box": {"mu": list(map(float, mu_range)), "sigma": list(map(float, sigma_range))},
        "tokens_ref": float(tokens_ref),
        "mu": _quantiles(opt["mu"]),
        "sigma": _quantiles(opt["sigma"]),
        "loss_at_tokens_ref": _quantiles(opt["loss"]),
        "fraction_at_boundary": float(np.mean(opt["at_boundary"])),
        "credible_region": credible_region(opt["mu"], opt["sigma"], mu_range, sigma_range, level),
        "note": "the optimum (mu*, sigma*) does not depend on D; the loss there is given at tokens_ref",
    }


def point_optimum_summary(opt: dict, mu_range, sigma_range, tokens_ref) -> dict:
    """fit.json block for the optimum of a single parameter vector."""
    return {
        "box": {"mu": list(map(float, mu_range)), "sigma": list(map(float, sigma_range))},
        "tokens_ref": float(tokens_ref),
        "mu": float(opt["mu"][0]),
        "sigma": float(opt["sigma"][0]),
        "loss_at_tokens_ref": float(opt["loss"][0]),
        "at_boundary": bool(opt["at_boundary"][0]),
    }
