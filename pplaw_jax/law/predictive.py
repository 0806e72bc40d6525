"""Predictions with uncertainty at arbitrary ``(mu, sigma, tokens)`` points.

Two intervals, both central with probability `level`:

* ``ci``: credible interval of the law's loss ``L(mu, sigma, D)`` (parameter uncertainty only;
  from posterior draws, or from bootstrap refits for a point-only fit);
* ``pi``: posterior predictive interval of a *measured* loss of a new run, ``L * exp(noise*eps)``
  with ``eps`` from the fit's likelihood (Normal or Student-t), so it adds run-to-run noise.
  Only with a Bayesian fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pplaw_jax.law.forms import predict_loss
from pplaw_jax.law.io import Fit


def draws_predict(law: str, draws: dict, mu, sigma, tokens) -> np.ndarray:
    """``[S, N]`` loss of each parameter draw at each of the N points."""
    return predict_loss(
        law, {k: np.asarray(v)[:, None] for k, v in draws.items()}, mu[None, :], sigma[None, :], tokens[None, :]
    )


def predictive(
    law: str,
    draws: dict,
    noise: np.ndarray | None,
    likelihood: str,
    student_df: float | None,
    mu,
    sigma,
    tokens,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Mean, ``ci_lo/ci_hi`` and (when `noise` is given) ``pi_lo/pi_hi`` at the points."""
    mu, sigma, tokens = (np.atleast_1d(np.asarray(a, dtype=float)) for a in np.broadcast_arrays(mu, sigma, tokens))
    loss = draws_predict(law, draws, mu, sigma, tokens)
    a = (1 - level) / 2
    out = {
        "mean": loss.mean(axis=0),
        "ci_lo": np.quantile(loss, a, axis=0),
        "ci_hi": np.quantile(loss, 1 - a, axis=0),
    }
    if noise is not None:
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal(loss.shape) if likelihood == "normal" else rng.standard_t(student_df, loss.shape)
        measured = loss * np.exp(np.asarray(noise)[:, None] * eps)
        out["pi_lo"] = np.quantile(measured, a, axis=0)
        out["pi_hi"] = np.quantile(measured, 1 - a, axis=0)
    return out


def predict_table(fit: Fit, mu, sigma, tokens, level: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """One row per point: the point-fit loss, and the posterior (or bootstrap) mean and intervals."""
    if fit.law == "data":
        mu = np.nan if mu is None else mu
        sigma = np.nan if sigma is None else sigma
    mu, sigma, tokens = (np.atleast_1d(np.asarray(a, dtype=float)) for a in np.broadcast_arrays(mu, sigma, tokens))
    table = pd.DataFrame({"mu": mu, "sigma": sigma, "tokens": tokens})
    table["loss_point"] = predict_loss(fit.law, fit.point_params, mu, sigma, tokens)
    draws = fit.posterior_draws()
    if draws is not None:
        likelihood, df = fit.likelihood
        pred = predictive(fit.law, draws, fit.noise_draws(), likelihood, df, mu, sigma, tokens, level, seed)
        source = "posterior"
    else:
        draws = fit.bootstrap_draws()
        if draws is None:
            table["interval_source"] = "none"
            return table
        pred = predictive(fit.law, draws, None, "normal", None, mu, sigma, tokens, level, seed)
        source = "bootstrap"
    table["loss_mean"] = pred["mean"]
    table["ci_lo"], table["ci_hi"] = pred["ci_lo"], pred["ci_hi"]
    if "pi_lo" in pred:
        table["pi_lo"], table["pi_hi"] = pred["pi_lo"], pred["pi_hi"]
    table["interval_source"] = source
    return table
