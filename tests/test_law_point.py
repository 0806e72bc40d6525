"""runs.csv validation, the robust point fit with bootstrap, and held-out comparison."""

import numpy as np
import pytest

from pplaw_jax.errors import PplawError
from pplaw_jax.fit.runs_table import read_runs
from pplaw_jax.law import LAWS, predict_loss
from pplaw_jax.law.point import Design, fit_point, heldout_error, huber_objective
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.law.synthetic import TRUE_PPL, sample_inputs, synthetic_runs

PPL = LAWS["ppl"]


def as_runs(frame):
    return runs_from_arrays(frame.mu_ppl, frame.sigma_ppl, frame.tokens, frame.loss, frame.run_id)


def test_huber_gradient_matches_finite_differences():
    frame = synthetic_runs(n=30, seed=3)
    runs = as_runs(frame)
    design = Design.from_runs(PPL, runs)
    z, y = design.z(runs.mu, runs.sigma, runs.tokens), np.log(runs.loss)
    u = design.u_from_params(TRUE_PPL) + 0.003 * np.random.default_rng(0).standard_normal(PPL.n_coef + 1)
    _, grad = huber_objective(u, z, y, 1e-3)
    eps = 1e-7
    fd = [
        (huber_objective(u + eps * e, z, y, 1e-3)[0] - huber_objective(u - eps * e, z, y, 1e-3)[0]) / (2 * eps)
        for e in np.eye(len(u))
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_a_bootstrap_whose_every_refit_fails_is_one_clear_error(monkeypatch):
    """Every refit failing (here: forced) used to surface as numpy's bare `ValueError: need at least
    one array to stack`."""
    from pplaw_jax.law import batch

    runs = as_runs(synthetic_runs(n=30, seed=3))
    real = batch.best_of_starts

    def fails(*args):
        u, value = real(*args)
        return u, np.full_like(value, np.inf)

    monkeypatch.setattr(batch, "best_of_starts", fails)
    with pytest.raises(PplawError, match="every one of the 3 bootstrap refits failed"):
        fit_point(runs, PPL, bootstrap=3, seed=0)


def test_batched_refits_reach_the_optima_of_scipy_bfgs_refit_by_refit():
    """The bootstrap's resamples and the held-out folds, refitted together by the batched
    Levenberg-Marquardt solver, land where scipy's BFGS lands from the same starts on the same
    concatenated resample (the looped reference, written out here): objectives equal to 1e-7
    relative (or lower) and the public parameters to 1e-4 relative."""
    from pplaw_jax.law import point

    runs = as_runs(synthetic_runs(n=36, noise=0.01, seed=5))
    runs = runs_from_arrays(runs.mu, runs.sigma, runs.tokens, runs.loss, group=np.arange(runs.n) // 3)
    fit = fit_point(runs, PPL, bootstrap=20, seed=7)
    z, y = fit.design.z(runs.mu, runs.sigma, runs.tokens), np.log(runs.loss)
    rng = np.random.default_rng(7)
    point.starting_points(z, runs.loss, 16, rng)  # the main fit's draws come first from the same stream
    rows_of = [np.flatnonzero(runs.groups == g) for g in range(runs.n_groups)]
    for b in range(20):
        idx = np.concatenate([rows_of[g] for g in rng.integers(0, runs.n_groups, size=runs.n_groups)])
        zb, yb, lb = z[idx], y[idx], runs.loss[idx]
        starts = [fit.u] + [point.ols_start(zb, lb, f * lb.min()) for f in point.BOOT_E_FRACTIONS]
        ref, _, _ = point._best_of(starts, zb, yb, fit.delta)
        got = fit.bootstrap_u[b]
        got_value = point.huber_objective(got, zb, yb, fit.delta)[0]
        assert got_value <= ref.fun * (1 + 1e-7) + 1e-12
        ref_p, got_p = fit.design.params(ref.x), fit.design.params(got)
        for k in ref_p:
            assert got_p[k] == pytest.approx(ref_p[k], rel=1e-4, abs=1e-8), (b, k)
    # held-out folds: the batched refits against a looped BFGS refit of each fold
    from pplaw_jax.law.point import heldout_error

    ho = heldout_error(runs, PPL, full=fit)
    for k in range(runs.n_groups):
        train, test = runs.groups != k, runs.groups == k
        zt, yt, lt = z[train], y[train], runs.loss[train]
        starts = [fit.u] + [point.ols_start(zt, lt, f * lt.min()) for f in point.BOOT_E_FRACTIONS]
        ref, _, _ = point._best_of(starts, zt, yt, fit.delta)
        pred = np.logaddexp(ref.x[0], z[test] @ ref.x[1:]) - y[test]
        np.testing.assert_allclose(ho.per_run_log_error[test], pred, rtol=1e-4, atol=1e-7)


def test_point_fit_recovers_truth_with_bootstrap_intervals():
    frame = synthetic_runs(n=48, noise=0.01, seed=0)
    fit = fit_point(as_runs(frame), PPL, bootstrap=100, seed=0)
    assert fit.converged and fit.n_agree >= 2
    covered = [lo <= TRUE_PPL[k] <= hi for k, (lo, hi) in fit.ci90.items()]
    assert sum(covered) >= 5, fit.ci90  # 90% intervals: most of the 7 contain the truth
    for k in ("E", "alphaD", "alpha1", "beta1"):
        assert fit.params[k] == pytest.approx(TRUE_PPL[k], rel=0.25)
    # held-out points never seen by the fit: predictions within 1.5% of the noise-free truth
    mu, sigma, d = sample_inputs(200, np.random.default_rng(99))
    pred, true = fit.predict(mu, sigma, d), predict_loss("ppl", TRUE_PPL, mu, sigma, d)
    assert np.max(np.abs(pred / true - 1)) < 0.015
    assert fit.residual_scale == pytest.approx(0.01, rel=0.4)


def test_huber_fit_resists_outlier_runs():
    frame = synthetic_runs(n=48, noise=0.005, seed=1)
    frame.loc[[3, 17, 30], "loss"] *= 1.3  # three broken runs
    fit = fit_point(as_runs(frame), PPL, bootstrap=0)
    clean = np.delete(np.arange(48), [3, 17, 30])
    pred = fit.predict(frame.mu_ppl.values, frame.sigma_ppl.values, frame.tokens.values)
    assert np.max(np.abs(pred[clean] / frame.loss_true.values[clean] - 1)) < 0.02
    # the outliers are left with large residuals instead of being absorbed
    assert np.all(frame.loss.values[[3, 17, 30]] / pred[[3, 17, 30]] > 1.2)


def test_heldout_error_prefers_the_true_law():
    runs = as_runs(synthetic_runs(n=40, seed=2))
    ppl, data = heldout_error(runs, PPL, folds=4), heldout_error(runs, LAWS["data"], folds=4)
    assert ppl.n_scored == data.n_scored == 40
    assert ppl.rmse_log < 0.02 < data.rmse_log


def test_groups_are_resampled_and_held_out_together():
    frame = synthetic_runs(n=30, seed=4)
    frame["run_id"] = [f"g{i // 3}" for i in range(30)]  # 10 runs, 3 checkpoints each
    runs = as_runs(frame)
    assert runs.n_groups == 10
    ho = heldout_error(runs, LAWS["data"], folds=5)
    assert ho.folds == 5 and ho.n_scored == 30


def write(tmp_path, text):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    return path


def test_read_runs_bad_inputs(tmp_path):
    with pytest.raises(PplawError, match="not found"):
        read_runs(tmp_path / "nope.csv", PPL)
    with pytest.raises(PplawError, match="missing column.*sigma_ppl"):
        read_runs(write(tmp_path, "mu_ppl,tokens,loss\n1,2,3\n"), PPL)
    good = "\n".join(f"{10 + i},{2 + i},{1e6 * (i + 1)},{3 - 0.1 * i}" for i in range(8))
    rows = good.splitlines()
    rows[4] = "14,-1,5e6,2.6"
    with pytest.raises(PplawError, match=r"line 6 .*'sigma_ppl' = -1"):
        read_runs(write(tmp_path, "mu_ppl,sigma_ppl,tokens,loss\n" + "\n".join(rows)), PPL)
    rows[4] = "14,6,5e6,nan"
    with pytest.raises(PplawError, match=r"line 6 .*'loss'"):
        read_runs(write(tmp_path, "mu_ppl,sigma_ppl,tokens,loss\n" + "\n".join(rows)), PPL)
    rows[4] = "14,6,lots,2.6"
    with pytest.raises(PplawError, match=r"line 6 .*'tokens' = 'lots'"):
        read_runs(write(tmp_path, "mu_ppl,sigma_ppl,tokens,loss\n" + "\n".join(rows)), PPL)
    with pytest.raises(PplawError, match="5 runs, fewer than the 7 parameters"):
        read_runs(write(tmp_path, "mu_ppl,sigma_ppl,tokens,loss\n" + "\n".join(good.splitlines()[:5])), PPL)
    # the data-only law needs only tokens and loss
    runs = read_runs(write(tmp_path, "tokens,loss\n1e6,3\n1e7,2.5\n1e8,2.2\n"), LAWS["data"])
    assert runs.n == 3


def test_runs_that_cannot_identify_the_law(tmp_path):
    frame = synthetic_runs(n=20, seed=5)
    frame["sigma_ppl"] = 7.0  # one sigma for all runs: beta0 and beta1 are not identified
    with pytest.raises(PplawError, match="do not identify"):
        fit_point(as_runs(frame), PPL, bootstrap=0)
