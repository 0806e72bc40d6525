"""Many refits of one law at once: the bootstrap's resamples and the held-out folds as one batched
Levenberg-Marquardt solve, instead of a Python loop of scipy BFGS calls.

Every refit minimises the same Huber objective as the point fit (`point.huber_objective`) over the
same standardised features ``z`` (one `point.Design` for all of them), with a weight per run:
its multiplicity in a bootstrap resample (a group drawn twice counts twice, exactly what the
concatenated resample would give) or 0/1 for a fold's training runs.  So a batch is ``B`` weight
vectors ``w[B, n]`` and ``S`` starts ``u0[B, S, p]`` each; all ``B x S`` problems step together:

* residuals ``r = logaddexp(log E, z @ c) - y`` and their Jacobian ``J[B*S, n, p]``;
* the Huber gradient ``g = J^T (w psi)`` and the IRLS curvature ``H = J^T diag(w omega) J`` with
  ``omega = 1/delta`` inside the quadratic zone and ``1/|r|`` outside (Huber's M-estimation
  weights ``psi(r)/r``);
* a Levenberg-Marquardt step ``(H + lambda diag(H) + eps I) d = -g``, accepted where the objective
  falls (then ``lambda / 3``), else ``lambda x 4``; stopped when every problem's gradient or step
  is below tolerance.

The best start of each problem is kept.  It reaches the optimum BFGS reaches from the same starts
(tests compare them refit by refit); the cost of a bootstrap of 200 resamples is a few hundred
batched linear solves instead of 800 BFGS runs.  Pure numpy, float64.
"""

from __future__ import annotations

import numpy as np

MAX_ITER = 300
GTOL = 1e-9
STEP_TOL = 1e-12
EPS = 1e-12


def huber_value(u, z, y, w, delta) -> np.ndarray:
    """The point fit's objective (`point.huber_objective`, divided by delta) of each problem:
    ``u[M, p]``, weights ``w[M, n]`` -> ``[M]`` (inf where not finite)."""
    r = np.logaddexp(u[:, :1], u[:, 1:] @ z.T) - y
    a = np.abs(r)
    with np.errstate(invalid="ignore"):
        v = np.sum(w * np.where(a <= delta, 0.5 * r * r / delta, a - 0.5 * delta), axis=1)
    return np.where(np.isfinite(v), v, np.inf)


def minimise(u0, z, y, w, delta, max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Minimise every problem ``m`` (start ``u0[m]``, weights ``w[m]``) together; returns the
    optima ``[M, p]`` and their objectives ``[M]`` (inf for a problem that never had a finite one)."""
    u = np.array(u0, dtype=float)
    m, p = u.shape
    value = huber_value(u, z, y, w, delta)
    lam = np.full(m, 1e-3)
    active = np.isfinite(value)
    eye = np.eye(p)
    for _ in range(max_iter):
        if not active.any():
            break
        ua, wa = u[active], w[active]
        pred = np.logaddexp(ua[:, :1], ua[:, 1:] @ z.T)
        r = pred - y
        a = np.abs(r)
        e = np.exp(ua[:, :1] - pred)  # d pred / d log E
        jac = np.concatenate([e[..., None], (1.0 - e)[..., None] * z[None]], axis=2)  # [A, n, p]
        psi = np.clip(r / delta, -1.0, 1.0)
        omega = np.where(a <= delta, 1.0 / delta, 1.0 / np.maximum(a, 1e-300))
        g = np.einsum("ani,an->ai", jac, wa * psi)
        h = np.einsum("ani,an,anj->aij", jac, wa * omega, jac)
        diag = np.einsum("aii->ai", h)
        lhs = h + lam[active, None, None] * diag[:, :, None] * eye + EPS * eye
        step = -_solve(lhs, g)
        new = huber_value(ua + step, z, y, wa, delta)
        accept = new < value[active]
        idx = np.flatnonzero(active)
        u[idx[accept]] += step[accept]
        value[idx[accept]] = new[accept]
        lam[idx] = np.where(accept, lam[idx] / 3.0, lam[idx] * 4.0)
        done = (np.max(np.abs(g), axis=1) < GTOL) | (np.max(np.abs(step), axis=1) < STEP_TOL) | (lam[idx] > 1e12)
        active[idx[done]] = False
    return u, value


def best_of_starts(starts, z, y, w, delta) -> tuple[np.ndarray, np.ndarray]:
    """``starts[B, S, p]`` and weights ``w[B, n]``: each problem's best optimum ``[B, p]`` and its
    objective ``[B]``."""
    b, s, p = starts.shape
    u, value = minimise(starts.reshape(b * s, p), z, y, np.repeat(w, s, axis=0), delta)
    u, value = u.reshape(b, s, p), value.reshape(b, s)
    best = np.argmin(value, axis=1)
    return u[np.arange(b), best], value[np.arange(b), best]


def ols_starts(z, loss, w, fractions) -> np.ndarray:
    """Weighted ordinary least squares starts ``[B, len(fractions), p]``: for each weight vector and
    each fraction f, ``E = f x`` the smallest loss it weighs and ``c`` the weighted least-squares
    fit of ``log(loss - E)`` (`point.ols_start` per resample)."""
    b = len(w)
    lo = np.array([loss[wi > 0].min() for wi in w])  # [B]
    out = np.empty((b, len(fractions), 1 + z.shape[1]))
    gram = np.einsum("bn,ni,nj->bij", w, z, z)
    for j, f in enumerate(fractions):
        e = f * lo
        target = np.log(np.maximum(loss[None] - e[:, None], 1e-300))
        rhs = np.einsum("bn,ni,bn->bi", w, z, target)
        c = _solve(gram, rhs)
        out[:, j, 0] = np.log(e)
        out[:, j, 1:] = c
    return out


def _solve(a, b):
    """``x`` with ``a[k] @ x[k] = b[k]`` for every k; least squares where a matrix is singular."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a rank-deficient problem: least squares, one at a time
        return np.stack([np.linalg.lstsq(m, v, rcond=None)[0] for m, v in zip(a, b)])
