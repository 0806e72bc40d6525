"""Law forms, the public predict_loss, parameter maps and the optimum search (pure numerics)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from pplaw_jax.errors import PplawError
from pplaw_jax.law import LAWS, get_law, predict_loss
from pplaw_jax.law.forms import log_loss
from pplaw_jax.law.optimum import GRID, FeasibleGrid, credible_region
from pplaw_jax.law.point import Design
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.law.synthetic import TRUE_PPL, ppl_params_with_optimum, synthetic_runs


def literal_ppl(p, mu, sigma, d):
    """The paper's formula typed in directly, as an independent reference."""
    return p["E"] + p["Dc"] / (
        mu ** (p["alpha0"] + p["alpha1"] * sigma) * sigma ** (p["beta0"] + p["beta1"] * mu) * d ** p["alphaD"]
    )


def test_predict_loss_matches_literal_formula_and_broadcasts():
    rng = np.random.default_rng(0)
    mu, sigma, d = rng.uniform(3, 80, 50), rng.uniform(1, 50, 50), 10 ** rng.uniform(5, 10, 50)
    np.testing.assert_allclose(
        predict_loss("ppl", TRUE_PPL, mu, sigma, d), literal_ppl(TRUE_PPL, mu, sigma, d), rtol=1e-12
    )
    data = {"E": 1.2, "B": 300.0, "beta": 0.28}
    np.testing.assert_allclose(predict_loss("data", data, None, None, d), 1.2 + 300.0 / d**0.28, rtol=1e-12)
    # S draws x N points through numpy broadcasting
    draws = {k: v * (1 + 0.01 * rng.standard_normal(7))[:, None] for k, v in TRUE_PPL.items()}
    out = predict_loss("ppl", draws, mu[None, :], sigma[None, :], d[None, :])
    assert out.shape == (7, 50)
    one = {k: float(v[3, 0]) for k, v in draws.items()}
    np.testing.assert_allclose(out[3], literal_ppl(one, mu, sigma, d), rtol=1e-12)


def test_log_loss_is_jittable_and_agrees_with_numpy():
    form = LAWS["ppl"]
    log_e, theta = form.from_params(TRUE_PPL)
    mu, sigma, d = np.array([5.0, 20.0, 50.0]), np.array([2.0, 8.0, 30.0]), np.array([1e6, 1e8, 1e9])
    f = jax.jit(lambda le, th, m, s, t: log_loss(form, le, th, m, s, t, jnp))
    got = f(jnp.float32(log_e), jnp.asarray(theta, jnp.float32), mu, sigma, d)
    np.testing.assert_allclose(np.exp(np.asarray(got)), literal_ppl(TRUE_PPL, mu, sigma, d), rtol=1e-5)


def test_parameter_maps_round_trip():
    for name, form in LAWS.items():
        runs = runs_from_arrays(*(synthetic_runs(n=20)[c] for c in ("mu_ppl", "sigma_ppl", "tokens", "loss")))
        design = Design.from_runs(form, runs)
        params = (
            TRUE_PPL
            if name == "ppl"
            else {"E": 1.1, form.scale_name: 50.0, **{n: -0.2 + 0.15 * i for i, n in enumerate(form.exponent_names)}}
        )
        back = design.params(design.u_from_params(params))
        assert set(back) == set(form.param_names)
        for k in params:
            np.testing.assert_allclose(back[k], params[k], rtol=1e-10)
        # the standardised features reproduce features @ theta
        log_e, theta = form.from_params(params)
        z = design.z(runs.mu, runs.sigma, runs.tokens)
        feats = form.features(runs.mu, runs.sigma, runs.tokens, np)
        np.testing.assert_allclose(z @ design.c_from_theta(theta), feats @ theta, rtol=1e-10)


def test_unknown_law_and_missing_parameter():
    with pytest.raises(PplawError, match="unknown law"):
        get_law("chinchilla")
    with pytest.raises(PplawError, match="alphaD"):
        predict_loss("ppl", {k: v for k, v in TRUE_PPL.items() if k != "alphaD"}, 10.0, 5.0, 1e8)


def box(mu_range, sigma_range):
    """A rectangular feasible set (a stand-in for the supported region)."""
    (a, b), (c, d) = mu_range, sigma_range
    return FeasibleGrid(mu_range, sigma_range, lambda m, s: (m >= a) & (m <= b) & (s >= c) & (s <= d))


def test_optimum_found_inside_the_feasible_set_and_on_its_edge():
    form = LAWS["ppl"]
    params = ppl_params_with_optimum(mu_star=20.0, sigma_star=8.0)
    log_e, theta = form.from_params(params)
    grid = box((5, 60), (1.5, 40))
    opt = grid.argmin_draws(form, np.array([log_e]), theta[None], 1e8)
    cell = np.log(60 / 5) / (GRID - 1)  # the grid's resolution in log mu
    assert abs(np.log(opt["mu"][0] / 20.0)) <= cell and abs(np.log(opt["sigma"][0] / 8.0)) <= cell
    assert not opt["at_boundary"][0]
    # the refined single target lands on the optimum itself
    mu, sigma, loss, edge = grid.minimise(lambda m, s: predict_loss("ppl", params, m, s, 1e8))
    assert mu == pytest.approx(20.0, rel=5e-3) and sigma == pytest.approx(8.0, rel=5e-3) and not edge
    assert loss == pytest.approx(predict_loss("ppl", params, 20.0, 8.0, 1e8), rel=1e-6)
    # independent of D: the same optimum at another token count
    opt2 = grid.argmin_draws(form, np.array([log_e]), theta[None], 1e6)
    assert (opt2["mu"][0], opt2["sigma"][0]) == (opt["mu"][0], opt["sigma"][0])
    # a set that excludes the optimum: the minimum is on the edge and matches a brute-force grid
    box_mu, box_sig = (30, 60), (1.5, 40)
    narrow = box(box_mu, box_sig)
    edge = narrow.argmin_draws(form, np.array([log_e]), theta[None], 1e8)
    assert edge["at_boundary"][0]
    mu, sigma, loss, at_edge = narrow.minimise(lambda m, s: predict_loss("ppl", params, m, s, 1e8))
    assert at_edge
    m, s = np.meshgrid(np.geomspace(*box_mu, 1500), np.geomspace(*box_sig, 1500))
    brute = predict_loss("ppl", params, m, s, 1e8).min()
    assert loss == pytest.approx(brute, rel=1e-6)


def test_credible_region_holds_the_stated_mass():
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal([np.log(20), np.log(8)], [[0.04, 0.02], [0.02, 0.03]], size=2000)
    mu, sigma = np.exp(x[:, 0]), np.exp(x[:, 1])
    region = credible_region(mu, sigma, (1, 1000), (1, 1000), level=0.9)
    assert region["method"].startswith("KDE")
    inside = np.zeros(len(mu), dtype=bool)
    for poly in region["polygons"]:
        inside |= MplPath(np.asarray(poly)).contains_points(np.column_stack([mu, sigma]))
    assert 0.86 < inside.mean() < 0.94
    degenerate = credible_region(np.full(100, 60.0), np.full(100, 2.0), (5, 60), (2, 40))
    assert degenerate["method"].startswith("marginal") and degenerate["polygons"][0][0] == [60.0, 2.0]


def test_law_is_numerics_only():
    """Every module of `pplaw_jax.law` imports without the fit stage (files, plots, commands) or
    matplotlib: dependencies point from `pplaw_jax.fit` to `pplaw_jax.law`, never back."""
    code = (
        "import importlib, pkgutil, sys; import pplaw_jax.law as law\n"
        "for m in pkgutil.iter_modules(law.__path__): importlib.import_module('pplaw_jax.law.' + m.name)\n"
        "print(sorted(k for k in sys.modules if k.startswith(('pplaw_jax.fit', 'matplotlib'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
