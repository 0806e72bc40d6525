"""Robust point fit (Chinchilla approach 3 / Epoch AI replication) and held-out error over runs.

Objective: the Huber loss of the residuals on *log*-loss, ``r_i = log L(x_i; p) - log loss_i``, with
``delta = 1e-3`` as in Hoffmann et al. (2022) and Besiroglu et al. (2024): residuals above 0.1% of
the loss count linearly, so a few bad runs cannot drag the fit.  It is minimised with scipy's BFGS
(the quasi-Newton method of Chinchilla's L-BFGS, without the limited memory that 8 parameters do
not need; scipy's L-BFGS-B core calls a multi-threaded LAPACK that stalls ~10x on a loaded CPU)
from many starts, and the best optimum is kept.

Parameterisation: ``u = (log E, c)`` where ``c`` are the coefficients of the law's features after
standardising them over the runs (`Design`).  ``log E`` keeps ``E > 0``; the scale (``Dc`` or
``B``) is ``exp`` of the intercept, so also positive; exponents are free in sign.  Standardising
makes every coordinate O(1), which is what a quasi-Newton method (and later NUTS) needs when
``mu*sigma`` spans 10..1e4 and ``log D`` sits near 20.

Starts: for each ``E`` on a grid of fractions of the smallest observed loss, ``log(loss - E)`` is
*linear* in ``c``, so ordinary least squares gives an excellent start; random perturbations of
those starts add diversity.  Convergence check: the best objective must be reached (to a relative
1e-4) from at least two different starts.

Bootstrap: runs are resampled by group (``run_id``) with replacement and refitted; the 5%/95%
percentiles of the refitted public parameters are the 90% intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from pplaw_jax.errors import PplawError
from pplaw_jax.law.data import Runs
from pplaw_jax.law.forms import LawForm, log_loss

HUBER_DELTA = 1e-3
E_FRACTIONS = (0.001, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98)
AGREE_RTOL = 1e-4


@dataclass(frozen=True)
class Design:
    """The law's features over a set of runs, standardised: ``z = (features - mean) / scale``.

    Column 0 (the constant) is left as is.  Maps between standardised coefficients ``c`` and the
    law's ``theta`` (``features @ theta == z @ c``) are exact linear bijections.
    """

    form: LawForm
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_runs(cls, form: LawForm, runs: Runs) -> Design:
        feats = form.features(runs.mu, runs.sigma, runs.tokens, np)
        mean, scale = feats.mean(axis=0), feats.std(axis=0)
        mean[0], scale[0] = 0.0, 1.0
        rank = np.linalg.matrix_rank((feats - mean) / np.where(scale > 0, scale, 1.0))
        if rank < form.n_coef:
            raise PplawError(
                f"{runs.source}: the runs do not identify law {form.name!r}: its {form.n_coef} features "
                f"have rank {rank} over the {runs.n} runs (e.g. all runs share one mu, sigma or token "
                "count); add runs that vary every input"
            )
        return cls(form, mean, scale)

    def z(self, mu, sigma, tokens) -> np.ndarray:
        return (self.form.features(mu, sigma, tokens, np) - self.mean) / self.scale

    def theta_from_c(self, c):
        theta = c / self.scale
        return _set0(theta, c[..., 0] - np.sum(theta[..., 1:] * self.mean[1:], axis=-1))

    def c_from_theta(self, theta):
        c = theta * self.scale
        return _set0(c, theta[..., 0] + np.sum(theta[..., 1:] * self.mean[1:], axis=-1))

    def params(self, u) -> dict:
        """Internal ``u = (log E, c)`` -> public ``{name: value}`` (vectorised over leading axes)."""
        u = np.asarray(u, dtype=float)
        return self.form.to_params(u[..., 0], self.theta_from_c(u[..., 1:]))

    def u_from_params(self, params) -> np.ndarray:
        log_e, theta = self.form.from_params(params)
        return np.concatenate([np.asarray(log_e)[..., None], self.c_from_theta(theta)], axis=-1)

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}


def _set0(a, col0):
    a = np.array(a, dtype=float, copy=True)
    a[..., 0] = col0
    return a


def huber_objective(u, z, y, delta=HUBER_DELTA):
    """Sum of Huber(delta) of log-loss residuals, divided by delta, and its gradient in ``u``.

    Dividing by delta makes the objective ~ sum |r| for large residuals, so BFGS tolerances work
    in natural units.  ``log L = logaddexp(log E, z @ c)``; ``d log L / d log E = E / L``.
    The tiny products are written as broadcast sums: a multi-threaded BLAS call per evaluation
    costs more than the arithmetic and degrades badly on a loaded machine.
    """
    log_e, c = u[0], u[1:]
    pred = np.logaddexp(log_e, (z * c).sum(axis=1))
    r = pred - y
    a = np.abs(r)
    value = np.sum(np.where(a <= delta, 0.5 * r * r / delta, a - 0.5 * delta))
    psi = np.clip(r / delta, -1.0, 1.0)
    w = np.exp(log_e - pred)
    grad = np.concatenate([[np.sum(psi * w)], (z * (psi * (1.0 - w))[:, None]).sum(axis=0)])
    return value, grad


def _minimise(u0, z, y, delta):
    res = minimize(
        huber_objective,
        u0,
        args=(z, y, delta),
        jac=True,
        method="BFGS",
        options={"maxiter": 2000, "gtol": 1e-6},
    )
    return res


def ols_start(z, loss, e) -> np.ndarray:
    """``u`` with ``E = e`` and ``c`` the least-squares fit of ``log(loss - e)`` (needs e < min loss)."""
    c, *_ = np.linalg.lstsq(z, np.log(loss - e), rcond=None)
    return np.concatenate([[np.log(e)], c])


def starting_points(z, loss, n_random: int, rng: np.random.Generator) -> np.ndarray:
    """OLS starts on the E-fraction grid plus `n_random` perturbed ones; ``[n_starts, 1 + k]``."""
    lo = loss.min()
    starts = [ols_start(z, loss, f * lo) for f in E_FRACTIONS]
    for _ in range(n_random):
        base = ols_start(z, loss, rng.uniform(0.01, 0.99) * lo)
        base[1:] += rng.normal(0.0, 0.5, size=base.size - 1)
        starts.append(base)
    return np.stack(starts)


@dataclass
class PointFit:
    """Result of `fit_point`; ``params`` and ``ci90`` are in public parameters."""

    form: LawForm
    design: Design
    u: np.ndarray
    objective: float
    n_starts: int
    n_agree: int
    optimiser_message: str
    residual_scale: float
    bootstrap_u: np.ndarray | None = None
    bootstrap_failed: int = 0
    delta: float = HUBER_DELTA

    @property
    def params(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.design.params(self.u).items()}

    @property
    def converged(self) -> bool:
        return self.n_agree >= 2

    @property
    def bootstrap_params(self) -> dict[str, np.ndarray] | None:
        return None if self.bootstrap_u is None else self.design.params(self.bootstrap_u)

    @property
    def ci90(self) -> dict[str, list[float]]:
        """``{name: [q05, q95]}`` of the bootstrap refits; empty without a bootstrap."""
        boot = self.bootstrap_params
        if boot is None:
            return {}
        return {k: [float(np.quantile(v, 0.05)), float(np.quantile(v, 0.95))] for k, v in boot.items()}

    def predict(self, mu, sigma, tokens) -> np.ndarray:
        return np.exp(self.log_predict(mu, sigma, tokens))

    def log_predict(self, mu, sigma, tokens) -> np.ndarray:
        log_e, theta = self.form.from_params(self.params)
        return log_loss(self.form, log_e, theta, mu, sigma, tokens, np)

    def to_json(self) -> dict:
        out = {
            "params": self.params,
            "ci90": self.ci90,
            "objective": self.objective,
            "huber_delta": self.delta,
            "converged": self.converged,
            "n_starts": self.n_starts,
            "n_starts_at_best": self.n_agree,
            "optimiser_message": self.optimiser_message,
            "residual_scale_log": self.residual_scale,
            "bootstrap": None,
        }
        if self.bootstrap_u is not None:
            out["bootstrap"] = {
                "n": int(len(self.bootstrap_u)),
                "failed": int(self.bootstrap_failed),
                "resampled": "groups (run_id) with replacement",
                "draws": {k: v.tolist() for k, v in self.bootstrap_params.items()},
            }
        return out


def _best_of(starts, z, y, delta):
    results = [_minimise(u0, z, y, delta) for u0 in starts]
    values = np.array([r.fun if np.isfinite(r.fun) else np.inf for r in results])
    best = int(np.argmin(values))
    n_agree = int(np.sum(values <= values[best] + AGREE_RTOL * max(1.0, abs(values[best]))))
    return results[best], n_agree


def fit_point(
    runs: Runs,
    form: LawForm,
    *,
    n_random: int = 16,
    bootstrap: int = 200,
    seed: int = 0,
    delta: float = HUBER_DELTA,
    design: Design | None = None,
) -> PointFit:
    """Huber multi-start fit of `form` to `runs`, then `bootstrap` group-resampled refits."""
    design = design or Design.from_runs(form, runs)
    rng = np.random.default_rng(seed)
    z = design.z(runs.mu, runs.sigma, runs.tokens)
    y = np.log(runs.loss)
    starts = starting_points(z, runs.loss, n_random, rng)
    best, n_agree = _best_of(starts, z, y, delta)
    if not np.isfinite(best.fun):
        raise PplawError(f"{runs.source}: the point fit of law {form.name!r} failed from every start")
    resid = np.logaddexp(best.x[0], (z * best.x[1:]).sum(axis=1)) - y
    scale = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
    fit = PointFit(
        form, design, best.x, float(best.fun), len(starts), n_agree, str(best.message), scale, delta=delta
    )
    if bootstrap > 0:
        fit.bootstrap_u, fit.bootstrap_failed = _bootstrap(runs, z, y, best.x, bootstrap, rng, delta)
    return fit


def _bootstrap(runs: Runs, z, y, u_best, n_boot, rng, delta):
    rows_of = [np.flatnonzero(runs.groups == g) for g in range(runs.n_groups)]
    out, failed = [], 0
    e_best = float(np.exp(u_best[0]))
    for _ in range(n_boot):
        picked = rng.integers(0, runs.n_groups, size=runs.n_groups)
        idx = np.concatenate([rows_of[g] for g in picked])
        zb, yb, lb = z[idx], y[idx], runs.loss[idx]
        starts = [u_best]
        if e_best < lb.min():
            starts.append(ols_start(zb, lb, e_best))
        starts.append(ols_start(zb, lb, 0.5 * lb.min()))
        res, _ = _best_of(starts, zb, yb, delta)
        if np.isfinite(res.fun):
            out.append(res.x)
        else:
            failed += 1
    return np.stack(out), failed


@dataclass
class HeldOut:
    """Leave-groups-out k-fold error of a law's point fit; errors on log-loss and on loss."""

    law: str
    folds: int
    n_scored: int
    rmse_log: float
    mae_loss: float
    max_abs_log: float
    per_run_log_error: np.ndarray = field(repr=False)

    def to_json(self) -> dict:
        return {
            "folds": self.folds,
            "n_scored": self.n_scored,
            "n_nonfinite": int(self.per_run_log_error.size - self.n_scored),  # errors are then null
            "rmse_log_loss": self.rmse_log,
            "mae_loss": self.mae_loss,
            "max_abs_log_error": self.max_abs_log,
        }


def heldout_error(runs: Runs, form: LawForm, *, folds: int = 5, seed: int = 0, n_random: int = 4) -> HeldOut:
    """Fit on k-1 folds of groups, predict the left-out fold; every run is predicted once.

    A fold whose training part cannot identify the law (too few runs, rank deficient) raises
    PplawError: the comparison would otherwise silently score only the easy folds.
    """
    folds = min(folds, runs.n_groups)
    if folds < 2:
        raise PplawError(f"{runs.source}: held-out error needs at least 2 run groups")
    rng = np.random.default_rng(seed)
    fold_of_group = rng.permutation(np.arange(runs.n_groups) % folds)
    fold = fold_of_group[runs.groups]
    err = np.full(runs.n, np.nan)
    pred_loss = np.full(runs.n, np.nan)
    for k in range(folds):
        test = fold == k
        train = runs.take(np.flatnonzero(~test))
        if train.n < len(form.param_names):
            raise PplawError(
                f"{runs.source}: fold {k} leaves {train.n} training runs, fewer than the "
                f"{len(form.param_names)} parameters of law {form.name!r}; use fewer --folds or more runs"
            )
        fit = fit_point(train, form, n_random=n_random, bootstrap=0, seed=seed + k)
        log_pred = fit.log_predict(runs.mu[test], runs.sigma[test], runs.tokens[test])
        err[test] = log_pred - np.log(runs.loss[test])
        pred_loss[test] = np.exp(log_pred)
    return HeldOut(
        law=form.name,
        folds=folds,
        n_scored=int(np.isfinite(err).sum()),
        rmse_log=float(np.sqrt(np.mean(err**2))),
        mae_loss=float(np.mean(np.abs(pred_loss - runs.loss))),
        max_abs_log=float(np.max(np.abs(err))),
        per_run_log_error=err,
    )
