"""Rival law forms, validation that leaves out whole run groups, the group-bootstrap verdict,
PSIS leave-one-group-out, and honest point-fit uncertainty (unidentified E, the Huber delta rule)."""

import json

import numpy as np
import pandas as pd
import pytest

import pplaw_jax.law.bayes as bayes_mod
import pplaw_jax.law.point as point_mod
from pplaw_jax.cli import main
from pplaw_jax.fit.fitdir import load_fit
from pplaw_jax.fit.runs_table import write_runs_table
from pplaw_jax.law import LAWS, predict_loss
from pplaw_jax.law.bayes import BayesFit, Priors, SamplerConfig, loo_compare, numpyro_model, pointwise_log_lik
from pplaw_jax.law.point import HeldOut, compare_heldout, fit_point, heldout_error
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.law.synthetic import TRUE_PPL, synthetic_runs


def literal(law, p, mu, sigma, d):
    """The rival formulas typed in directly, as independent references."""
    lm, ls = np.log(mu), np.log(sigma)
    if law == "mu":
        return p["E"] + p["Dc"] / (mu ** p["alpha0"] * d ** p["alphaD"])
    if law == "nointer":
        return p["E"] + p["Dc"] / (mu ** p["alpha0"] * sigma ** p["beta0"] * d ** p["alphaD"])
    assert law == "quad"
    surface = p["c_mu"] * lm + p["c_sigma"] * ls + p["c_mu2"] * lm**2 + p["c_sigma2"] * ls**2 + p["c_musigma"] * lm * ls
    return p["E"] + p["A"] * np.exp(surface) / d ** p["alphaD"]


MU_P = {"E": 1.6, "Dc": 2000.0, "alpha0": 0.5, "alphaD": 0.3}
NOINTER_P = {"E": 1.6, "Dc": 3000.0, "alpha0": 0.5, "beta0": -0.3, "alphaD": 0.3}
# a strongly curved surface with an interior minimum near mu ~ 17, sigma ~ 11; excess ~0.4 there at D = 1e8
QUAD_P = {"E": 1.5, "c_mu": -3.4, "c_sigma": 1.2, "c_mu2": 0.6, "c_sigma2": -0.25, "c_musigma": 0.0, "alphaD": 0.3}
QUAD_P["A"] = 0.4 * 1e8**0.3 / np.exp(-3.4 * 2.85 + 0.6 * 2.85**2 + 1.2 * 2 - 0.25 * 4)
PARAMS = {"mu": MU_P, "nointer": NOINTER_P, "quad": QUAD_P}


def random_inputs(n, rng):
    def logu(lo, hi):
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    return logu(5, 60), logu(1.5, 40), logu(1e6, 1e9)


def windows(law, params, n_windows, seed, noise=0.005, budgets=(1e7, 1e8, 1e9)):
    """`n_windows` design points, each run at every budget (one group per window)."""
    rng = np.random.default_rng(seed)
    mu, sigma, _ = random_inputs(n_windows, rng)
    k = len(budgets)
    mu, sigma, d = np.repeat(mu, k), np.repeat(sigma, k), np.tile(budgets, n_windows)
    true = literal(law, params, mu, sigma, d) if law in PARAMS else predict_loss(law, params, mu, sigma, d)
    loss = true * np.exp(noise * rng.standard_normal(true.size))
    return runs_from_arrays(mu, sigma, d, loss, group=np.repeat(np.arange(n_windows), k))


def test_rival_forms_match_literal_formulas():
    mu, sigma, d = random_inputs(40, np.random.default_rng(0))
    for law, p in PARAMS.items():
        np.testing.assert_allclose(predict_loss(law, p, mu, sigma, d), literal(law, p, mu, sigma, d), rtol=1e-12)
        form = LAWS[law]
        assert form.uses_perplexity and set(form.param_names) == set(p)
        assert np.all(form.features(mu, sigma, d, np)[:, 0] == 1.0)
    assert LAWS["ppl"].shrunk_exponents == ("alpha1", "beta1")
    assert LAWS["quad"].shrunk_exponents == ("c_mu2", "c_sigma2", "c_musigma")
    assert LAWS["mu"].shrunk_exponents == LAWS["nointer"].shrunk_exponents == LAWS["data"].shrunk_exponents == ()


@pytest.mark.parametrize("law, rtol", [("mu", 0.02), ("nointer", 0.02), ("quad", 0.08)])
def test_rival_parameters_recovered(law, rtol):
    rng = np.random.default_rng(5)
    mu, sigma, d = random_inputs(60, rng)
    loss = literal(law, PARAMS[law], mu, sigma, d) * np.exp(0.002 * rng.standard_normal(60))
    fit = fit_point(runs_from_arrays(mu, sigma, d, loss), LAWS[law], bootstrap=0)
    assert fit.converged and fit.identified["E"]
    for k, v in PARAMS[law].items():
        if k in ("A", "Dc"):  # the scale trades off against the (collinear) exponents; check it in log
            assert np.log(fit.params[k]) == pytest.approx(np.log(v), abs=0.1 * abs(np.log(v))), k
        elif v == 0.0:
            assert abs(fit.params[k]) < 0.05, k
        else:
            assert fit.params[k] == pytest.approx(v, rel=rtol, abs=0.02), k
    # and the fitted law predicts unseen points like the truth
    mu2, sigma2, d2 = random_inputs(100, np.random.default_rng(6))
    np.testing.assert_allclose(fit.predict(mu2, sigma2, d2), literal(law, PARAMS[law], mu2, sigma2, d2), rtol=0.01)


def test_heldout_leaves_out_whole_groups(monkeypatch):
    """A 'law' that memorises each window's budget trend looks perfect when single runs are left out,
    but not when the whole window is; and no training fold ever holds a row of its test group."""
    rng = np.random.default_rng(3)
    n_win, budgets = 6, np.array([1e7, 1e8, 1e9])
    offsets = rng.normal(0, 0.05, n_win)
    mu = np.repeat(np.exp(rng.uniform(1.6, 4, n_win)), 3)
    sigma, d = np.repeat(np.exp(rng.uniform(0.4, 3.6, n_win)), 3), np.tile(budgets, n_win)
    loss = np.exp(1.0 + np.repeat(offsets, 3) - 0.02 * np.log(d))
    window = np.repeat(np.arange(n_win), 3)
    trained_on = []

    class Memoriser:
        def __init__(self, train):
            self.train = train

        def log_predict(self, mu_q, sigma_q, d_q):
            t = self.train
            out = []
            for m, x in zip(mu_q, np.log(d_q)):
                twins = t.mu == m
                sel = twins if twins.sum() >= 2 else np.ones(t.n, dtype=bool)  # else: a global trend
                slope, icpt = np.polyfit(np.log(t.tokens[sel]), np.log(t.loss[sel]), 1)
                out.append(icpt + slope * x)
            return np.array(out)

    def fake_fit(train, form, **kw):
        trained_on.append(set(train.run_ids))
        return Memoriser(train)

    monkeypatch.setattr(point_mod, "fit_point", fake_fit)
    ids = [f"w{w}_b{i}" for w, i in zip(window, np.tile(range(3), n_win))]
    rowwise = heldout_error(runs_from_arrays(mu, sigma, d, loss, run_id=ids), LAWS["mu"])
    assert len(trained_on) == 18 and rowwise.rmse_log < 1e-9  # each run's twins were in training
    trained_on.clear()
    grouped_runs = runs_from_arrays(mu, sigma, d, loss, run_id=ids, group=[f"w{w}" for w in window])
    grouped = heldout_error(grouped_runs, LAWS["mu"])
    assert grouped.leave_one_group_out and grouped.folds == n_win == len(trained_on)
    assert grouped.rmse_log > 0.02
    group_of = dict(zip(ids, window))
    for train_ids in trained_on:
        test_ids = set(ids) - train_ids
        assert {group_of[i] for i in test_ids}.isdisjoint({group_of[i] for i in train_ids})
        assert len(test_ids) == 3
    # k-fold over groups: 3 fits, each test set a union of whole groups
    trained_on.clear()
    kfold = heldout_error(grouped_runs, LAWS["mu"], folds=3)
    assert kfold.folds == 3 == len(trained_on) and not kfold.leave_one_group_out
    for train_ids in trained_on:
        test_ids = set(ids) - train_ids
        assert {group_of[i] for i in test_ids}.isdisjoint({group_of[i] for i in train_ids})


def heldout_from_errors(law, err):
    err = np.asarray(err, dtype=float)
    return HeldOut(law, 4, True, err.size, float(np.sqrt(np.mean(err**2))), 0.0, float(np.abs(err).max()), err)


def test_group_bootstrap_interval_and_verdicts():
    groups = np.repeat(np.arange(8), 3)
    err = np.random.default_rng(0).normal(0, 0.01, 24)
    res = {
        "ppl": heldout_from_errors("ppl", err),
        "same": heldout_from_errors("same", err),
        "half": heldout_from_errors("half", err / 2),
        "double": heldout_from_errors("double", err * 2),
        "broken": "fold 2 leaves 3 training runs",
    }
    out = compare_heldout(res, groups, "ppl", n_boot=1000, seed=1)
    diffs = out["differences"]
    assert diffs["same"]["rmse_diff"] == 0 and diffs["same"]["ci90"] == [0.0, 0.0]
    assert diffs["same"]["verdict"] == "no detectable difference"
    assert diffs["half"]["verdict"] == "better" and diffs["half"]["ci90"][1] < 0
    assert diffs["double"]["verdict"] == "worse" and diffs["double"]["ci90"][0] > 0
    assert diffs["half"]["rmse_diff"] == pytest.approx(-0.5 * res["ppl"].rmse_log)
    assert "fold 2" in diffs["broken"]["error"] and out["laws"]["broken"] == {"error": res["broken"]}
    assert out["best"] == "half"
    # one group carries all of a rival's advantage: resampling groups makes that uncertain
    lucky = err.copy()
    lucky[groups == 0] = 0.0
    big = err.copy()
    big[groups == 0] *= 30
    res = {"ppl": heldout_from_errors("ppl", big), "lucky": heldout_from_errors("lucky", lucky)}
    d = compare_heldout(res, groups, "ppl", n_boot=2000, seed=2)["differences"]["lucky"]
    assert d["rmse_diff"] < 0 and d["ci90"][1] >= 0 and d["verdict"] == "no detectable difference"


def test_verdict_finds_a_curved_truth_and_no_false_winner():
    """Data from `quad` with strong curvature: quad beats ppl on held-out windows.  Data from the
    paper's law: no rival is declared better."""
    runs = windows("quad", QUAD_P, 8, seed=0)
    res = {k: heldout_error(runs, LAWS[k]) for k in ("ppl", "quad")}
    d = compare_heldout(res, runs.groups, "ppl")["differences"]["quad"]
    assert d["verdict"] == "better" and d["ci90"][1] < 0, d
    runs = windows("ppl", TRUE_PPL, 8, seed=1)
    res = {k: heldout_error(runs, LAWS[k], folds=4) for k in ("ppl", "data", "mu", "nointer", "quad")}
    out = compare_heldout(res, runs.groups, "ppl")
    assert all(v["verdict"] != "better" for v in out["differences"].values()), out["differences"]


def test_unidentified_E_has_no_interval():
    # a pure power law (E = 0); with this noise draw the best fit runs E to its bound (with others
    # it may stop at a few 1e-3 x min loss, which the rule counts as identified)
    rng = np.random.default_rng(1)
    d = np.exp(rng.uniform(np.log(1e6), np.log(1e9), 40))
    loss = 300.0 * d**-0.25 * np.exp(0.002 * rng.standard_normal(40))
    fit = fit_point(runs_from_arrays(np.ones(40), np.ones(40), d, loss), LAWS["data"], bootstrap=30)
    js = json.loads(json.dumps(fit.to_json()))
    assert js["identified"]["E"] is False and js["ci90"]["E"] is None and "unidentified" in js["ci90_notes"]["E"]
    lo, hi = js["ci90"]["beta"]
    assert js["identified"]["beta"] and lo < hi and fit.params["beta"] == pytest.approx(0.25, abs=0.005)
    # a law with a real floor: E identified, with an interval of positive width around it
    frame = synthetic_runs(law="data", n=40, noise=0.003, seed=8)
    fit = fit_point(
        runs_from_arrays(frame.mu_ppl, frame.sigma_ppl, frame.tokens, frame.loss), LAWS["data"], bootstrap=30
    )
    lo, hi = fit.ci90["E"]
    assert fit.identified["E"] and lo < 1.8 < hi and hi > lo and fit.ci90_zero_width == []
    # refits that never moved (the old failure: every refit started and stayed at the best fit)
    fit.bootstrap_u = np.repeat(fit.u[None], 30, axis=0)
    assert fit.ci90_zero_width == ["E", "B", "beta"] and "zero-width" in fit.to_json()["ci90_notes"]["beta"]


def test_huber_delta_follows_the_noise():
    noise = 0.02
    fit = fit_point(
        runs_from_arrays(
            *(
                synthetic_runs(law="data", n=200, noise=noise, seed=9)[c]
                for c in ("mu_ppl", "sigma_ppl", "tokens", "loss")
            )
        ),
        LAWS["data"],
        bootstrap=0,
    )
    assert fit.delta == pytest.approx(1.345 * noise, rel=0.2)
    assert fit.to_json()["huber_delta"] == fit.delta == pytest.approx(1.345 * fit.first_pass_sd)
    assert (
        fit_point(
            runs_from_arrays(
                *(
                    synthetic_runs(law="data", n=20, noise=1e-9, seed=9)[c]
                    for c in ("mu_ppl", "sigma_ppl", "tokens", "loss")
                )
            ),
            LAWS["data"],
            bootstrap=0,
        ).delta
        == 1e-4
    )  # the floor
    given = fit_point(
        runs_from_arrays(*(synthetic_runs(n=30, seed=9)[c] for c in ("mu_ppl", "sigma_ppl", "tokens", "loss"))),
        LAWS["ppl"],
        bootstrap=0,
        delta=0.003,
    )
    assert given.delta == 0.003 and given.to_json()["huber_delta_rule"]["rule"] == "given"


def test_shrinkage_prior_and_prior_predictive(tmp_path):
    import jax.numpy as jnp
    from numpyro import handlers

    from pplaw_jax.fit.plots import plot_prior_predictive
    from pplaw_jax.law.bayes import prior_predictive
    from pplaw_jax.law.point import Design

    assert Priors.from_overrides(["interaction_scale=0.2"]).interaction_scale == 0.2
    frame = synthetic_runs(n=20, seed=4)
    runs = runs_from_arrays(frame.mu_ppl, frame.sigma_ppl, frame.tokens, frame.loss)
    for law, scales in (
        ("ppl", [2.5, 0.5, 2.5, 0.5, 2.5]),
        ("quad", [2.5, 2.5, 0.5, 0.5, 0.5, 2.5]),
        ("nointer", [2.5] * 3),
    ):
        design = Design.from_runs(LAWS[law], runs)
        priors = Priors().resolved(runs)
        z = jnp.asarray(design.z(runs.mu, runs.sigma, runs.tokens))
        tr = handlers.trace(handlers.seed(numpyro_model, 0)).get_trace(
            z, None, priors, jnp.asarray(priors.coef_scales(LAWS[law])), "normal", 4.0
        )
        np.testing.assert_allclose(np.asarray(tr["c"]["fn"].base_dist.scale), scales)
    # prior predictive of ppl against a plain numpy draw from the documented priors
    design = Design.from_runs(LAWS["ppl"], runs)
    draws = prior_predictive(runs, design, Priors(), "normal", 4.0, num_samples=20000, seed=1)
    assert draws.shape == (20000, 20)
    rng = np.random.default_rng(0)
    p = Priors().resolved(runs)
    z = design.z(runs.mu, runs.sigma, runs.tokens)
    s = 100_000
    log_e = rng.normal(p.log_E_loc, p.log_E_scale, s)
    c0 = rng.normal(p.intercept_loc, p.intercept_scale, s)
    c = rng.normal(0, 1, (s, 5)) * np.array([2.5, 0.5, 2.5, 0.5, 2.5])
    ref = np.logaddexp(log_e[:, None], c0[:, None] + c @ z[:, 1:].T) + np.abs(rng.normal(0, 0.1, s))[
        :, None
    ] * rng.standard_normal((s, 20))
    for q in (0.05, 0.5, 0.95):
        np.testing.assert_allclose(np.quantile(draws, q, axis=0), np.quantile(ref, q, axis=0), atol=0.35)
    plot_prior_predictive(runs, draws, tmp_path / "prior_predictive.png")
    assert (tmp_path / "prior_predictive.png").stat().st_size > 10_000


def fake_fit_bayes(runs, point, priors, config):
    """A stand-in posterior (no NUTS): draws around the point fit; rivals report divergences."""
    rng = np.random.default_rng(0)
    c, s = config.chains, config.samples
    u = point.u + 0.002 * rng.standard_normal((c, s, point.u.size))
    draws = {k: np.asarray(v) for k, v in point.design.params(u).items()}
    draws["noise"] = 0.01 + 0.001 * np.abs(rng.standard_normal((c, s)))
    flat = {k: v.reshape(-1) for k, v in draws.items()}
    log_lik = pointwise_log_lik(point.form, flat, runs, "normal", 4.0).reshape(c, s, -1)
    stats = {"diverging": np.full((c, s), point.form.name != "ppl")}
    return BayesFit(point.form, point.design, priors.resolved(runs), config, draws, stats, log_lik, runs, 0.0, "fake")


def test_comparison_block_with_unconverged_rivals(tmp_path, monkeypatch):
    """The whole comparison of `pplaw fit`, with every rival's NUTS fit failing its checks: the
    main fit still completes and every law is compared by LOO over groups."""
    monkeypatch.setattr(bayes_mod, "fit_bayes", fake_fit_bayes)
    frame = synthetic_runs(n=24, seed=14)
    frame["group"] = [f"w{i // 3}" for i in range(24)]
    write_runs_table(tmp_path / "runs.csv", frame)
    rc = main(
        [
            "fit",
            "--moments",
            "ppl",
            "--runs",
            str(tmp_path / "runs.csv"),
            "--out",
            str(tmp_path / "fit"),
            "--method",
            "bayes",
            "--chains",
            "2",
            "--samples",
            "1000",
            "--no-plots",
            "--folds",
            "4",
        ]
    )
    assert rc == 0
    info = load_fit(tmp_path / "fit").info
    comp = info["comparison"]
    laws = tuple(LAWS)
    rivals = [k for k in laws if k != info["law"]]  # the law the fit chose has the main NUTS fit
    ho = comp["heldout"]
    assert set(ho["laws"]) == set(laws) and set(ho["differences"]) == set(laws[1:])
    assert "4-fold over groups" in ho["method"] and "8 groups" in ho["method"]
    for v in ho["laws"].values():
        assert len(v["per_run_log_error"]) == 24 and v["n_scored"] == 24
    assert all(v["verdict"] in ("better", "worse", "no detectable difference") for v in ho["differences"].values())
    loo = comp["loo"]
    assert "summed over the rows of each run group" in loo["method"]
    assert set(loo["laws"]) == set(laws) and loo["best"] in laws
    for name in laws:
        v = loo["laws"][name]
        assert v["n_groups"] == 8 and sum(v["pareto_k"][k] for k in ("good", "bad", "very_bad")) == 8
        assert {"elpd_loo", "se", "rank", "weight"} <= set(v)
    for name in rivals:
        nuts = loo["laws"][name]["nuts"]
        assert nuts["converged"] is False and any("divergent" in p for p in nuts["problems"])
    agree = loo["best"] == ho["best"]
    assert loo["disagreement"].startswith("no:" if agree else "yes:")
    assert set(comp["wall_s"]) == {"heldout", "nuts_all_laws", "loo"}
    assert info["bayes"]["priors"]["interaction_scale"] == 0.5
    assert info["bayes"]["interaction_prior_on"] == ["alpha1", "beta1"]


def test_loo_sums_log_likelihood_over_groups():
    """elpd over groups equals arviz's LOO on the per-group sums (computed here with pandas)."""
    import warnings

    from pplaw_jax.law.bayes import import_arviz

    runs = windows("ppl", TRUE_PPL, 6, seed=3)
    point = fit_point(runs, LAWS["ppl"], bootstrap=0)
    fit = fake_fit_bayes(runs, point, Priors(), SamplerConfig(chains=2, samples=300))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = loo_compare({"ppl": fit})
        az = import_arviz()
        ll = fit.log_lik.reshape(-1, runs.n)
        summed = pd.DataFrame(ll.T).groupby(runs.groups).sum().to_numpy().T.reshape(2, 300, -1)
        names = list(LAWS["ppl"].param_names) + ["noise"]
        ref = az.loo(az.from_dict(posterior={k: fit.draws[k] for k in names}, log_likelihood={"y": summed}))
    assert out["laws"]["ppl"]["n_groups"] == 6
    assert out["laws"]["ppl"]["elpd_loo"] == pytest.approx(float(ref.elpd_loo), rel=1e-10)


@pytest.mark.parametrize("law", ["mu", "nointer", "quad"])
def test_fit_cli_with_a_rival_law(tmp_path, law):
    write_runs_table(tmp_path / "runs.csv", synthetic_runs(n=30, seed=15))
    plots = [] if law == "quad" else ["--no-plots"]
    rc = main(
        [
            "fit",
            "--moments",
            "ppl",
            "--runs",
            str(tmp_path / "runs.csv"),
            "--out",
            str(tmp_path / "fit"),
            "--law",
            law,
            "--method",
            "point",
            "--bootstrap",
            "10",
            *plots,
        ]
    )
    assert rc == 0
    info = load_fit(tmp_path / "fit").info
    assert info["law"] == law and info["param_names"] == list(LAWS[law].param_names)
    assert info["comparison"] is None and info["point"]["optimum"]["mu"] > 0
    if law == "quad":
        assert (tmp_path / "fit" / "surface.png").stat().st_size > 10_000
