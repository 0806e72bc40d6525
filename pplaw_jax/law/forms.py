"""Scaling-law forms: a registry of laws of the shape ``L = E + exp(features(mu, sigma, D) @ theta)``.

Every law of the project has this shape once written in log space (``lm = log mu``,
``ls = log sigma``):

* perplexity-aware (``"ppl"``, Liu et al. 2025)::

      L = E + Dc / (mu^(alpha0 + alpha1*sigma) * sigma^(beta0 + beta1*mu) * D^alphaD)
      log(L - E) = log Dc - alpha0 lm - alpha1 sigma lm - beta0 ls - beta1 mu ls - alphaD log D

* data-only (``"data"``, Chinchilla-style)::

      L = E + B / D^beta,   log(L - E) = log B - beta log D

* rivals of the perplexity-aware law, for the model comparison of ``pplaw fit``:
  ``"mu"`` (mean perplexity only), ``"nointer"`` (the paper's law without its interaction terms
  ``alpha1, beta1``) and ``"quad"`` (a quadratic response surface in ``(lm, ls)``)::

      mu:      L = E + Dc / (mu^alpha0 * D^alphaD)
      nointer: L = E + Dc / (mu^alpha0 * sigma^beta0 * D^alphaD)
      quad:    L = E + exp(log A + c_mu lm + c_sigma ls + c_mu2 lm^2 + c_sigma2 ls^2
                           + c_musigma lm ls) / D^alphaD

* ``"surface"``: the flexible surrogate, ``quad`` with a token axis that may bend either way
  (``ld = log D``)::

      surface: L = E + exp(log A + c_mu lm + c_sigma ls + c_mu2 lm^2 + c_sigma2 ls^2
                           + c_musigma lm ls - alphaD ld + gammaD ld^2)

  A power law plus a constant, ``E + B D^-alpha``, is convex in ``log D`` and cannot follow losses
  whose decrease *accelerates* with D, as in short runs that each have their own cosine schedule
  (cpu_tiny: mean log-loss 1.638 / 1.511 / 1.323 at 20k / 80k / 320k tokens, where the paper's law
  runs ``E`` to its bound and fails the lack-of-fit test); with ``E -> 0`` and three budgets, the
  ``ld, ld^2`` terms are exactly one free level per budget (budget as a category), and the
  quadratic in ``(lm, ls)`` is the classical response surface.  Its optimum in ``(mu, sigma)``
  does not depend on D either.  It extrapolates poorly in D beyond the runs' budgets.

So a law is a list of *features* of ``(mu, sigma, D)`` (the first one is the constant 1) and a
linear coefficient vector ``theta``; only ``E`` enters non-linearly.  The fitting code exploits this
(ordinary least squares starts for the point fit, standardised coefficients for the priors and the
sampler), and a new form is one small `LawForm` entry in `LAWS`.

Sign conventions: ``E`` and the scale (``Dc`` / ``B`` / ``A``) are positive and fitted in log;
every exponent is free in sign, which is what lets the perplexity-aware law have an interior
optimum in ``(mu, sigma)``.  The ``-log D`` feature has coefficient ``alphaD`` (``beta`` for
``data``) in every law.  ``quad``'s ``lm, ls`` are not centred (the features are pure functions
of one point); the fitting code standardises every feature column over the runs.

All functions take an array namespace ``xp`` (``numpy`` or ``jax.numpy``) and are pure, so the same
code is jit-able inside the NumPyro model and exact in float64 numpy for predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from pplaw_jax.errors import PplawError


def _ppl_features(mu, sigma, tokens, xp):
    mu, sigma, tokens = xp.broadcast_arrays(xp.asarray(mu), xp.asarray(sigma), xp.asarray(tokens))
    log_mu, log_sigma = xp.log(mu), xp.log(sigma)
    cols = [xp.ones_like(mu), -log_mu, -sigma * log_mu, -log_sigma, -mu * log_sigma, -xp.log(tokens)]
    return xp.stack(cols, axis=-1)


def _mu_features(mu, sigma, tokens, xp):
    mu, tokens = xp.broadcast_arrays(xp.asarray(mu), xp.asarray(tokens))
    return xp.stack([xp.ones_like(mu), -xp.log(mu), -xp.log(tokens)], axis=-1)


def _nointer_features(mu, sigma, tokens, xp):
    mu, sigma, tokens = xp.broadcast_arrays(xp.asarray(mu), xp.asarray(sigma), xp.asarray(tokens))
    return xp.stack([xp.ones_like(mu), -xp.log(mu), -xp.log(sigma), -xp.log(tokens)], axis=-1)


def _quad_features(mu, sigma, tokens, xp):
    mu, sigma, tokens = xp.broadcast_arrays(xp.asarray(mu), xp.asarray(sigma), xp.asarray(tokens))
    lm, ls = xp.log(mu), xp.log(sigma)
    cols = [xp.ones_like(mu), lm, ls, lm * lm, ls * ls, lm * ls, -xp.log(tokens)]
    return xp.stack(cols, axis=-1)


def _surface_features(mu, sigma, tokens, xp):
    mu, sigma, tokens = xp.broadcast_arrays(xp.asarray(mu), xp.asarray(sigma), xp.asarray(tokens))
    lm, ls, ld = xp.log(mu), xp.log(sigma), xp.log(tokens)
    cols = [xp.ones_like(mu), lm, ls, lm * lm, ls * ls, lm * ls, -ld, ld * ld]
    return xp.stack(cols, axis=-1)


def _data_features(mu, sigma, tokens, xp):
    log_d = xp.log(xp.asarray(tokens))
    return xp.stack([xp.ones_like(log_d), -log_d], axis=-1)


@dataclass(frozen=True)
class LawForm:
    """One law ``L = E + exp(features @ theta)``.

    ``scale_name`` is the positive multiplier (``Dc``, ``B``, ``A``) whose log is ``theta[0]``;
    ``exponent_names`` are the remaining entries of ``theta``, in feature order.
    ``features(mu, sigma, tokens, xp)`` returns ``[..., 1 + len(exponent_names)]``; column 0 is 1.
    ``uses_perplexity`` is False when the law ignores ``mu`` and ``sigma``.
    ``shrunk_exponents`` (interaction and curvature terms) get the Bayesian fit's shrinkage prior
    ``Normal(0, interaction_scale)`` instead of ``Normal(0, coef_scale)`` (see `bayes`).
    """

    name: str
    scale_name: str
    exponent_names: tuple[str, ...]
    features: Callable
    uses_perplexity: bool
    description: str
    shrunk_exponents: tuple[str, ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        """Public parameter names, in the order of fit.json: ``E``, the scale, the exponents."""
        return ("E", self.scale_name) + self.exponent_names

    @property
    def n_coef(self) -> int:
        return 1 + len(self.exponent_names)

    def to_params(self, log_e, theta, xp=np) -> dict:
        """``(log E, theta[..., k])`` -> ``{name: value}`` in public (raw) parameters."""
        params = {"E": xp.exp(log_e), self.scale_name: xp.exp(theta[..., 0])}
        for i, name in enumerate(self.exponent_names):
            params[name] = theta[..., i + 1]
        return params

    def from_params(self, params: Mapping, xp=np):
        """``{name: value}`` -> ``(log E, theta[..., k])``; the inverse of `to_params`."""
        missing = [n for n in self.param_names if n not in params]
        if missing:
            raise PplawError(f"law {self.name!r}: parameters missing: {', '.join(missing)}")
        log_e = xp.log(xp.asarray(params["E"], dtype=float))
        cols = [xp.log(xp.asarray(params[self.scale_name], dtype=float))]
        cols += [xp.asarray(params[n], dtype=float) for n in self.exponent_names]
        cols = xp.broadcast_arrays(*cols)
        return log_e, xp.stack(cols, axis=-1)


LAWS: dict[str, LawForm] = {
    "ppl": LawForm(
        name="ppl",
        scale_name="Dc",
        exponent_names=("alpha0", "alpha1", "beta0", "beta1", "alphaD"),
        features=_ppl_features,
        uses_perplexity=True,
        description="E + Dc / (mu^(alpha0+alpha1*sigma) * sigma^(beta0+beta1*mu) * D^alphaD)",
        shrunk_exponents=("alpha1", "beta1"),
    ),
    "data": LawForm(
        name="data",
        scale_name="B",
        exponent_names=("beta",),
        features=_data_features,
        uses_perplexity=False,
        description="E + B / D^beta",
    ),
    "mu": LawForm(
        name="mu",
        scale_name="Dc",
        exponent_names=("alpha0", "alphaD"),
        features=_mu_features,
        uses_perplexity=True,
        description="E + Dc / (mu^alpha0 * D^alphaD)",
    ),
    "nointer": LawForm(
        name="nointer",
        scale_name="Dc",
        exponent_names=("alpha0", "beta0", "alphaD"),
        features=_nointer_features,
        uses_perplexity=True,
        description="E + Dc / (mu^alpha0 * sigma^beta0 * D^alphaD)",
    ),
    "quad": LawForm(
        name="quad",
        scale_name="A",
        exponent_names=("c_mu", "c_sigma", "c_mu2", "c_sigma2", "c_musigma", "alphaD"),
        features=_quad_features,
        uses_perplexity=True,
        description="E + A * exp(c_mu*lm + c_sigma*ls + c_mu2*lm^2 + c_sigma2*ls^2 + c_musigma*lm*ls) / D^alphaD "
        "with lm = log mu, ls = log sigma",
        shrunk_exponents=("c_mu2", "c_sigma2", "c_musigma"),
    ),
    "surface": LawForm(
        name="surface",
        scale_name="A",
        exponent_names=("c_mu", "c_sigma", "c_mu2", "c_sigma2", "c_musigma", "alphaD", "gammaD"),
        features=_surface_features,
        uses_perplexity=True,
        description="E + A * exp(c_mu*lm + c_sigma*ls + c_mu2*lm^2 + c_sigma2*ls^2 + c_musigma*lm*ls "
        "- alphaD*ld + gammaD*ld^2) with lm, ls, ld = log mu, log sigma, log D",
        shrunk_exponents=("c_mu2", "c_sigma2", "c_musigma"),  # gammaD is the token axis's own shape
    ),
}


def get_law(name: str) -> LawForm:
    """The registered law called `name`, or a PplawError listing the known ones."""
    try:
        return LAWS[name]
    except KeyError:
        raise PplawError(f"unknown law {name!r}; known laws: {', '.join(LAWS)}") from None


def log_loss(form: LawForm, log_e, theta, mu, sigma, tokens, xp=np):
    """``log L`` from ``log E`` and ``theta[..., k]``; all leading shapes broadcast with numpy rules.

    Computed as ``logaddexp(log E, features @ theta)`` so that neither a huge ``Dc`` nor a tiny
    ``L - E`` overflows or cancels.  Pure and jit-able with ``xp=jax.numpy``.
    """
    log_excess = xp.sum(form.features(mu, sigma, tokens, xp) * theta, axis=-1)
    return xp.logaddexp(log_e, log_excess)


def predict_loss(law: str, params: Mapping, mu, sigma, tokens) -> np.ndarray:
    """Predicted loss of `law` with public `params` at ``(mu, sigma, tokens)``, in float64 numpy.

    Every parameter value and every coordinate broadcasts with numpy rules, so evaluating S
    posterior draws at N points is ``predict_loss(law, {k: v[:, None] for k, v in draws.items()},
    mu[None, :], sigma[None, :], tokens[None, :])`` -> ``[S, N]``.  For ``law="data"`` `mu` and
    `sigma` are ignored (pass anything, e.g. ``None``).
    """
    form = get_law(law)
    log_e, theta = form.from_params(params)
    if not form.uses_perplexity:
        mu = sigma = 1.0
    mu, sigma, tokens = (np.asarray(a, dtype=float) for a in (mu, sigma, tokens))
    return np.exp(log_loss(form, log_e, theta, mu, sigma, tokens, np))
