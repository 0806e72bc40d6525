"""Synthetic runs from known law parameters, for tests, benchmarks and checking a setup end to end.

`ppl_params_with_optimum` builds perplexity-aware parameters whose loss surface has its minimum at
a chosen interior ``(mu*, sigma*)`` (solving the two stationarity equations for ``alpha0`` and
``beta0``), so a test knows the true optimum exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pplaw_jax.law.forms import predict_loss
from pplaw_jax.moments import columns


def ppl_params_with_optimum(
    mu_star: float = 20.0,
    sigma_star: float = 8.0,
    alpha1: float = -0.01,
    beta1: float = -0.004,
    alphaD: float = 0.3,
    E: float = 1.8,
    excess: float = 0.4,
    tokens_at_excess: float = 1e8,
) -> dict[str, float]:
    """Parameters with ``grad_(mu, sigma) L = 0`` at ``(mu*, sigma*)`` and ``L - E = excess`` there
    at `tokens_at_excess`.  With ``alpha1, beta1 < 0`` and small enough magnitudes it is a minimum."""
    alpha0 = -alpha1 * sigma_star - beta1 * mu_star * np.log(sigma_star)
    beta0 = -beta1 * mu_star - alpha1 * sigma_star * np.log(mu_star)
    g = -(alpha0 + alpha1 * sigma_star) * np.log(mu_star) - (beta0 + beta1 * mu_star) * np.log(sigma_star)
    log_dc = np.log(excess) + alphaD * np.log(tokens_at_excess) - g
    return {
        "E": float(E),
        "Dc": float(np.exp(log_dc)),
        "alpha0": float(alpha0),
        "alpha1": float(alpha1),
        "beta0": float(beta0),
        "beta1": float(beta1),
        "alphaD": float(alphaD),
    }


TRUE_PPL = ppl_params_with_optimum()
TRUE_DATA = {"E": 1.8, "B": 400.0, "beta": 0.3}


def sample_inputs(
    n: int, rng: np.random.Generator, mu_range=(5.0, 60.0), sigma_range=(1.5, 40.0), tokens_range=(1e6, 1e9)
):
    """``n`` points log-uniform in each of mu, sigma, tokens (independently)."""

    def logu(r):
        return np.exp(rng.uniform(np.log(r[0]), np.log(r[1]), n))

    return logu(mu_range), logu(sigma_range), logu(tokens_range)


def synthetic_runs(
    law: str = "ppl", params=None, n: int = 48, noise: float = 0.01, seed: int = 0, **ranges
) -> pd.DataFrame:
    """A runs table (``run_id, mu_ppl, sigma_ppl, tokens, loss``, plus the noise-free ``loss_true``;
    write it with `pplaw_jax.fit.runs_table.write_runs_table`):
    ``loss = L(mu, sigma, D) * exp(noise * N(0, 1))``, i.e. Gaussian noise on log-loss.  The
    moments are the ``ppl`` kind, the default of ``pplaw fit``."""
    params = params or (TRUE_PPL if law == "ppl" else TRUE_DATA)
    rng = np.random.default_rng(seed)
    mu, sigma, tokens = sample_inputs(n, rng, **ranges)
    true = predict_loss(law, params, mu, sigma, tokens)
    loss = true * np.exp(noise * rng.standard_normal(n))
    mu_col, sigma_col = columns("ppl")
    return pd.DataFrame(
        {
            "run_id": [f"r{i:03d}" for i in range(n)],
            mu_col: mu,
            sigma_col: sigma,
            "tokens": tokens,
            "loss": loss,
            "loss_true": true,
        }
    )
