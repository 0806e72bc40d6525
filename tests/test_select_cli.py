"""`pplaw select` end to end, from directories written in the score and fit contracts."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pplaw_jax.cli import main
from pplaw_jax.fit.fitdir import write_fit_json, write_posterior
from pplaw_jax.law.bayes import import_arviz
from pplaw_jax.law.synthetic import ppl_params_with_optimum
from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape

# a perplexity-aware law with its optimum at (mu, sigma) = (20, 8), inside what 3e5 tokens of the
# test landscape can supply (mu 8..50, sigma up to ~25 there)
POINT = ppl_params_with_optimum(20.0, 8.0, E=1.8, excess=0.3, tokens_at_excess=3e5)
NAMES = list(POINT)


# fitted runs at the corners and centre of a box (in log space) wider than any synthetic landscape
WIDE = [[m, s] for m in (1.0, 1e3) for s in (0.01, 1e3)] + [[30.0, 3.0]]


def write_fit(fit_dir, draws=None, law="ppl", params=POINT, points=WIDE, margin=0.1, moments="ppl"):
    """A fit directory as `pplaw fit` writes it: fit.json and, with draws, posterior.nc."""
    fit_dir.mkdir(parents=True)
    bayes = None
    if draws is not None:
        posterior = {k: v.reshape(2, -1) for k, v in draws.items()}
        posterior["noise"] = np.full_like(posterior[NAMES[0]], 0.01)
        write_posterior(fit_dir, import_arviz().from_dict(posterior=posterior))
        bayes = {
            "summary": {k: {"mean": float(v.mean()), "sd": float(v.std())} for k, v in draws.items()},
            "optimum": None,
        }
    info = {
        "law": law,
        "param_names": list(params),
        "moments": moments,
        "point": {"params": params, "ci90": {k: [v, v] for k, v in params.items()}},
        "bayes": bayes,
        "runs": {"n_runs": len(points), "points": points},
        "support": {"margin": margin},
    }
    write_fit_json(fit_dir, info)
    return fit_dir


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("select_cli")
    table = synthetic_landscape(3000, seed=11)
    land = write_landscape(root / "land", table, rows_per_part=1000)
    rng = np.random.default_rng(0)
    draws = {k: np.full(400, v) for k, v in POINT.items()}
    draws["alpha1"] = POINT["alpha1"] + rng.normal(0.0, 0.0003, 400)
    draws["beta1"] = POINT["beta1"] + rng.gamma(2.0, 0.0002, 400)
    return {
        "root": root,
        "table": table,
        "land": str(land),
        "bayes": str(write_fit(root / "fit_bayes", draws)),
        "point": str(write_fit(root / "fit_point")),
    }


def load(out):
    summary = json.loads((out / "summary.json").read_text())
    return pq.read_table(out / "selection.parquet").to_pandas(), summary


def check_selection(env, out, budget, moments="ppl"):
    sel, summary = load(out)
    landscape = env["table"].to_pandas()
    merged = sel.merge(landscape, on=["doc_id", "chunk"], suffixes=("", "_land"), validate="1:1")
    assert len(merged) == len(sel)
    assert (merged.n_tokens == merged.n_tokens_land).all() and (merged.ppl == merged.ppl_land).all()
    assert summary["tokens"] == sel.n_tokens.sum() <= budget
    assert budget - summary["tokens"] < landscape.n_tokens.max()
    x = sel.ppl.to_numpy() if moments == "ppl" else np.log(sel.ppl.to_numpy())
    assert summary["moments"] == moments
    assert summary["mu"] == pytest.approx(x.mean())
    assert summary["sigma"] == pytest.approx(x.std(ddof=0))
    assert summary["n_chunks"] == len(sel) and summary["budget"] == budget
    return sel, summary


def test_dos_with_posterior_fit(env, capsys):
    out = env["root"] / "dos"
    rc = main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(out), "--fit", env["bayes"]])
    assert rc == 0, capsys.readouterr().err
    sel, s = check_selection(env, out, 300_000)
    assert s["method"] == "dos" and s["target"]["source"] == "posterior"

    # bound to what produced it: digests of the landscape's summary and of the fit's fit.json,
    # which ignore their timing fields (a rerun of the same inputs gives the same selection bytes)
    def digest(path, drop=()):
        obj = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
        return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()

    summary_path = Path(env["land"]) / "summary.json"
    from pplaw_jax.select.cli import LANDSCAPE_TIMING

    assert s["landscape_digest"] == digest(summary_path, LANDSCAPE_TIMING)
    assert s["fit_digest"] == digest(Path(env["bayes"]) / "fit.json")
    timed = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**timed, "run_seconds": 123.0}))  # another run of the same landscape
    try:
        assert (
            main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(out), "--fit", env["bayes"]])
            == 0
        )
        assert load(out)[1]["landscape_digest"] == s["landscape_digest"]
    finally:
        summary_path.write_text(json.dumps(timed))
    choice = s["target_choice"]
    assert s["target"]["mu"] == pytest.approx(choice["posterior"]["mu"])
    assert choice["expected_loss_gap"] >= 0
    assert s["attainable"] and s["warning"] is None and s["distance"] < 0.02
    d = s["tokens"]
    assert s["predicted_loss"] == pytest.approx(
        POINT["E"]
        + POINT["Dc"]
        / (
            s["mu"] ** (POINT["alpha0"] + POINT["alpha1"] * s["sigma"])
            * s["sigma"] ** (POINT["beta0"] + POINT["beta1"] * s["mu"])
            * d ** POINT["alphaD"]
        )
    )
    post = s["predicted_loss_posterior"]
    assert post["ci"][0] <= post["mean"] <= post["ci"][1]
    assert post["pi"][0] < post["ci"][0] and post["pi"][1] > post["ci"][1]  # run noise widens it
    interior = choice["interior"]
    assert interior["source"] == "posterior" and interior["draws"] == 400
    assert interior["fraction_at_boundary"] <= 0.2

    # --target point gives the point-estimate target, a different subset
    out_point = env["root"] / "dos_point"
    assert (
        main(
            [
                "select",
                "--landscape",
                env["land"],
                "--tokens",
                "3e5",
                "--out",
                str(out_point),
                "--fit",
                env["bayes"],
                "--target",
                "point",
            ]
        )
        == 0
    )
    _, sp = check_selection(env, out_point, 300_000)
    assert sp["target"]["source"] == "point"
    assert sp["target"]["mu"] == pytest.approx(choice["point"]["mu"])
    # a fit without posterior defaults to the point target
    out_only = env["root"] / "dos_only_point"
    assert (
        main(["select", "--landscape", env["land"], "--tokens", "3e5", "--out", str(out_only), "--fit", env["point"]])
        == 0
    )
    _, so = load(out_only)
    assert so["target"]["source"] == "point" and so["target_choice"]["posterior"] is None
    assert so["predicted_loss_posterior"] is None


def test_explicit_unattainable_target_warns(env, capsys):
    out = env["root"] / "dos_explicit"
    with pytest.warns(UserWarning, match="not attainable"):
        rc = main(
            [
                "select",
                "--landscape",
                env["land"],
                "--tokens",
                "2e5",
                "--out",
                str(out),
                "--target-mu",
                "1.5",
                "--target-sigma",
                "0.1",
                "--selector",
                "bands",
                "--moments",
                "ppl",
            ]
        )
    assert rc == 0
    _, s = check_selection(env, out, 200_000)
    assert not s["attainable"] and "not attainable" in s["warning"]
    assert s["target"] == {"mu": 1.5, "sigma": 0.1, "source": "explicit"}
    assert s["predicted_loss"] is None and s["fit"] is None


@pytest.mark.parametrize("method", ["random", "low", "high", "mid"])
def test_baselines_and_same_seed_same_bytes(env, method):
    outs = [env["root"] / f"{method}_{i}" for i in range(3)]
    for out, seed in zip(outs, ["3", "3", "4"]):
        assert (
            main(
                [
                    "select",
                    "--landscape",
                    env["land"],
                    "--tokens",
                    "250000",
                    "--out",
                    str(out),
                    "--method",
                    method,
                    "--seed",
                    seed,
                    "--fit",
                    env["point"],
                ]
            )
            == 0
        )
        check_selection(env, out, 250_000)
    assert (outs[0] / "selection.parquet").read_bytes() == (outs[1] / "selection.parquet").read_bytes()
    same_seed_other = (outs[0] / "selection.parquet").read_bytes() == (outs[2] / "selection.parquet").read_bytes()
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
        rc = main(
            [
                "select",
                "windows",
                "--landscape",
                env["land"],
                "--out",
                str(out),
                "--budgets",
                "1e5",
                str(total // 6),
                "--windows",
                "0-0.2",
                "0.4-0.5",
                "0-1",
                "--moments",
                "ppl",
            ]
        )
    assert rc == 0
    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest.columns) == [
        "name",
        "group",
        "replicate",
        "seed",
        "budget",
        "tokens",
        "n_chunks",
        "mu_ppl",
        "sigma_ppl",
        "mu_logppl",
        "sigma_logppl",
        "lo_q",
        "hi_q",
    ]
    meta = json.loads((out / "windows.json").read_text())
    assert [s["name"] for s in meta["skipped"]] == [f"w0.40-0.50_b{total // 6}"]
    assert len(manifest) == 5 and manifest.name.tolist() == meta["subsets"]
    for row in manifest.itertuples():
        sel, s = check_selection(env, out / row.name, row.budget)
        assert (s["tokens"], s["n_chunks"]) == (row.tokens, row.n_chunks)
        assert s["mu"] == pytest.approx(row.mu_ppl) and s["window"]["lo_q"] == row.lo_q
        assert row.group == row.name.split("_b")[0]


@pytest.mark.parametrize(
    "case,match",
    [
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
        ("windows_with_tokens", "unrecognized arguments: --tokens"),
        ("design_span", "spanning at least 16x"),
        ("moments_conflict", "is in ppl moments"),
    ],
)
def test_bad_input_exits_2_with_a_message(env, capsys, case, match):
    root, land = env["root"], env["land"]
    incomplete = root / f"incomplete_{case}"
    write_landscape(incomplete, env["table"].slice(0, 100), rows_per_part=50, complete=False)
    data_fit = root / f"data_fit_{case}"
    write_fit(data_fit, law="data", params={"E": 1.0, "B": 10.0, "beta": 0.3})
    base = ["select", "--landscape", land, "--out", str(root / f"bad_{case}")]
    argv = {
        "no_landscape": [
            "select",
            "--landscape",
            str(root / "none"),
            "--out",
            str(root / "x"),
            "--tokens",
            "1e5",
            "--method",
            "low",
        ],
        "incomplete": [
            "select",
            "--landscape",
            str(incomplete),
            "--out",
            str(root / "x"),
            "--tokens",
            "1e5",
            "--method",
            "low",
        ],
        "zero_budget": base + ["--tokens", "0", "--method", "low"],
        "negative_budget": base + ["--tokens", "-5", "--method", "random"],
        "fractional_budget": base + ["--tokens", "10.5", "--method", "random"],
        "missing_fit": base + ["--tokens", "1e5", "--fit", str(root / "nofit")],
        "no_target": base + ["--tokens", "1e5"],
        "half_target": base + ["--tokens", "1e5", "--target-mu", "20"],
        "data_law": base + ["--tokens", "1e5", "--fit", str(data_fit)],
        "posterior_missing": base + ["--tokens", "1e5", "--fit", env["point"], "--target", "posterior"],
        "windows_with_tokens": ["select", "windows", "--landscape", land, "--out", str(root / "x"), "--tokens", "1e5"],
        "design_span": [
            "select",
            "design",
            "--landscape",
            land,
            "--out",
            str(root / "x"),
            "--n",
            "8",
            "--budgets",
            "1e4",
            "1e5",
        ],
        "moments_conflict": base + ["--tokens", "1e5", "--fit", env["point"], "--moments", "logppl"],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    prefix = "pplaw: error:" if case == "windows_with_tokens" else "pplaw select: error:"  # argparse's own
    assert prefix in err and match in err
    assert not (root / f"bad_{case}" / "summary.json").exists()


def test_dos_target_is_supported_or_refused(env, capsys):
    """The fit-chosen target is searched only where the runs give support (their hull in scaled
    log coordinates + the trust margin); an optimum on that region's edge is refused."""
    wide = env["root"] / "dos_wide"
    assert (
        main(
            [
                "select",
                "--landscape",
                env["land"],
                "--tokens",
                "3e5",
                "--out",
                str(wide),
                "--fit",
                env["point"],
                "--selector",
                "bands",
            ]
        )
        == 0
    )
    free = load(wide)[1]["target"]
    # runs that surround a region beside the unconstrained optimum, shifted up in mu
    points = [[free["mu"] * f, free["sigma"] * g] for f in (1.3, 2.0) for g in (0.5, 2.0)]
    fit_dir = write_fit(env["root"] / "fit_narrow", points=points, margin=0.0)
    refused = env["root"] / "dos_refused"
    (refused).mkdir()
    (refused / "selection.parquet").write_bytes(b"stale")  # from an earlier selection
    assert (
        main(
            [
                "select",
                "--landscape",
                env["land"],
                "--tokens",
                "3e5",
                "--out",
                str(refused),
                "--fit",
                str(fit_dir),
                "--target",
                "point",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no interior optimum" in err and "--allow-boundary" in err and "Best supported point" in err
    record = json.loads((refused / "refused.json").read_text())
    assert record["interior"]["fraction_at_boundary"] == 1.0 and record["point"]["at_boundary"]
    assert not (refused / "summary.json").exists() and not (refused / "selection.parquet").exists()

    allowed = env["root"] / "dos_allowed"
    assert (
        main(
            [
                "select",
                "--landscape",
                env["land"],
                "--tokens",
                "3e5",
                "--out",
                str(allowed),
                "--fit",
                str(fit_dir),
                "--target",
                "point",
                "--allow-boundary",
            ]
        )
        == 0
    )
    t = load(allowed)[1]["target"]
    mus, sigmas = np.array(points).T
    assert mus.min() <= t["mu"] <= mus.max() and sigmas.min() <= t["sigma"] <= sigmas.max()
    assert t["mu"] == pytest.approx(mus.min(), rel=0.02)  # on the edge nearest the free optimum
    # a wider trust margin lets the target move towards the optimum, never past margin + hull
    margin = env["root"] / "dos_margin"
    assert (
        main(
            [
                "select",
                "--landscape",
                env["land"],
                "--tokens",
                "3e5",
                "--out",
                str(margin),
                "--fit",
                str(fit_dir),
                "--target",
                "point",
                "--allow-boundary",
                "--trust-margin",
                "0.5",
            ]
        )
        == 0
    )
    tm = load(margin)[1]["target"]
    assert tm["mu"] < t["mu"]
    span = np.log(mus.max() / mus.min())
    assert np.log(mus.min() / tm["mu"]) <= 0.5 * span * (1 + 1e-6)


def test_logppl_moments(env):
    out = env["root"] / "random_logppl"
    assert (
        main(
            [
                "select",
                "--landscape",
                env["land"],
                "--tokens",
                "2e5",
                "--out",
                str(out),
                "--method",
                "random",
                "--moments",
                "logppl",
            ]
        )
        == 0
    )
    sel, s = load(out)
    log_ppl = np.log(sel.ppl.to_numpy())
    assert s["moments"] == "logppl"
    assert s["mu"] == pytest.approx(log_ppl.mean()) and s["sigma"] == pytest.approx(log_ppl.std())
    assert s["moments_all"]["mu_ppl"] == pytest.approx(sel.ppl.mean())
    assert s["moments_all"]["sigma_logppl"] == pytest.approx(log_ppl.std())
    # an explicit target in log-ppl units is reached by the tilted selector
    target = env["root"] / "tilted_logppl"
    assert (
        main(
            [
                "select",
                "--landscape",
                env["land"],
                "--tokens",
                "2e5",
                "--out",
                str(target),
                "--target-mu",
                f"{log_ppl.mean() + 0.2}",
                "--target-sigma",
                f"{0.6 * log_ppl.std()}",
                "--moments",
                "logppl",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    sel_t, st = load(target)
    lt = np.log(sel_t.ppl.to_numpy())
    assert st["selector"] == "tilted" and st["tilt"] is not None
    assert lt.mean() == pytest.approx(log_ppl.mean() + 0.2, abs=0.02)
    assert lt.std() == pytest.approx(0.6 * log_ppl.std(), abs=0.02)


def test_design_cli(env):
    out = env["root"] / "design"
    total = int(env["table"]["n_tokens"].to_numpy().sum())
    budgets = [total // 200, total // 50, total // 12]
    assert (
        main(
            [
                "select",
                "design",
                "--landscape",
                env["land"],
                "--out",
                str(out),
                "--n",
                "14",
                "--centre",
                "2",
                "--moments",
                "logppl",
                "--budgets",
                *map(str, budgets),
            ]
        )
        == 0
    )
    manifest = pd.read_csv(out / "manifest.csv")
    meta = json.loads((out / "design.json").read_text())
    assert len(manifest) == 14 and manifest.name.tolist() == meta["subsets"]
    assert set(manifest.budget) == set(budgets)
    centre = manifest[manifest.group == "centre"]
    assert len(centre) == 2 and centre.replicate.tolist() == [1, 2] and centre.budget.nunique() == 1
    assert manifest.group.nunique() == 13  # every space-filling point is its own group
    # each run's recorded moments are its selection's, and realise its target
    for row in manifest.itertuples():
        sel, s = check_selection(env, out / row.name, row.budget, moments="logppl")
        assert s["mu"] == pytest.approx(row.mu_logppl) and s["group"] == row.group
        assert np.hypot(s["mu"] - row.target_mu, s["sigma"] - row.target_sigma) < 0.1
    real = meta["diagnostics"]["realised"]
    assert abs(real["corr_log_mu_log_sigma"]) <= 0.35
    assert max(real["vif_main"].values()) < 10
    assert real["n_distinct_mu_sigma"] >= 13
