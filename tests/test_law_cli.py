"""`pplaw fit` / `pplaw predict` end to end on small synthetic runs, and the load_fit API."""

import hashlib
import io
import warnings
from contextlib import redirect_stdout

import numpy as np
import pandas as pd
import pytest

from pplaw_jax.cli import main
from pplaw_jax.fit.fitdir import load_fit
from pplaw_jax.fit.runs_table import write_runs_table
from pplaw_jax.law import LAWS, predict_loss
from pplaw_jax.law.synthetic import TRUE_PPL, synthetic_runs

NUTS_SMALL = ["--chains", "2", "--warmup", "500", "--samples", "500", "--bootstrap", "50", "--folds", "4"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One full `pplaw fit --method both` on 40 synthetic runs from TRUE_PPL (noise 1% on log-loss)."""
    root = tmp_path_factory.mktemp("law")
    frame = synthetic_runs(n=40, noise=0.01, seed=11)
    write_runs_table(root / "runs.csv", frame.drop(columns="loss_true"))
    rc = main(["fit", "--moments", "ppl", "--runs", str(root / "runs.csv"), "--out", str(root / "fit"), *NUTS_SMALL])
    assert rc == 0
    return root, frame


def test_fit_json_and_outputs(fitted):
    root, _ = fitted
    info = load_fit(root / "fit").info
    names = ["E", "Dc", "alpha0", "alpha1", "beta0", "beta1", "alphaD"]
    assert info["law"] == "ppl" and info["param_names"] == names
    # bound to what produced it: the runs table's bytes and the resolved options
    assert info["runs"]["sha256"] == hashlib.sha256((root / "runs.csv").read_bytes()).hexdigest()
    assert info["options"]["bootstrap"] == 50 and info["options"]["folds"] == 4
    assert info["options"]["sampler"]["chains"] == 2
    assert set(info["point"]["params"]) == set(names) and set(info["point"]["ci90"]) == set(names)
    bayes = info["bayes"]
    assert bayes["converged"] and bayes["divergences"] == 0
    for name in names + ["noise"]:
        s = bayes["summary"][name]
        assert {"mean", "sd", "q05", "q95", "r_hat", "ess_bulk"} <= set(s)
        assert s["r_hat"] < 1.01 and s["ess_bulk"] >= 200
    for png in ("trace", "pair", "pred_vs_obs", "surface", "loss_vs_tokens", "prior_predictive"):
        assert (root / "fit" / f"{png}.png").stat().st_size > 10_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    idata = az.from_netcdf(str(root / "fit" / "posterior.nc"))
    for name in names:
        assert idata.posterior[name].dims == ("chain", "draw") and idata.posterior[name].shape == (2, 500)
    assert idata.log_likelihood["log_loss"].shape == (2, 500, 40)


def test_bayes_recovers_truth_and_prefers_the_true_law(fitted):
    root, _ = fitted
    fit = load_fit(root / "fit")
    draws = fit.posterior_draws()
    assert set(draws) == set(TRUE_PPL) and all(v.shape == (1000,) for v in draws.values())
    inside90 = [np.quantile(draws[k], 0.05) <= v <= np.quantile(draws[k], 0.95) for k, v in TRUE_PPL.items()]
    assert sum(inside90) >= 5
    for k, v in TRUE_PPL.items():  # every parameter within its central 99% interval
        assert np.quantile(draws[k], 0.005) <= v <= np.quantile(draws[k], 0.995), k
    assert np.quantile(fit.noise_draws(), 0.05) < 0.01 < np.quantile(fit.noise_draws(), 0.95)
    comp = fit.info["comparison"]
    assert comp["loo"]["best"] == "ppl" and comp["loo"]["laws"]["data"]["elpd_diff"] > 10
    assert comp["heldout"]["laws"]["ppl"]["rmse_log_loss"] < comp["heldout"]["laws"]["data"]["rmse_log_loss"]
    assert comp["heldout"]["best"] == "ppl" and comp["heldout"]["differences"]["data"]["verdict"] == "worse"
    assert set(comp["loo"]["laws"]) == set(LAWS)
    assert comp["loo"]["disagreement"].startswith("no:")
    # the posterior of the optimum covers the true interior optimum (20, 8)
    opt = fit.info["bayes"]["optimum"]
    assert opt["mu"]["q05"] <= 20.0 <= opt["mu"]["q95"] and opt["sigma"]["q05"] <= 8.0 <= opt["sigma"]["q95"]
    assert opt["credible_region"]["polygons"]


def test_predict_cli_points_and_flags(fitted, tmp_path, capsys):
    root, _ = fitted
    fit = load_fit(root / "fit")
    assert main(["predict", "--fit", str(root / "fit"), "--mu", "20", "--sigma", "8", "--tokens", "1e8"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    row = table.iloc[0]
    truth = predict_loss("ppl", TRUE_PPL, 20.0, 8.0, 1e8)
    assert row.interval_source == "posterior"
    assert row.pi_lo < row.ci_lo <= row.loss_mean <= row.ci_hi < row.pi_hi
    assert row.ci_lo - 0.01 < truth < row.ci_hi + 0.01
    assert row.loss_point == pytest.approx(predict_loss("ppl", fit.point_params, 20.0, 8.0, 1e8), rel=1e-5)
    pts = pd.DataFrame({"mu": [10.0, 30.0], "sigma": [3.0, 20.0], "tokens": [1e7, 1e9]})
    pts.to_csv(tmp_path / "pts.csv", index=False)
    out = tmp_path / "pred.csv"
    assert main(["predict", "--fit", str(root / "fit"), "--points", str(tmp_path / "pts.csv"), "--out", str(out)]) == 0
    pred = pd.read_csv(out)
    assert len(pred) == 2 and (pred.ci_hi > pred.ci_lo).all()
    assert row.extrapolation != row.extrapolation  # inside the runs' support and token range: empty
    # far outside what the runs covered: flagged, as a point in the support with a token count past theirs
    far = pd.DataFrame({"mu": [500.0, 20.0], "sigma": [0.01, 8.0], "tokens": [1e8, 1e13]})
    far.to_csv(tmp_path / "far.csv", index=False)
    assert main(["predict", "--fit", str(root / "fit"), "--points", str(tmp_path / "far.csv"), "--out", str(out)]) == 0
    assert pd.read_csv(out).extrapolation.tolist() == ["support", "tokens"]
    assert main(["predict", "--fit", str(root / "fit"), "--mu", "20", "--tokens", "1e8"]) == 2
    assert "--sigma" in capsys.readouterr().err
    for name, content, message in [
        ("empty.csv", b"", "empty points file"),
        ("header.csv", b"mu,sigma,tokens\n", "no points"),
        ("latin1.csv", b"mu,sigma,tokens\n1,2,caf\xe9\n", "not a readable UTF-8 CSV"),
    ]:
        (tmp_path / name).write_bytes(content)
        assert main(["predict", "--fit", str(root / "fit"), "--points", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{name}: {message}" in err and len(err.strip().splitlines()) == 1, err


def test_point_only_fit_and_bootstrap_intervals(tmp_path, capsys):
    write_runs_table(tmp_path / "runs.csv", synthetic_runs(n=30, seed=12))
    out = tmp_path / "fit"
    out.mkdir()
    (out / "trace.png").write_bytes(b"stale")  # left by an earlier Bayesian fit
    rc = main(
        [
            "fit",
            "--moments",
            "ppl",
            "--runs",
            str(tmp_path / "runs.csv"),
            "--out",
            str(out),
            "--method",
            "point",
            "--bootstrap",
            "40",
            "--folds",
            "3",
        ]
    )
    assert rc == 0
    fit = load_fit(out)
    assert fit.posterior_draws() is None and fit.info["bayes"] is None and not (out / "posterior.nc").exists()
    assert fit.info["plots"] == ["loss_vs_tokens.png", "pred_vs_obs.png", "surface.png"]
    assert not (out / "trace.png").exists()
    assert fit.info["comparison"]["loo"] is None and "data" in fit.info["comparison"]["heldout"]["laws"]
    capsys.readouterr()
    with redirect_stdout(io.StringIO()) as buf:
        assert main(["predict", "--fit", str(out), "--mu", "15", "--sigma", "5", "--tokens", "3e7"]) == 0
    row = pd.read_csv(io.StringIO(buf.getvalue())).iloc[0]
    assert row.interval_source == "bootstrap" and row.ci_lo < row.loss_point < row.ci_hi


def test_unconverged_fit_leaves_no_fit_json(tmp_path, capsys):
    write_runs_table(tmp_path / "runs.csv", synthetic_runs(law="data", n=12, seed=13))
    out = tmp_path / "fit"
    out.mkdir()
    (out / "fit.json").write_text("{}")  # a stale fit must not survive a failed rerun
    rc = main(
        [
            "fit",
            "--moments",
            "ppl",
            "--runs",
            str(tmp_path / "runs.csv"),
            "--out",
            str(out),
            "--law",
            "data",
            "--chains",
            "2",
            "--warmup",
            "20",
            "--samples",
            "20",
            "--bootstrap",
            "0",
            "--no-plots",
        ]
    )
    assert rc == 1
    assert "did not converge" in capsys.readouterr().err
    assert not (out / "fit.json").exists() and (out / "diagnostics.json").exists()
    rc = main(
        [
            "fit",
            "--moments",
            "ppl",
            "--runs",
            str(tmp_path / "runs.csv"),
            "--out",
            str(out),
            "--law",
            "data",
            "--chains",
            "2",
            "--warmup",
            "20",
            "--samples",
            "20",
            "--bootstrap",
            "0",
            "--no-plots",
            "--allow-unconverged",
        ]
    )
    assert rc == 0
    bayes = load_fit(out).info["bayes"]
    assert not bayes["converged"] and bayes["problems"] and not (out / "diagnostics.json").exists()


def test_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "runs.csv").write_text("mu_ppl,sigma_ppl,loss\n1,2,3\n")
    assert main(["fit", "--moments", "ppl", "--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "f")]) == 2
    assert "missing column(s) tokens for law 'ppl' in ppl moments" in capsys.readouterr().err
    write_runs_table(tmp_path / "ok.csv", synthetic_runs(n=10, seed=1))
    assert (
        main(
            [
                "fit",
                "--moments",
                "ppl",
                "--runs",
                str(tmp_path / "ok.csv"),
                "--out",
                str(tmp_path / "f"),
                "--prior",
                "coef_scale=-1",
            ]
        )
        == 2
    )
    assert "scales must be > 0" in capsys.readouterr().err
    assert (
        main(
            [
                "fit",
                "--moments",
                "ppl",
                "--runs",
                str(tmp_path / "ok.csv"),
                "--out",
                str(tmp_path / "f"),
                "--trust-margin",
                "-1",
            ]
        )
        == 2
    )
    assert main(["predict", "--fit", str(tmp_path / "nowhere"), "--mu", "1", "--sigma", "1", "--tokens", "1"]) == 2
    assert "fit.json: not found" in capsys.readouterr().err
    assert not (tmp_path / "f" / "fit.json").exists()
