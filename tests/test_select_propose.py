"""`pplaw propose`: Thompson-sampling and uncertainty proposals, the stopping rule, and the CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from pplaw_jax.cli import main
from pplaw_jax.law import predict_loss
from pplaw_jax.law.region import SupportRegion
from pplaw_jax.select.dos import RankedLandscape
from pplaw_jax.select.propose import propose, stopping
from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape
from pplaw_jax.select.target import feasible_grid
from tests.test_select_cli import POINT, write_fit


@pytest.fixture(scope="module")
def space():
    t = synthetic_landscape(3000, seed=11)
    return RankedLandscape(t.column("ppl").to_numpy(), t.column("n_tokens").to_numpy(), 300_000)


def spread_draws(n=400, scale=1.0, seed=0):
    """Posterior-like draws around POINT (optimum at mu 20, sigma 8), spread by `scale`."""
    rng = np.random.default_rng(seed)
    d = {k: np.full(n, v) for k, v in POINT.items()}
    d["alpha1"] = POINT["alpha1"] + rng.normal(0.0, 0.002 * scale, n)
    d["beta1"] = POINT["beta1"] + rng.normal(0.0, 0.001 * scale, n)
    return d


def test_thompson_proposals_are_draw_argmins_inside_the_exploration_region(space):
    runs = SupportRegion([10.0, 10.0, 40.0, 40.0, 20.0], [2.0, 20.0, 2.0, 20.0, 8.0], margin=0.25)
    draws = spread_draws()
    props, grid = propose(space.region, runs, "ppl", draws, space.budget, 5, seed=0)
    assert len(props) == 5
    uv = np.array([p["uv"] for p in props])
    d = np.sqrt(((uv[:, None] - uv[None]) ** 2).sum(-1))
    assert d[np.triu_indices(5, 1)].min() >= 0.05  # duplicates merged
    for p in props:
        assert runs.contains(p["mu"], p["sigma"]) and space.region.contains(p["mu"], p["sigma"])
        # each proposal is its draw's argmin over the feasible grid (brute force on the grid)
        one = {k: v[p["draw"]] for k, v in draws.items()}
        loss = np.where(grid.mask, predict_loss("ppl", one, grid.mu, grid.sigma, space.budget), np.inf)
        i = int(np.argmin(loss))
        assert (p["mu"], p["sigma"]) == (grid.mu[i], grid.sigma[i])
    # a boundary optimum is explored just past the hull, never beyond the margin
    beside = SupportRegion([30.0, 30.0, 45.0, 45.0], [4.0, 16.0, 4.0, 16.0], margin=0.25)
    props, _ = propose(space.region, beside, "ppl", draws, space.budget, 4, seed=1)
    dist = np.array([float(beside.distance(p["mu"], p["sigma"])) for p in props])
    assert (dist <= 0.25 + 1e-9).all() and (dist > 0).sum() >= len(props) // 2


def test_uncertainty_proposals_have_the_largest_predictive_sd(space):
    runs = SupportRegion([10.0, 10.0, 40.0, 40.0], [2.0, 20.0, 2.0, 20.0], margin=0.1)
    draws = spread_draws(scale=3.0)
    props, grid = propose(space.region, runs, "ppl", draws, space.budget, 3, acquisition="uncertainty")
    mu, sigma = grid.mu[grid.mask], grid.sigma[grid.mask]
    ll = np.log(predict_loss("ppl", {k: v[:, None] for k, v in draws.items()}, mu[None], sigma[None], space.budget))
    assert props[0]["predictive_sd_log"] == pytest.approx(ll.std(axis=0).max())
    assert props[0]["predictive_sd_log"] >= props[1]["predictive_sd_log"] >= props[2]["predictive_sd_log"]


def test_stopping_rule(space):
    mu_runs, sigma_runs = [10.0, 10.0, 40.0, 40.0, 20.0], [2.0, 20.0, 2.0, 20.0, 8.0]
    runs = SupportRegion(mu_runs, sigma_runs, margin=0.1)
    grid = feasible_grid(space.region, runs)
    sd = float(space.ppl.std())
    same = {k: np.full(50, v) for k, v in POINT.items()}
    located = stopping(grid, "ppl", same, space.budget, 0.005, sd, mu_runs, sigma_runs)
    assert located["prob_within"] == 1.0 and located["max_expected_improvement_log"] == pytest.approx(0.0, abs=1e-3)
    assert located["located"] and located["best_run"]["index"] == 4  # the run at the optimum
    assert located["estimate"]["mu"] == pytest.approx(20.0, rel=0.02)
    wide = stopping(grid, "ppl", spread_draws(scale=10.0), space.budget, 0.005, sd, mu_runs, sigma_runs)
    assert not wide["located"] and wide["prob_within"] < 0.9
    # draws that differ by their level only (log Dc): every draw has its argmin at the optimum and the best
    # run is there, so nothing is left to gain. Measured against the across-draw mean instead of each
    # draw's own value at the best run, the level spread alone would look like an improvement of ~0.03.
    rng = np.random.default_rng(3)
    levels = dict(same, Dc=POINT["Dc"] * np.exp(rng.normal(0.0, 0.5, 50)))
    shifted = stopping(grid, "ppl", levels, space.budget, 0.005, sd, mu_runs, sigma_runs)
    assert shifted["max_expected_improvement_log"] < 1e-3 and shifted["located"]
    # without a run at the optimum, the improvement is what the best run (a corner) leaves, per draw
    corners = stopping(grid, "ppl", same, space.budget, 0.005, sd, mu_runs[:4], sigma_runs[:4])
    one = {k: v[0] for k, v in same.items()}
    corner_loss = predict_loss("ppl", one, np.array(mu_runs[:4]), np.array(sigma_runs[:4]), space.budget)
    grid_loss = predict_loss("ppl", one, grid.mu[grid.mask], grid.sigma[grid.mask], space.budget)
    expected = np.log(corner_loss.min()) - np.log(grid_loss.min())
    assert corners["max_expected_improvement_log"] == pytest.approx(expected, rel=1e-6) and expected > 0.005
    assert not corners["located"]


def test_propose_cli(tmp_path):
    table = synthetic_landscape(3000, seed=11)
    land = write_landscape(tmp_path / "land", table, rows_per_part=1000)
    points = [[m, s] for m in (10.0, 40.0) for s in (2.0, 20.0)] + [[20.0, 8.0]]
    fit = write_fit(tmp_path / "fit", spread_draws(), points=points)
    out = tmp_path / "prop"
    assert (
        main(
            [
                "propose",
                "--fit",
                str(fit),
                "--landscape",
                str(land),
                "--n",
                "3",
                "--tokens",
                "3e5",
                "--out",
                str(out),
                "--prefix",
                "r1q",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    meta = json.loads((out / "propose.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv")
    assert meta["n_proposed"] == len(manifest) == 3 and meta["draws"] == "posterior"
    assert manifest.name.tolist() == [f"r1q{i}_b3e5" for i in range(3)] and (manifest.budget == 300_000).all()
    assert set(manifest.columns) >= {"name", "group", "seed", "mu_logppl", "target_mu", "distance"}
    for row in manifest.itertuples():
        summary = json.loads((out / row.name / "summary.json").read_text())
        assert summary["tokens"] <= 300_000 and summary["acquisition"] == "thompson"
        assert abs(summary["mu"] - row.target_mu) / table["ppl"].to_numpy().std() < 0.05
    assert set(meta["stopping"]) >= {"prob_within", "max_expected_improvement_log", "noise_sd_log", "located"}
    assert (
        main(["propose", "--fit", str(fit), "--landscape", str(land), "--n", "0", "--tokens", "3e5", "--out", str(out)])
        == 2
    )
