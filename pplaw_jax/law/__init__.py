"""Scaling laws for continual pre-training, as pure numerics on arrays: law forms, robust point
fit, Bayesian NumPyro fit, optimum, predictive intervals.  No file is read or written here; the
fit stage (runs.csv -> fit directory, `pplaw fit`/`predict`/`runs`) is `pplaw_jax.fit`.

Public API (other stages code against these):

* ``predict_loss(law, params, mu, sigma, tokens) -> np.ndarray``: the law's loss, numpy
  broadcasting over parameter values and points (``mu``/``sigma`` ignored for ``law="data"``).
* ``LAWS`` / ``get_law``: the registry of law forms (``"ppl"``, ``"data"``, and the rivals).
* ``fit_point`` / ``fit_bayes``: the fits, for programmatic use.
"""

from pplaw_jax.law.bayes import Priors, SamplerConfig, fit_bayes
from pplaw_jax.law.forms import LAWS, LawForm, get_law, predict_loss
from pplaw_jax.law.point import fit_point

__all__ = [
    "LAWS",
    "LawForm",
    "Priors",
    "SamplerConfig",
    "fit_bayes",
    "fit_point",
    "get_law",
    "predict_loss",
]
