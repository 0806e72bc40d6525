"""Scaling laws for continual pre-training: law forms, robust point fit, Bayesian NumPyro fit.

Public API (other stages code against these):

* ``load_fit(fit_dir) -> Fit``: open a directory written by ``pplaw fit``. ``Fit.law``,
  ``Fit.point_params`` (``{name: float}``), ``Fit.posterior_draws()`` (``{name: draws[S]}`` or None),
  ``Fit.noise_draws()``.
* ``predict_loss(law, params, mu, sigma, tokens) -> np.ndarray``: the law's loss, numpy
  broadcasting over parameter values and points (``mu``/``sigma`` ignored for ``law="data"``).
* ``LAWS`` / ``get_law``: the registry of law forms (``"ppl"``, ``"data"``).
* ``predict_table(fit, mu, sigma, tokens, level)``: point prediction plus credible and predictive
  intervals as a DataFrame (what ``pplaw predict`` prints).
* ``fit_point`` / ``fit_bayes`` / ``fit_to_dir``: the fitting stages, for programmatic use.
"""

from pplaw_jax.law.bayes import Priors, SamplerConfig, fit_bayes
from pplaw_jax.law.fitdir import NotConverged, fit_to_dir
from pplaw_jax.law.forms import LAWS, LawForm, get_law, predict_loss
from pplaw_jax.law.io import Fit, load_fit
from pplaw_jax.law.point import fit_point
from pplaw_jax.law.predictive import predict_table

__all__ = [
    "LAWS",
    "Fit",
    "LawForm",
    "NotConverged",
    "Priors",
    "SamplerConfig",
    "fit_bayes",
    "fit_point",
    "fit_to_dir",
    "get_law",
    "load_fit",
    "predict_loss",
    "predict_table",
]
