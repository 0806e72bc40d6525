"""`pplaw select` end to end, from directories written in the score and fit contracts."""

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pplaw_jax.cli import main
from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape

POINT = dict(E=1.8, Dc=50.0, alpha0=1.0, alpha1=-0.03, beta0=0.6, beta1=-0.01, alphaD=0.1)
NAMES = list(POINT)


WIDE = {"mu": [1e-3, 1e9], "sigma": [1e-3, 1e9]}


def write_fit(fit_dir, draws=None, law="ppl", params=POINT, box=WIDE):
    """A fit directory as `pplaw fit` writes it: fit.json and, with draws, posterior.nc."""
    fit_dir.mkdir(parents=True)
    bayes = None
    if draws is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz as az
        posterior = {k: v.reshape(2, -1) for k, v in draws.items()}
        posterior["noise"] = np.full_like(posterior[NAMES[0]], 0.01)
        az.from_dict(posterior=posterior).to_netcdf(str(fit_dir / "posterior.nc"), engine="h5netcdf")
        bayes = {"summary": {k: {"mean": float(v.mean()), "sd": float(v.std())}
                             for k, v in draws.items()}, "optimum": None}
    info = {"law": law, "param_names": list(params),
            "point": {"params": params, "ci90": {k: [v, v] for k, v in params.items()}},
            "bayes": bayes, "runs": {"n_runs": 30, **box}}
    (fit_dir / "fit.json").write_text(json.dumps(info))
    return fit_dir


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("select_cli")
    table = synthetic_landscape(3000, seed=11)
    land = write_landscape(root / "land", table, rows_per_part=1000)
    rng = np.random.default_rng(0)
    draws = {k: np.full(400, v) for k, v in POINT.items()}
    draws["alpha1"] = POINT["alpha1"] + rng.normal(0.0, 0.004, 400)
    draws["beta1"] = POINT["beta1"] + rng.gamma(2.0, 0.004, 400)
    return {"root": root, "table": table, "land": str(land),
            "bayes": str(write_fit(root / "fit_bayes", draws)),
            "point": str(write_fit(root / "fit_point"))}


def load(out):
    summary = json.loads((out / "summary.json").read_text())
    return pq.read_table(out / "selection.parquet").to_pandas(), summary


def check_selection(env, out, budget):
    sel, summary = load(out)
    landscape = env["table"].to_pandas()
    merged = sel.merge(landscape, on=["doc_id", "chunk"], suffixes=("", "_land"), validate="1:1")
    assert len(merged) == len(sel)
    assert (merged.n_tokens == merged.n_tokens_land).all() and (merged.ppl == merged.ppl_land).all()
    assert summary["tokens"] == sel.n_tokens.sum() <= budget
    assert budget - summary["tokens"] < landscape.n_tokens.max()
    assert summary["mu"] == pytest.approx(sel.ppl.mean())
    assert summary["sigma"] == pytest.approx(sel.ppl.std(ddof=0))
    assert summary["n_chunks"] == len(sel) and summary["budget"] == budget
    return sel, summary


def test_dos_with_posterior_fit(env, capsys):
    out = env["root"] / "dos"
    rc = main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(out),
               "--fit", env["bayes"]])
    assert rc == 0, capsys.readouterr().err
    sel, s = check_selection(env, out, 300_000)
    assert s["method"] == "dos" and s["target"]["source"] == "posterior"
    choice = s["target_choice"]
    assert s["target"]["mu"] == pytest.approx(choice["posterior"]["mu"])
    assert choice["expected_loss_gap"] >= 0
    assert s["attainable"] and s["warning"] is None and s["distance"] < 0.02
    d = s["tokens"]
    assert s["predicted_loss"] == pytest.approx(
        POINT["E"] + POINT["Dc"] / (s["mu"] ** (POINT["alpha0"] + POINT["alpha1"] * s["sigma"])
                                    * s["sigma"] ** (POINT["beta0"] + POINT["beta1"] * s["mu"])
                                    * d ** POINT["alphaD"]))
    post = s["predicted_loss_posterior"]
    assert post["draws"] == 400 and post["q05"] <= post["mean"] <= post["q95"]

    # --target point gives the point-estimate target, a different subset
    out_point = env["root"] / "dos_point"
    assert main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(out_point),
                 "--fit", env["bayes"], "--target", "point"]) == 0
    _, sp = check_selection(env, out_point, 300_000)
    assert sp["target"]["source"] == "point"
    assert sp["target"]["mu"] == pytest.approx(choice["point"]["mu"])
    # a fit without posterior defaults to the point target
    out_only = env["root"] / "dos_only_point"
    assert main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(out_only),
                 "--fit", env["point"]]) == 0
    _, so = load(out_only)
    assert so["target"]["source"] == "point" and so["target_choice"]["posterior"] is None
    assert so["predicted_loss_posterior"] is None


def test_explicit_unattainable_target_warns(env, capsys):
    out = env["root"] / "dos_explicit"
    with pytest.warns(UserWarning, match="not attainable"):
        rc = main(["select", "--landscape", env["land"], "--tokens", "2e5", "--out", str(out),
                   "--target-mu", "1.5", "--target-sigma", "0.1"])
    assert rc == 0
    _, s = check_selection(env, out, 200_000)
    assert not s["attainable"] and "not attainable" in s["warning"]
    assert s["target"] == {"mu": 1.5, "sigma": 0.1, "source": "explicit"}
    assert s["predicted_loss"] is None and s["fit"] is None


@pytest.mark.parametrize("method", ["random", "low", "high", "mid"])
def test_baselines_and_same_seed_same_bytes(env, method):
    outs = [env["root"] / f"{method}_{i}" for i in range(3)]
    for out, seed in zip(outs, ["3", "3", "4"]):
        assert main(["select", "--landscape", env["land"], "--tokens", "250000", "--out", str(out),
                     "--method", method, "--seed", seed, "--fit", env["point"]]) == 0
        check_selection(env, out, 250_000)
    assert (outs[0] / "selection.parquet").read_bytes() == (outs[1] / "selection.parquet").read_bytes()
    same_seed_other = (outs[0] / "selection.parquet").read_bytes() == \
        (outs[2] / "selection.parquet").read_bytes()
    assert same_seed_other == (method != "random")  # only random depends on the seed
    _, s = load(outs[0])
    assert s["method"] == method and np.isfinite(s["predicted_loss"]) and s["target"] is None


def test_full(env):
    out = env["root"] / "full"
    assert main(["select", "--landscape", env["land"], "--out", str(out), "--method", "full"]) == 0
    sel, s = load(out)
    assert len(sel) == 3000 and s["budget"] is None
    assert s["tokens"] == env["table"]["n_tokens"].to_numpy().sum()


def test_windows_cli(env):
    out = env["root"] / "grid"
    total = int(env["table"]["n_tokens"].to_numpy().sum())
    with pytest.warns(UserWarning, match="skipped"):
        rc = main(["select", "windows", "--landscape", env["land"], "--out", str(out),
                   "--budgets", "1e5", str(total // 6), "--windows", "0-0.2", "0.4-0.5", "0-1"])
    assert rc == 0
    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest.columns) == ["name", "lo_q", "hi_q", "budget", "tokens", "mu", "sigma",
                                      "n_chunks"]
    meta = json.loads((out / "windows.json").read_text())
    assert [s["name"] for s in meta["skipped"]] == [f"w0.40-0.50_b{total // 6}"]
    assert len(manifest) == 5 and manifest.name.tolist() == meta["subsets"]
    for row in manifest.itertuples():
        sel, s = check_selection(env, out / row.name, row.budget)
        assert (s["tokens"], s["n_chunks"]) == (row.tokens, row.n_chunks)
        assert s["mu"] == pytest.approx(row.mu) and s["window"]["lo_q"] == row.lo_q


@pytest.mark.parametrize("case,match", [
    ("no_landscape", "landscape directory not found"),
    ("incomplete", "landscape incomplete"),
    ("zero_budget", "must be positive"),
    ("negative_budget", "must be positive"),
    ("fractional_budget", "whole number"),
    ("missing_fit", "fit.json: not found"),
    ("no_target", "needs --fit"),
    ("half_target", "both --target-mu and --target-sigma"),
    ("data_law", "data-only"),
    ("posterior_missing", "needs a fit with a Bayesian posterior"),
    ("windows_with_tokens", "--tokens is not used"),
])
def test_bad_input_exits_2_with_a_message(env, capsys, case, match):
    root, land = env["root"], env["land"]
    incomplete = root / f"incomplete_{case}"
    write_landscape(incomplete, env["table"].slice(0, 100), rows_per_part=50, complete=False)
    data_fit = root / f"data_fit_{case}"
    write_fit(data_fit, law="data", params={"E": 1.0, "B": 10.0, "beta": 0.3})
    base = ["select", "--landscape", land, "--out", str(root / f"bad_{case}")]
    argv = {
        "no_landscape": ["select", "--landscape", str(root / "none"), "--out", str(root / "x"),
                         "--tokens", "1e5", "--method", "low"],
        "incomplete": ["select", "--landscape", str(incomplete), "--out", str(root / "x"),
                       "--tokens", "1e5", "--method", "low"],
        "zero_budget": base + ["--tokens", "0", "--method", "low"],
        "negative_budget": base + ["--tokens", "-5", "--method", "random"],
        "fractional_budget": base + ["--tokens", "10.5", "--method", "random"],
        "missing_fit": base + ["--tokens", "1e5", "--fit", str(root / "nofit")],
        "no_target": base + ["--tokens", "1e5"],
        "half_target": base + ["--tokens", "1e5", "--target-mu", "20"],
        "data_law": base + ["--tokens", "1e5", "--fit", str(data_fit)],
        "posterior_missing": base + ["--tokens", "1e5", "--fit", env["point"], "--target", "posterior"],
        "windows_with_tokens": ["select", "windows", "--landscape", land, "--out", str(root / "x"),
                                "--tokens", "1e5"],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pplaw select: error:" in err and match in err
    assert not (root / f"bad_{case}" / "summary.json").exists()


def test_dos_target_stays_inside_the_fitted_range_unless_extrapolating(env, capsys):
    """The fit-chosen target is searched only where the law was fitted (fit.json runs range)."""
    wide = env["root"] / "dos_wide"
    assert main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(wide),
                 "--fit", env["point"]]) == 0
    free = load(wide)[1]["target"]
    # a box that excludes the unconstrained optimum: around it, shifted in mu
    box = {"mu": [free["mu"] * 1.1, free["mu"] * 1.5], "sigma": [0.5 * free["sigma"], 2.0 * free["sigma"]]}
    fit_dir = write_fit(env["root"] / "fit_narrow", box=box)
    inside = env["root"] / "dos_inside"
    assert main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(inside),
                 "--fit", str(fit_dir), "--target", "point"]) == 0, capsys.readouterr().err
    t = load(inside)[1]["target"]
    assert box["mu"][0] <= t["mu"] <= box["mu"][1] and box["sigma"][0] <= t["sigma"] <= box["sigma"][1]
    outside = env["root"] / "dos_extrapolate"
    assert main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(outside),
                 "--fit", str(fit_dir), "--target", "point", "--extrapolate"]) == 0
    assert load(outside)[1]["target"]["mu"] == pytest.approx(free["mu"])
