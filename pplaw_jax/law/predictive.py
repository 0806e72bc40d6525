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

from pplaw_jax.errors import PplawError
from pplaw_jax.law.forms import predict_loss


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
        if likelihood == "normal":
            eps = rng.standard_normal(loss.shape)
        elif student_df is None:
            raise PplawError(f"predictive: likelihood {likelihood!r} needs student_df (got None)")
        else:
            eps = rng.standard_t(student_df, loss.shape)
        measured = loss * np.exp(np.asarray(noise)[:, None] * eps)
        out["pi_lo"] = np.quantile(measured, a, axis=0)
        out["pi_hi"] = np.quantile(measured, 1 - a, axis=0)
    return out
