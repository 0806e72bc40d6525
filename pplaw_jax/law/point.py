"""Robust point fit (Chinchilla approach 3 / Epoch AI replication), bootstrap, and held-out error.

Objective: the Huber loss of the residuals on *log*-loss, ``r_i = log L(x_i; p) - log loss_i``,
minimised with scipy's BFGS (the quasi-Newton method of Chinchilla's L-BFGS, without the limited
memory that 8 parameters do not need; scipy's L-BFGS-B core calls a multi-threaded LAPACK that
stalls ~10x on a loaded CPU) from many starts; the best optimum is kept.

Huber delta, set relative to the residual scale (the fixed ``delta = 1e-3`` of Hoffmann et al.
2022 is a tiny fraction of the run-to-run noise of small runs, which turns the fit into a
least-absolute-deviation fit): a first pass with ``delta = 1e-3``; then ``delta = 1.345 * s``
with ``s = 1.4826 * MAD`` of the first pass's log residuals (a robust sd), floored at ``1e-4``,
and a second pass restarted from every first-pass optimum.  1.345 is Huber's constant for 95%
efficiency under Gaussian noise; residuals beyond it count linearly, so a few bad runs cannot
drag the fit.  The delta used is recorded (``huber_delta``); bootstrap refits reuse it.

Parameterisation: ``u = (log E, c)`` where ``c`` are the coefficients of the law's features after
standardising them over the runs (`Design`).  ``log E`` keeps ``E > 0``; the scale (``Dc``, ``B``,
``A``) is ``exp`` of the intercept, so also positive; exponents are free in sign.  Standardising
makes every coordinate O(1), which is what a quasi-Newton method (and later NUTS) needs when
``mu*sigma`` spans 10..1e4 and ``log D`` sits near 20.

Starts: for each ``E`` on a grid of fractions of the smallest observed loss, ``log(loss - E)`` is
*linear* in ``c``, so ordinary least squares gives an excellent start; random perturbations of
those starts add diversity.  Convergence check: the best objective must be reached (to a relative
1e-4) from at least two different starts.

Identification: an ``E`` below ``1e-3`` x the smallest observed loss has run to its bound
(``log E -> -inf``: the data prefer a pure power law), so ``E`` is reported as unidentified and
gets no interval; a bootstrap interval of zero width is flagged too.

Bootstrap: run groups (`Runs.groups`) are resampled with replacement and refitted, each from the
best fit and from OLS starts at several fractions of the resample's smallest loss; the 5%/95%
percentiles of the refitted public parameters are the 90% intervals.

Held-out error (`heldout_error`): leave-one-group-out by default (k-fold over groups on request),
so a run is never predicted by a fit that saw its own group; `compare_heldout` compares laws by
the difference of held-out RMSE with an interval from resampling groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from pplaw_jax.errors import PplawError
from pplaw_jax.law import batch
from pplaw_jax.law.forms import LawForm, log_loss
from pplaw_jax.law.runs import Runs

FIRST_PASS_DELTA = 1e-3
HUBER_K = 1.345  # Huber's constant: 95% efficiency at the normal
MIN_DELTA = 1e-4
E_FRACTIONS = (0.001, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98)
BOOT_E_FRACTIONS = (0.01, 0.5, 0.9)
AGREE_RTOL = 1e-4
E_BOUND_FRACTION = 1e-3  # E below this fraction of the smallest loss has run to its bound


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


def huber_objective(u, z, y, delta):
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


def robust_sd(r) -> float:
    """``1.4826 * MAD``: the sd of Gaussian residuals, unmoved by a few outliers."""
    r = np.asarray(r, dtype=float)
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


@dataclass
class PointFit:
    """Result of `fit_point`; ``params`` and ``ci90`` are in public parameters.

    ``first_pass_sd`` is the robust sd that set ``delta`` (None when `delta` was given);
    ``identified[name]`` is False for an ``E`` that ran to its bound (see the module doc).
    """

    form: LawForm
    design: Design
    u: np.ndarray
    objective: float
    n_starts: int
    n_agree: int
    optimiser_message: str
    residual_scale: float
    delta: float
    first_pass_sd: float | None
    identified: dict[str, bool]
    bootstrap_u: np.ndarray | None = None
    bootstrap_failed: int = 0

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
    def ci90(self) -> dict[str, list[float] | None]:
        """``{name: [q05, q95]}`` of the bootstrap refits, None for an unidentified parameter;
        empty without a bootstrap."""
        boot = self.bootstrap_params
        if boot is None:
            return {}
        return {
            k: [float(np.quantile(v, 0.05)), float(np.quantile(v, 0.95))] if self.identified[k] else None
            for k, v in boot.items()
        }

    @property
    def ci90_zero_width(self) -> list[str]:
        """Parameters whose bootstrap interval has zero width (every refit gave the same value)."""
        return [k for k, ci in self.ci90.items() if ci is not None and ci[1] - ci[0] <= 1e-9 * max(map(abs, ci))]

    @property
    def ci90_notes(self) -> dict[str, str]:
        """Why a parameter's interval is null or flagged."""
        notes = {}
        for k, ok in self.identified.items():
            if not ok:
                notes[k] = (
                    f"unidentified: the fit ran {k} to its lower bound (below {E_BOUND_FRACTION:g} x the "
                    "smallest observed loss, log E -> -inf); the data prefer no irreducible loss, so "
                    "no interval is given"
                )
        for k in self.ci90_zero_width:
            notes[k] = "zero-width bootstrap interval: every refit returned the same value; not a real interval"
        return notes

    def predict(self, mu, sigma, tokens) -> np.ndarray:
        return np.exp(self.log_predict(mu, sigma, tokens))

    def log_predict(self, mu, sigma, tokens) -> np.ndarray:
        log_e, theta = self.form.from_params(self.params)
        return log_loss(self.form, log_e, theta, mu, sigma, tokens, np)

    def to_json(self) -> dict:
        rule = (
            f"{HUBER_K} x robust sd (1.4826 MAD) of the log residuals of a first pass with delta "
            f"{FIRST_PASS_DELTA:g}, floored at {MIN_DELTA:g}; then refitted"
            if self.first_pass_sd is not None
            else "given"
        )
        out = {
            "params": self.params,
            "identified": self.identified,
            "ci90": self.ci90,
            "ci90_zero_width": self.ci90_zero_width,
            "ci90_notes": self.ci90_notes,
            "objective": self.objective,
            "huber_delta": self.delta,
            "huber_delta_rule": {"rule": rule, "first_pass_robust_sd": self.first_pass_sd},
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
                "resampled": "run groups with replacement",
                "starts": f"the best fit and OLS starts at E = {list(BOOT_E_FRACTIONS)} x the resample's min loss",
                "draws": {k: v.tolist() for k, v in self.design.params(self.bootstrap_u).items()},
            }
        return out


def _best_of(starts, z, y, delta):
    """Minimise from every start: (best result, starts reaching it, every finite optimum)."""
    results = [_minimise(u0, z, y, delta) for u0 in starts]
    values = np.array([r.fun if np.isfinite(r.fun) else np.inf for r in results])
    best = int(np.argmin(values))
    n_agree = int(np.sum(values <= values[best] + AGREE_RTOL * max(1.0, abs(values[best]))))
    return results[best], n_agree, [r.x for r, v in zip(results, values) if np.isfinite(v)]


def _log_resid(u, z, y):
    return np.logaddexp(u[0], (z * u[1:]).sum(axis=1)) - y


def fit_point(
    runs: Runs,
    form: LawForm,
    *,
    n_random: int = 16,
    bootstrap: int = 200,
    seed: int = 0,
    delta: float | None = None,
    design: Design | None = None,
) -> PointFit:
    """Huber multi-start fit of `form` to `runs`, then `bootstrap` group-resampled refits.

    ``delta=None`` sets the Huber delta by the two-pass rule of the module doc.
    """
    design = design or Design.from_runs(form, runs)
    rng = np.random.default_rng(seed)
    z = design.z(runs.mu, runs.sigma, runs.tokens)
    y = np.log(runs.loss)
    starts = starting_points(z, runs.loss, n_random, rng)
    first_sd = None
    if delta is None:
        first, _, optima = _best_of(starts, z, y, FIRST_PASS_DELTA)
        if not np.isfinite(first.fun):
            raise PplawError(f"{runs.source}: the point fit of law {form.name!r} failed from every start")
        first_sd = robust_sd(_log_resid(first.x, z, y))
        delta = max(HUBER_K * first_sd, MIN_DELTA)
        best, n_agree, _ = _best_of(optima, z, y, delta)
    else:
        best, n_agree, _ = _best_of(starts, z, y, delta)
    if not np.isfinite(best.fun):
        raise PplawError(f"{runs.source}: the point fit of law {form.name!r} failed from every start")
    identified = {k: True for k in form.param_names}
    identified["E"] = bool(np.exp(best.x[0]) >= E_BOUND_FRACTION * runs.loss.min())
    fit = PointFit(
        form,
        design,
        best.x,
        float(best.fun),
        len(starts),
        n_agree,
        str(best.message),
        robust_sd(_log_resid(best.x, z, y)),
        delta,
        first_sd,
        identified,
    )
    if bootstrap > 0:
        fit.bootstrap_u, fit.bootstrap_failed = _bootstrap(runs, z, y, best.x, bootstrap, rng, delta)
    return fit


def _bootstrap(runs: Runs, z, y, u_best, n_boot, rng, delta):
    """`n_boot` group resamples (drawn in order from `rng`), refitted together (`batch`): each from
    the best fit and OLS starts at `BOOT_E_FRACTIONS` of the resample's smallest loss."""
    rows_of = [np.flatnonzero(runs.groups == g) for g in range(runs.n_groups)]
    weights = np.zeros((n_boot, runs.n))
    for b in range(n_boot):
        picked = rng.integers(0, runs.n_groups, size=runs.n_groups)
        np.add.at(weights[b], np.concatenate([rows_of[g] for g in picked]), 1.0)
    starts = np.concatenate(
        [np.broadcast_to(u_best, (n_boot, 1, u_best.size)), batch.ols_starts(z, runs.loss, weights, BOOT_E_FRACTIONS)],
        axis=1,
    )
    u, value = batch.best_of_starts(starts, z, y, weights, delta)
    ok = np.isfinite(value)
    if not ok.any():  # np.stack([]) would raise a bare ValueError
        raise PplawError(
            f"{runs.source}: every one of the {n_boot} bootstrap refits failed; the runs do not "
            f"constrain the law (use --bootstrap 0 for no intervals, or add runs)"
        )
    return u[ok], int((~ok).sum())


@dataclass
class HeldOut:
    """Held-out error of a law's point fit over run groups; errors on log-loss and on loss.

    ``folds`` is the number of fits (``== n_groups`` for leave-one-group-out);
    ``per_run_log_error[i]`` is ``log predicted - log observed`` of run i, from the fit without
    its group.
    """

    law: str
    folds: int
    leave_one_group_out: bool
    n_scored: int
    rmse_log: float
    mae_loss: float
    max_abs_log: float
    per_run_log_error: np.ndarray = field(repr=False)

    def to_json(self) -> dict:
        return {
            "folds": self.folds,
            "leave_one_group_out": self.leave_one_group_out,
            "n_scored": self.n_scored,
            "n_nonfinite": int(self.per_run_log_error.size - self.n_scored),  # errors are then null
            "rmse_log_loss": self.rmse_log,
            "mae_loss": self.mae_loss,
            "max_abs_log_error": self.max_abs_log,
            "per_run_log_error": self.per_run_log_error.tolist(),
        }


def _warm_refits(runs: Runs, form: LawForm, full: PointFit, fold: np.ndarray, n_folds: int) -> np.ndarray:
    """Each fold's held-out log predictions from a refit on the other folds, all folds refitted
    together (`batch`) with `full`'s Huber delta, from `full`'s parameters and OLS starts at
    `BOOT_E_FRACTIONS` of the training runs' smallest loss."""
    design = full.design
    z, y = design.z(runs.mu, runs.sigma, runs.tokens), np.log(runs.loss)
    train = (fold[None, :] != np.arange(n_folds)[:, None]).astype(float)  # [K, n]
    for k in range(n_folds):
        rank = np.linalg.matrix_rank(z[train[k] > 0])
        if rank < form.n_coef:
            raise PplawError(
                f"{runs.source}: fold {k}'s training runs do not identify law {form.name!r}: its "
                f"{form.n_coef} features have rank {rank} there"
            )
    starts = np.concatenate(
        [np.broadcast_to(full.u, (n_folds, 1, full.u.size)), batch.ols_starts(z, runs.loss, train, BOOT_E_FRACTIONS)],
        axis=1,
    )
    u, value = batch.best_of_starts(starts, z, y, train, full.delta)
    if not np.all(np.isfinite(value)):
        raise PplawError(f"{runs.source}: a held-out refit of law {form.name!r} failed from every start")
    pred = np.logaddexp(u[:, :1], u[:, 1:] @ z.T)  # [K, n]: every fold's fit at every run
    return pred[fold, np.arange(runs.n)]


def fold_of_runs(runs: Runs, folds: int, seed: int) -> np.ndarray:
    """Fold index of every run: its group's (``folds=0``: one fold per group), else groups dealt
    at random (`seed`) into `folds` folds."""
    if folds == 0 or folds >= runs.n_groups:
        return runs.groups.copy()
    fold_of_group = np.random.default_rng(seed).permutation(np.arange(runs.n_groups) % folds)
    return fold_of_group[runs.groups]


def describe_heldout(runs: Runs, folds: int, seed: int) -> str:
    """How `heldout_error` groups and leaves out the runs, for fit.json's method string."""
    grouping = (
        f"the {runs.n} runs form {runs.n_groups} groups: rows sharing runs.csv's `group` value (without "
        "that column, its `run_id`; without both, one row each), i.e. every budget and replicate of one "
        "design point or perplexity window"
    )
    if folds == 0 or folds >= runs.n_groups:
        how = "leave-one-group-out: each group in turn is the test set, predicted by a fit on all other groups"
    else:
        how = (
            f"{folds}-fold over groups: groups dealt at random (seed {seed}) into {folds} folds, each fold in "
            "turn predicted by a fit on the other folds"
        )
    return (
        f"{how}; {grouping}; fits: each law's Huber point fit (same delta rule as the main fit); per-run "
        "error = log predicted - log observed loss, every run predicted once"
    )


def heldout_error(
    runs: Runs, form: LawForm, *, folds: int = 0, seed: int = 0, n_random: int = 4, full: PointFit | None = None
) -> HeldOut:
    """Fit on all but one fold of run groups, predict the left-out fold; every run is predicted
    once.  ``folds=0`` (default) is leave-one-group-out; ``folds=k`` is k-fold over groups.

    With `full` (the law's fit on all runs), each fold is refitted like a bootstrap resample: with
    its Huber delta, from the full fit's parameters and OLS starts at several fractions of the
    fold's smallest loss (the fold's best optimum is kept); without it, each fold is a complete
    `fit_point`.  A fold whose training part cannot identify the law (too few runs, rank
    deficient) raises PplawError: the comparison would otherwise silently score only the easy folds.
    """
    if folds == 1 or folds < 0:
        raise PplawError(f"--folds {folds}: use 0 (leave one group out) or at least 2")
    if runs.n_groups < 2:
        raise PplawError(f"{runs.source}: held-out error needs at least 2 run groups")
    fold = fold_of_runs(runs, folds, seed)
    n_folds = int(fold.max()) + 1
    for k in range(n_folds):
        n_train = int(np.sum(fold != k))
        if n_train < len(form.param_names):
            raise PplawError(
                f"{runs.source}: fold {k} leaves {n_train} training runs, fewer than the "
                f"{len(form.param_names)} parameters of law {form.name!r}"
            )
    if full is None:
        log_pred = np.full(runs.n, np.nan)
        for k in range(n_folds):
            test = fold == k
            fit = fit_point(runs.take(np.flatnonzero(~test)), form, n_random=n_random, bootstrap=0, seed=seed + k)
            log_pred[test] = fit.log_predict(runs.mu[test], runs.sigma[test], runs.tokens[test])
    else:
        log_pred = _warm_refits(runs, form, full, fold, n_folds)
    err = log_pred - np.log(runs.loss)
    pred_loss = np.exp(log_pred)
    return HeldOut(
        law=form.name,
        folds=n_folds,
        leave_one_group_out=n_folds == runs.n_groups,
        n_scored=int(np.isfinite(err).sum()),
        rmse_log=float(np.sqrt(np.mean(err**2))),
        mae_loss=float(np.mean(np.abs(pred_loss - runs.loss))),
        max_abs_log=float(np.max(np.abs(err))),
        per_run_log_error=err,
    )


def compare_heldout(
    results: dict, groups: np.ndarray, baseline: str = "ppl", *, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Each law's held-out RMSE against `baseline`'s, with a group-bootstrap interval.

    `results` maps a law to its `HeldOut` or to a string saying why it could not be scored.  For
    each rival: ``rmse_diff`` = its held-out RMSE of log-loss minus the baseline's (negative: the
    rival predicts left-out groups better), and the 90% percentile interval of that difference
    over `n_boot` resamples of the groups with replacement (both RMSEs recomputed on the same
    resampled held-out errors).  ``verdict`` is "better"/"worse" only when the interval excludes 0.
    """
    groups = np.asarray(groups)
    n_groups = int(groups.max()) + 1
    picks = np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))
    n_of = np.bincount(groups, minlength=n_groups)[picks].sum(axis=1)

    def boot_rmse(err):
        sse = np.bincount(groups, weights=err**2, minlength=n_groups)
        return np.sqrt(sse[picks].sum(axis=1) / n_of)

    def why_not(name):
        r = results.get(name)
        if r is None or isinstance(r, str):
            return f"law {name!r} has no held-out error" + (f" ({r})" if r else "")
        if r.n_scored < r.per_run_log_error.size:
            return f"law {name!r} predicted {r.per_run_log_error.size - r.n_scored} held-out runs non-finite"
        return None

    scored = {k: r.rmse_log for k, r in results.items() if why_not(k) is None}
    differences = {}
    for name in results:
        if name == baseline:
            continue
        problem = why_not(baseline) or why_not(name)
        if problem:
            differences[name] = {"error": problem}
            continue
        base, rival = results[baseline].per_run_log_error, results[name].per_run_log_error
        diff = boot_rmse(rival) - boot_rmse(base)
        lo, hi = float(np.quantile(diff, 0.05)), float(np.quantile(diff, 0.95))
        verdict = "better" if hi < 0 else "worse" if lo > 0 else "no detectable difference"
        differences[name] = {
            "rmse_diff": results[name].rmse_log - results[baseline].rmse_log,
            "ci90": [lo, hi],
            "verdict": verdict,
        }
    return {
        "laws": {k: {"error": r} if isinstance(r, str) else r.to_json() for k, r in results.items()},
        "best": min(scored, key=lambda k: scored[k]) if scored else None,
        "baseline": baseline,
        "differences": differences,
        "bootstrap": {"n": n_boot, "seed": seed, "resampled": "run groups with replacement"},
    }
