"""The lack-of-fit test, the automatic law choice, the `surface` law, and the two kinds of edge of
the feasible set (edge of the runs: refuse; edge of the corpus: a valid answer)."""

import numpy as np
import pytest
from scipy import stats

from pplaw_jax.law import LAWS, predict_loss
from pplaw_jax.law.choice import choose_law
from pplaw_jax.law.lack_of_fit import lack_of_fit, pure_error, replicate_sets
from pplaw_jax.law.optimum import FeasibleGrid
from pplaw_jax.law.point import fit_point, heldout_error
from pplaw_jax.law.region import SupportRegion
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.select.target import NoInteriorOptimum, choose_target


def test_lack_of_fit_equals_the_classical_nested_anova():
    """A straight line fitted to replicated points that lie on a curve: the F statistic equals the
    textbook comparison of the line with the cell-means model (one mean per distinct x), computed
    here independently with plain least squares."""
    rng = np.random.default_rng(0)
    x = np.repeat(np.linspace(1.0, 3.0, 6), 3)  # 6 distinct points, 3 replicates each
    y = 0.4 * (x - 2.0) ** 2 + 0.05 * rng.standard_normal(x.size)
    runs = runs_from_arrays(
        np.exp(x), np.ones_like(x), np.full(x.size, 1e6), np.exp(y), group=np.repeat(np.arange(6), 3)
    )
    X = np.column_stack([np.ones_like(x), x])
    resid = X @ np.linalg.lstsq(X, y, rcond=None)[0] - y
    cells = np.repeat(np.arange(6), 3)
    sse_full = sum(((y[cells == c] - y[cells == c].mean()) ** 2).sum() for c in range(6))
    sse_line = (resid**2).sum()
    f_ref = ((sse_line - sse_full) / (16 - 12)) / (sse_full / 12)
    pe = pure_error(runs)
    assert (pe.df, pe.n_sets) == (12, 6) and pe.ss == pytest.approx(sse_full)
    test = lack_of_fit(resid, 2, pe, 0.05)
    assert test["F"] == pytest.approx(f_ref) and test["df"] == [4, 12]
    assert test["p"] == pytest.approx(stats.f.sf(f_ref, 4, 12)) and test["rejected"]
    # the quadratic that generated the data is not rejected
    Xq = np.column_stack([X, x**2])
    resid_q = Xq @ np.linalg.lstsq(Xq, y, rcond=None)[0] - y
    assert lack_of_fit(resid_q, 3, pe, 0.05)["rejected"] is False
    # without replicates there is no pure error and no test
    alone = runs_from_arrays(np.exp(x[::3]), np.ones(6), np.full(6, 1e6), np.exp(y[::3]))
    assert lack_of_fit(resid[::3], 2, pure_error(alone), 0.05)["rejected"] is None


def test_replicates_are_one_group_at_one_budget():
    runs = runs_from_arrays(
        [5.0] * 6, [2.0] * 6, [1e4, 1.02e4, 4e4, 1e4, 3.99e4, 4e4], [3.0] * 6, group=["a", "a", "a", "b", "b", "c"]
    )
    sets = replicate_sets(runs)
    assert sets[0] == sets[1] != sets[2] and len(set(sets[3:])) == 3 and sets[0] not in sets[3:]


SURFACE = {
    "E": 0.05,
    "A": 1.0,
    "c_mu": -8.0,
    "c_mu2": 2.2,
    "c_sigma": -0.05,
    "c_sigma2": 0.0,
    "c_musigma": 0.0,
    "alphaD": -0.25,
    "gammaD": -0.016,
}  # cpu_tiny-like: a bowl in mu near 6, loss falling faster with D
SURFACE["A"] = float(
    np.exp(1.5 - (-8.0 * np.log(6) + 2.2 * np.log(6) ** 2 + 0.25 * np.log(8e4) - 0.016 * np.log(8e4) ** 2))
)


def _design(law, params, noise, seed, n_points=14, replicates=4, budgets=(2e4, 8e4, 3.2e5)):
    """Design points over (mu, sigma) (logppl-like ranges) at every budget, a centre point
    replicated `replicates` times at the middle budget."""
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.uniform(np.log(5.4), np.log(6.8), n_points))
    sigma = np.exp(rng.uniform(np.log(0.04), np.log(0.8), n_points))
    k = len(budgets)
    mu_all = np.concatenate([np.repeat(mu, k), np.full(replicates, 6.0)])
    sigma_all = np.concatenate([np.repeat(sigma, k), np.full(replicates, 0.2)])
    d = np.concatenate([np.tile(budgets, n_points), np.full(replicates, budgets[1])])
    group = np.concatenate([np.repeat(np.arange(n_points), k), np.full(replicates, n_points)])
    loss = predict_loss(law, params, mu_all, sigma_all, d) * np.exp(noise * rng.standard_normal(d.size))
    return runs_from_arrays(mu_all, sigma_all, d, loss, group=group, moments="logppl")


def _all_laws(runs):
    pe = pure_error(runs)
    fits, heldout, lof = {}, {}, {}
    for name, form in LAWS.items():
        fits[name] = fit_point(runs, form, n_random=4, bootstrap=0, seed=0)
        resid = fits[name].log_predict(runs.mu, runs.sigma, runs.tokens) - np.log(runs.loss)
        lof[name] = lack_of_fit(resid, len(form.param_names), pe, 0.05)
        heldout[name] = heldout_error(runs, form, full=fits[name])
    return fits, heldout, lof


def test_surface_law_is_the_formula_it_states():
    mu, sigma, d = np.array([5.5, 6.3]), np.array([0.1, 0.5]), np.array([2e4, 3e5])
    lm, ls, ld = np.log(mu), np.log(sigma), np.log(d)
    p = SURFACE
    literal = p["E"] + p["A"] * np.exp(
        p["c_mu"] * lm
        + p["c_sigma"] * ls
        + p["c_mu2"] * lm**2
        + p["c_sigma2"] * ls**2
        + p["c_musigma"] * lm * ls
        - p["alphaD"] * ld
        + p["gammaD"] * ld**2
    )
    assert predict_loss("surface", p, mu, sigma, d) == pytest.approx(literal, rel=1e-12)


def test_auto_choice_rejects_the_papers_law_on_a_bent_token_axis_and_keeps_the_surface():
    """Runs whose loss falls faster with D at larger D (cpu_tiny's shape): E + Dc D^-a cannot bend
    that way, fails the lack-of-fit test against the replicates' pure error, and the choice falls
    on a law with a flexible token axis."""
    runs = _design("surface", SURFACE, noise=0.003, seed=1)
    fits, heldout, lof = _all_laws(runs)
    assert lof["ppl"]["rejected"] and lof["data"]["rejected"]
    assert lof["surface"]["rejected"] is False
    choice = choose_law(heldout, lof, runs.groups)
    assert choice["chosen"] == "surface" and "ppl" in choice["rejected"]
    # the chosen fit recovers the true optimum in mu (independent of sigma here, up to c_musigma 0)
    mu = np.geomspace(5.4, 6.8, 200)
    pred = fits["surface"].predict(mu, np.full_like(mu, 0.2), 8e4)
    true_opt = np.exp(-SURFACE["c_mu"] / (2 * SURFACE["c_mu2"]))
    assert mu[np.argmin(pred)] == pytest.approx(true_opt, rel=0.02)


def test_auto_choice_prefers_the_data_only_law_when_perplexity_does_not_matter():
    params = {"E": 1.5, "B": 400.0, "beta": 0.35}
    runs = _design("data", params, noise=0.004, seed=2)
    _, heldout, lof = _all_laws(runs)
    choice = choose_law(heldout, lof, runs.groups)
    assert choice["chosen"] == "data" and choice["reason"].startswith("'data'")


def test_no_law_chosen_when_every_law_is_rejected():
    runs = _design("surface", SURFACE, noise=0.003, seed=1)
    _, heldout, lof = _all_laws(runs)
    forced = {k: dict(v, rejected=True) for k, v in lof.items()}
    choice = choose_law(heldout, forced, runs.groups)
    assert choice["chosen"] is None and "no law is used to select" in choice["reason"]


# ------------------------------------------------------------------ the two kinds of edge
def test_grid_tells_the_edge_of_the_runs_from_the_edge_of_the_corpus():
    # supported: a disk; attainable: sigma <= 5 (a straight cut through the disk)
    def supported(mu, sigma):
        return np.hypot(np.log(mu) - np.log(10), np.log(sigma) - np.log(5)) <= 0.5

    def attainable(mu, sigma):
        return sigma <= 5.0

    grid = FeasibleGrid(
        (10 * np.exp(-0.6), 10 * np.exp(0.6)), (5 * np.exp(-0.6), 5 * np.exp(0.6)), supported, attainable, n=61
    )
    m, s = grid.mu, grid.sigma
    step = grid.log_step[1]
    near_cut = (
        grid.mask
        & (np.log(s) > np.log(5.0) - step)
        & (np.hypot(np.log(m) - np.log(10), np.log(s) - np.log(5)) < 0.5 - 2 * step)
    )
    assert near_cut.any() and grid.corpus_edge[near_cut].all() and not grid.boundary[near_cut].any()
    rim = grid.mask & (np.hypot(np.log(m) - np.log(10), np.log(s) - np.log(5)) > 0.5 - 0.5 * step) & (s < 4.0)
    assert rim.any() and grid.boundary[rim].all()
    # without an attainable region (fit time) every edge is an edge of the runs
    fit_time = FeasibleGrid((10 * np.exp(-0.6), 10 * np.exp(0.6)), (5 * np.exp(-0.6), 5 * np.exp(0.6)), supported, n=61)
    assert not fit_time.corpus_edge.any() and fit_time.boundary.sum() > grid.boundary.sum()


class _Region:
    """An attainable region: sigma at least `lo` (the corpus cannot supply tighter subsets)."""

    def __init__(self, lo):
        self.lo = lo
        self.mu_min, self.mu_max = 1.0, 100.0
        self.window_sigma = np.array([lo, 50.0])
        self.extremes_sigma = np.array([lo, 50.0])

    def contains(self, mu, sigma):
        return np.asarray(sigma) >= self.lo


def test_an_optimum_on_the_edge_of_the_corpus_is_selected_and_one_beyond_the_runs_is_refused():
    """A bowl in mu at 10; loss falls as sigma falls (tighter subsets are better) down to what the
    corpus can supply (sigma >= 2). Runs that reach that edge support selecting there; runs that
    stop at sigma 6 do not (the optimum lies beyond them)."""
    params = {
        "E": 1.5,
        "A": 1.0,
        "c_mu": -2 * np.log(10.0),
        "c_sigma": 0.6,
        "c_mu2": 1.0,
        "c_sigma2": 0.0,
        "c_musigma": 0.0,
        "alphaD": 0.3,
    }
    rng = np.random.default_rng(0)
    draws = {k: np.full(200, v) for k, v in params.items()}
    draws["c_sigma"] = params["c_sigma"] + rng.normal(0, 0.05, 200)
    region = _Region(2.0)
    reach = SupportRegion([5.0, 5.0, 20.0, 20.0], [2.0, 30.0, 2.0, 30.0], margin=0.1)
    choice = choose_target(region, "quad", params, draws, 10**6, reach)
    assert choice.interior["fraction_at_boundary"] <= 0.2
    assert choice.interior["fraction_at_corpus_edge"] > 0.8
    assert choice.point.sigma == pytest.approx(2.0, rel=0.05) and choice.point.mu == pytest.approx(10.0, rel=0.05)
    short = SupportRegion([5.0, 5.0, 20.0, 20.0], [6.0, 30.0, 6.0, 30.0], margin=0.1)
    with pytest.raises(NoInteriorOptimum, match="beyond the runs"):
        choose_target(region, "quad", params, draws, 10**6, short)


def test_trimmed_lack_of_fit_sets_aside_a_named_outlier_and_nothing_else():
    """A law that describes every run but one to the pure error: the classical test rejects it; the
    trimmed test sets that run aside (named), accepts the law, and never touches replicated runs or
    runs within 5 pure-error sds."""
    rng = np.random.default_rng(4)
    x = np.linspace(1.0, 3.0, 14)
    group = list(range(14)) + [99] * 6
    xs = np.concatenate([x, [2.0] * 6])
    y = 0.3 * xs + 0.004 * rng.standard_normal(xs.size)
    y[5] += 0.1  # one run far off the line
    runs = runs_from_arrays(
        np.exp(xs),
        np.ones_like(xs),
        np.full(xs.size, 1e6),
        np.exp(y),
        group=group,
        run_id=[f"r{i}" for i in range(xs.size)],
    )
    X = np.column_stack([np.ones_like(xs), xs])
    resid = X @ np.linalg.lstsq(X, y, rcond=None)[0] - y
    pe = pure_error(runs)
    assert lack_of_fit(resid, 2, pe, 0.05)["rejected"]
    from pplaw_jax.law.lack_of_fit import replicated_mask

    trimmed = lack_of_fit(resid, 2, pe, 0.05, max_outliers=1, replicated=replicated_mask(runs), run_ids=runs.run_ids)
    assert trimmed["set_aside"] == ["r5"] and trimmed["rejected"] is False and "r5" in trimmed["note"]
    assert trimmed["df_residual"] == xs.size - 1 - 2
    # nothing beyond 5 pure-error sds: nothing is set aside, whatever the allowance
    y[5] -= 0.1
    resid = X @ np.linalg.lstsq(X, y, rcond=None)[0] - y
    assert (
        lack_of_fit(
            resid,
            2,
            pure_error(runs_from_arrays(np.exp(xs), np.ones_like(xs), np.full(xs.size, 1e6), np.exp(y), group=group)),
            0.05,
            max_outliers=3,
            replicated=replicated_mask(runs),
        )["set_aside"]
        == []
    )
