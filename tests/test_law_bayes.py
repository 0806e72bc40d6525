"""The NumPyro fit: robustness of the Student-t likelihood, and (slow) calibration of intervals."""

import numpy as np
import pytest
from scipy import stats

from pplaw_jax.law import LAWS, predict_loss
from pplaw_jax.law.bayes import Priors, SamplerConfig, fit_bayes, fit_bayes_laws, pointwise_log_lik
from pplaw_jax.law.point import fit_point
from pplaw_jax.law.predictive import predictive
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.law.synthetic import TRUE_DATA, TRUE_PPL, sample_inputs, synthetic_runs


def as_runs(frame):
    return runs_from_arrays(frame.mu_ppl, frame.sigma_ppl, frame.tokens, frame.loss, frame.run_id)


def test_student_likelihood_resists_outliers_and_log_lik_is_exact():
    frame = synthetic_runs(law="data", n=30, noise=0.01, seed=21)
    frame.loc[[2, 11, 25], "loss"] *= 1.4
    runs = as_runs(frame)
    point = fit_point(runs, LAWS["data"], bootstrap=3)
    cfg = SamplerConfig(chains=2, warmup=1000, samples=1000, likelihood="student", student_df=3.0)
    fit = fit_bayes(runs, point, Priors(), cfg)
    assert fit.diagnostics()["converged"]
    flat = fit.flat()
    # noise is learned at the clean runs' level, not inflated to absorb the outliers
    assert np.median(flat["noise"]) < 0.02
    for k, v in TRUE_DATA.items():
        assert np.quantile(flat[k], 0.005) <= v <= np.quantile(flat[k], 0.995), k
    # pointwise log-likelihood (used by LOO) is the Student-t density of log-loss
    s = 17
    mean = np.log(predict_loss("data", {k: flat[k][s] for k in TRUE_DATA}, None, None, runs.tokens))
    ref = stats.t.logpdf(np.log(runs.loss), 3.0, mean, flat["noise"][s])
    np.testing.assert_allclose(fit.log_lik.reshape(-1, runs.n)[s], ref, rtol=1e-8)
    np.testing.assert_allclose(pointwise_log_lik(LAWS["data"], flat, runs, "student", 3.0)[s], ref, rtol=1e-12)


def test_laws_sampled_side_by_side_are_each_fit_alone():
    """`fit_bayes_laws` (one law per thread, as `pplaw fit` samples the rivals beside the chosen
    law) gives every law exactly the draws and sampler statistics of its own `fit_bayes`."""
    runs = as_runs(synthetic_runs(law="data", n=24, noise=0.01, seed=8))
    points = {k: fit_point(runs, LAWS[k], bootstrap=2) for k in ("ppl", "data", "mu")}
    # the settings and padded size (32 rows) of the test above: its compiled program is reused
    cfg = SamplerConfig(chains=2, warmup=1000, samples=1000, likelihood="student", student_df=3.0, seed=3)
    together = fit_bayes_laws(runs, points, Priors(), cfg)
    assert list(together) == list(points)
    for name, point in points.items():
        alone = fit_bayes(runs, point, Priors(), cfg)
        assert together[name].form.name == name
        for k, v in alone.draws.items():
            np.testing.assert_array_equal(together[name].draws[k], v, err_msg=f"{name} {k}")
        for k, v in alone.sample_stats.items():
            np.testing.assert_array_equal(together[name].sample_stats[k], v, err_msg=f"{name} {k}")


@pytest.mark.slow
def test_posterior_intervals_are_calibrated():
    """Across 30 synthetic data sets, 90% intervals at 40 unseen points each should cover:
    the noise-free law (credible interval) and a fresh noisy measurement (predictive interval)."""
    ci_hits, pi_hits = [], []
    for seed in range(30):
        runs = as_runs(synthetic_runs(n=36, noise=0.01, seed=1000 + seed))
        point = fit_point(runs, LAWS["ppl"], bootstrap=3, seed=seed)
        fit = fit_bayes(runs, point, Priors(), SamplerConfig(chains=2, warmup=400, samples=400, seed=seed))
        flat = fit.flat()
        rng = np.random.default_rng(seed)
        mu, sigma, d = sample_inputs(40, rng)
        true = predict_loss("ppl", TRUE_PPL, mu, sigma, d)
        measured = true * np.exp(0.01 * rng.standard_normal(40))
        draws = {k: flat[k] for k in TRUE_PPL}
        pred = predictive("ppl", draws, flat["noise"], "normal", None, mu, sigma, d, 0.9, seed)
        ci_hits.append((pred["ci_lo"] <= true) & (true <= pred["ci_hi"]))
        pi_hits.append((pred["pi_lo"] <= measured) & (measured <= pred["pi_hi"]))
    ci, pi = np.mean(ci_hits), np.mean(pi_hits)
    print(f"coverage of 90% intervals: credible (law) {ci:.3f}, predictive (new run) {pi:.3f}")
    assert 0.8 <= ci <= 0.97
    assert 0.85 <= pi <= 0.95


def test_a_parameter_the_runs_do_not_move_is_reported_unidentified():
    """E whose prior the data leave untouched (runs far above any floor, noise large) is not
    'identified' just because it has a posterior; the exponents the runs pin down are."""
    from pplaw_jax.law import LAWS, fit_bayes, fit_point
    from pplaw_jax.law.bayes import Priors, SamplerConfig
    from pplaw_jax.law.runs import runs_from_arrays
    from pplaw_jax.law.synthetic import TRUE_DATA, synthetic_runs

    frame = synthetic_runs("data", TRUE_DATA, n=30, noise=0.01, seed=2)
    runs = runs_from_arrays(frame.mu_ppl, frame.sigma_ppl, frame.tokens, frame.loss)
    point = fit_point(runs, LAWS["data"], bootstrap=4, seed=0)
    fit = fit_bayes(runs, point, Priors(log_E_scale=0.001), SamplerConfig(chains=2, warmup=300, samples=300))
    ident = fit.identified()
    assert ident["E"] is False  # a prior this narrow is all the posterior knows
    assert ident["beta"] is True and ident["B"] is True
    assert fit.to_json()["identified"] == ident


@pytest.mark.parametrize("law", ["ppl", "surface", "data"])
def test_the_sampled_coordinates_carry_the_same_posterior(law):
    """NUTS samples `sampled_model` (m, t, s; slopes and runs padded to one compiled shape)
    instead of `numpyro_model` (log E, c0, c): at any point its log density must be the model's at
    the mapped point, plus the log-determinant of the map's Jacobian (here by autodiff, an
    independent reference for the closed form), plus a standard normal for each padded slope;
    the padded runs add nothing."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from pplaw_jax.law.bayes import SLOTS, centred, numpyro_model, sampled_model, sampler_inputs

    jax.config.update("jax_enable_x64", True)
    try:
        runs = as_runs(synthetic_runs(law="ppl", n=21, noise=0.01, seed=5))
        form = LAWS[law]
        point = fit_point(runs, form, bootstrap=0)
        priors = Priors().resolved(runs)
        z = jnp.asarray(point.design.z(runs.mu, runs.sigma, runs.tokens))
        y = jnp.asarray(np.log(runs.loss))
        old_args = (z, y, priors, jnp.asarray(priors.coef_scales(form)), "student", 4.0)
        new_args = tuple(map(jnp.asarray, sampler_inputs(runs, point.design, priors, 4.0)))
        assert new_args[0].shape == (32, SLOTS + 1)  # 21 runs padded to 32
        k = z.shape[1]

        def to_u(v):  # (m, t, s...) -> (log E, c0, c...)
            m, t, s = v[0], v[1], v[2:]
            return jnp.concatenate(
                [jnp.stack([m + jax.nn.log_sigmoid(t), m + jax.nn.log_sigmoid(-t)]), s / jax.nn.sigmoid(-t)]
            )

        rng = np.random.default_rng(0)
        for u in point.u + rng.normal(0, [1.0, 1.0, *([0.3] * (k - 1))], size=(5, k + 1)):
            c = centred(u)
            v = jnp.asarray(np.concatenate([[c["m"], c["t"]], c["s"]]))
            np.testing.assert_allclose(to_u(v), u, rtol=1e-10, atol=1e-12)  # `centred` inverts the map
            pad = rng.normal(size=SLOTS - (k - 1))
            params = {"m": v[0], "t": v[1], "s": jnp.concatenate([v[2:], pad]), "noise": 0.02}
            new, _ = log_density(sampled_model, new_args, {"likelihood": "student"}, params)
            old, _ = log_density(numpyro_model, old_args, {}, {"log_E": u[0], "c0": u[1], "c": u[2:], "noise": 0.02})
            log_jac = np.linalg.slogdet(np.asarray(jax.jacfwd(to_u)(v)))[1]
            expected = float(old) + log_jac + stats.norm.logpdf(pad).sum()
            np.testing.assert_allclose(float(new), expected, rtol=1e-9, atol=1e-9)
    finally:
        jax.config.update("jax_enable_x64", False)


GROWING_TABLE = """
from pplaw_jax.law import LAWS
from pplaw_jax.law.bayes import Priors, SamplerConfig, fit_bayes
from pplaw_jax.law.point import fit_point
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.law.synthetic import synthetic_runs

for n in (12, 20):  # 16 and 32 padded rows (ROW_BLOCK)
    f = synthetic_runs(law="data", n=n, noise=0.01, seed=n)
    runs = runs_from_arrays(f.mu_ppl, f.sigma_ppl, f.tokens, f.loss, f.run_id)
    point = fit_point(runs, LAWS["data"], bootstrap=2)
    fit = fit_bayes(runs, point, Priors(), SamplerConfig(chains=2, warmup=200, samples=200))
    assert fit.log_lik.shape == (2, 200, n) and fit.diagnostics()["max_r_hat"] < 1.1
"""


def test_one_process_fits_a_runs_table_that_grew_past_a_padded_size():
    """A study fits its growing runs table once per round in one process, reusing the compiled
    sampler; a table that grows past a padded size (here 12 then 20 runs: 16 and 32 rows) gets a
    program of its own. NumPyro's `MCMC` object, reused that way, failed ("vmap was requested to map
    its argument along axis 0 ...": the cpu_tiny study's third round, 34 runs). In a process with one
    CPU device, as `pplaw run` has on a CPU machine."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", GROWING_TABLE], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
