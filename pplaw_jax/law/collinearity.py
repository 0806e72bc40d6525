"""How well a set of runs can separate the law's inputs: correlation, VIFs, condition number.

A law can only be identified where its features vary independently over the runs.  Grid subsets
that are contiguous perplexity windows move ``mu`` and ``sigma`` together, so the perplexity
features of the paper's law become nearly collinear (variance inflation factors of 24-70 on the
committed cpu_tiny grid) and its argmin is not determined by the data.  These diagnostics are
written by ``pplaw select design`` for the design and by ``pplaw fit`` for the runs it fitted:

* ``corr_log_mu_log_sigma``: Pearson correlation of ``log mu`` and ``log sigma`` (the coordinates
  the law's features are built from);
* ``vif_main``: variance inflation factors of ``log mu, log sigma, log D`` (the main effects);
* ``vif_law``: VIFs of the paper's five non-constant features ``log mu, sigma log mu, log sigma,
  mu log sigma, log D`` (the interaction features are collinear with the main ones by
  construction when ``mu`` varies little relative to its mean, as log-perplexity means do);
* ``condition_number``: of the standardised paper's feature matrix (with intercept).

A VIF of ``1 / (1 - R^2)`` regresses one standardised feature on the others; infinite when a
feature is constant or an exact combination of the others.
"""

from __future__ import annotations

import numpy as np

MAIN_FEATURES = ("log_mu", "log_sigma", "log_D")
LAW_FEATURES = ("log_mu", "sigma_log_mu", "log_sigma", "mu_log_sigma", "log_D")


def vif(features: np.ndarray) -> np.ndarray:
    """Variance inflation factor of each column of ``[n, k]`` `features`."""
    x = np.asarray(features, dtype=float)
    sd = x.std(axis=0)
    out = np.full(x.shape[1], np.inf)
    for j in range(x.shape[1]):
        if sd[j] == 0:
            continue
        others = np.delete(x, j, axis=1)
        a = np.column_stack([np.ones(len(x)), others])
        coef, *_ = np.linalg.lstsq(a, x[:, j], rcond=None)
        resid = x[:, j] - a @ coef
        r2 = 1.0 - resid.var() / x[:, j].var()
        out[j] = np.inf if r2 >= 1.0 - 1e-12 else 1.0 / (1.0 - r2)
    return out


def collinearity(mu, sigma, tokens) -> dict:
    """The diagnostics of the module docstring for runs at ``(mu, sigma, tokens)``."""
    mu, sigma, tokens = (np.asarray(a, dtype=float) for a in (mu, sigma, tokens))
    lm, ls, ld = np.log(mu), np.log(sigma), np.log(tokens)
    main = np.column_stack([lm, ls, ld])
    law = np.column_stack([lm, sigma * lm, ls, mu * ls, ld])
    sd = law.std(axis=0)
    z = np.column_stack([np.ones(len(mu)), (law - law.mean(axis=0)) / np.where(sd > 0, sd, 1.0)])
    with np.errstate(invalid="ignore"):
        corr = float(np.corrcoef(lm, ls)[0, 1]) if lm.std() > 0 and ls.std() > 0 else float("nan")
    return {
        "n_runs": int(mu.size),
        "n_distinct_mu_sigma": int(len({(round(a, 12), round(b, 12)) for a, b in zip(mu, sigma)})),
        "corr_log_mu_log_sigma": corr,
        "vif_main": dict(zip(MAIN_FEATURES, map(float, vif(main)))),
        "vif_law": dict(zip(LAW_FEATURES, map(float, vif(law)))),
        "condition_number": float(np.linalg.cond(z)),
        "tokens_span": float(tokens.max() / tokens.min()),
    }
