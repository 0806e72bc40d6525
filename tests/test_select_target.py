"""Law-guided targets against a brute-force grid with the law written out: supported, attainable,
and refused when the optimum is not interior."""

import numpy as np
import pytest

from pplaw_jax.errors import PplawError
from pplaw_jax.law.region import SupportRegion
from pplaw_jax.select import NoInteriorOptimum, RankedLandscape, choose_target
from pplaw_jax.select.synthetic import synthetic_landscape

# A perplexity-aware law with a bowl at (mu, sigma) ~ (20, 8), inside this landscape's region.
POINT = dict(E=1.8, Dc=35.7375, alpha0=0.246355, alpha1=-0.01, beta0=0.319659, beta1=-0.004, alphaD=0.3)


def law(p, mu, sigma, d):
    """The paper's law (README: L = E + Dc / (mu^(a0+a1 sigma) sigma^(b0+b1 mu) D^aD)), written
    independently of pplaw_jax.law."""
    return p["E"] + p["Dc"] / (
        mu ** (p["alpha0"] + p["alpha1"] * sigma) * sigma ** (p["beta0"] + p["beta1"] * mu) * d ** p["alphaD"]
    )


@pytest.fixture(scope="module")
def space():
    t = synthetic_landscape(3000, seed=11)
    return RankedLandscape(t.column("ppl").to_numpy(), t.column("n_tokens").to_numpy(), 300_000)


@pytest.fixture(scope="module")
def wide():
    """Runs that surround every attainable point."""
    return SupportRegion([1.0, 1.0, 1e3, 1e3], [0.01, 1e3, 0.01, 1e3])


@pytest.fixture(scope="module")
def draws():
    """Posterior draws that differ from the point estimate in the interaction exponents."""
    rng = np.random.default_rng(0)
    out = {k: np.full(300, v) for k, v in POINT.items()}
    out["alpha1"] = POINT["alpha1"] + rng.normal(0.0, 0.0003, 300)
    out["beta1"] = POINT["beta1"] + rng.gamma(2.0, 0.0002, 300)
    return out


def reference_grid(region, support, n=150):
    mu = np.repeat(np.linspace(region.mu_min, region.mu_max, n), n)
    mu, sigma = region.points(mu, np.tile(np.linspace(0, 1, n), n))
    keep = support.contains(mu, sigma)
    return mu[keep], sigma[keep]


def test_point_target_minimises_point_loss(space, wide):
    choice = choose_target(space.region, "ppl", POINT, None, space.budget, wide)
    assert choice.posterior is None and choice.point.expected_loss is None
    mu, sigma = reference_grid(space.region, wide)
    best = law(POINT, mu, sigma, space.budget).min()
    t = choice.point
    assert t.point_loss == pytest.approx(law(POINT, t.mu, t.sigma, space.budget), rel=1e-12)
    assert t.point_loss <= best + 1e-9
    assert space.region.contains(t.mu, t.sigma) and not t.at_boundary
    assert choice.interior["source"] == "point" and choice.interior["fraction_at_boundary"] == 0.0
    with pytest.raises(PplawError, match="posterior"):
        choice.get("posterior")


def test_posterior_target_minimises_expected_loss(space, wide, draws):
    choice = choose_target(space.region, "ppl", POINT, draws, space.budget, wide)
    mu, sigma = reference_grid(space.region, wide, 100)
    expected = np.mean([law({k: v[s] for k, v in draws.items()}, mu, sigma, space.budget) for s in range(300)], axis=0)
    post, point = choice.posterior, choice.point
    assert post.expected_loss <= expected.min() + 1e-9
    own = np.mean([law({k: v[s] for k, v in draws.items()}, post.mu, post.sigma, space.budget) for s in range(300)])
    assert post.expected_loss == pytest.approx(own, rel=1e-10)
    # the point target is a different place and costs expected loss
    assert abs(post.mu - point.mu) + abs(post.sigma - point.sigma) > 0.1
    gap = choice.as_dict()["expected_loss_gap"]
    assert gap == pytest.approx(point.expected_loss - post.expected_loss) and gap > 0
    assert choice.interior["draws"] == 300 and choice.interior["fraction_at_boundary"] <= 0.2


def test_posterior_equal_to_point_gives_the_point_target(space, wide):
    same = {k: np.full(50, v) for k, v in POINT.items()}
    choice = choose_target(space.region, "ppl", POINT, same, space.budget, wide)
    assert choice.posterior.mu == pytest.approx(choice.point.mu)
    assert choice.posterior.sigma == pytest.approx(choice.point.sigma)
    assert choice.as_dict()["expected_loss_gap"] == pytest.approx(0.0, abs=1e-12)


def test_target_stays_in_the_support_and_a_boundary_optimum_is_refused(space, draws):
    # runs that lie beside the bowl (larger mu): the law's argmin is on the support's edge
    runs = SupportRegion([30.0, 30.0, 45.0, 45.0], [4.0, 16.0, 4.0, 16.0], margin=0.0)
    with pytest.raises(NoInteriorOptimum, match="no interior optimum") as refused:
        choose_target(space.region, "ppl", POINT, draws, space.budget, runs)
    details = refused.value.details
    assert details["interior"]["fraction_at_boundary"] > 0.9 and details["posterior"]["at_boundary"]
    choice = choose_target(space.region, "ppl", POINT, draws, space.budget, runs, allow_boundary=True)
    for t in (choice.point, choice.posterior):
        assert runs.contains(t.mu, t.sigma) and t.at_boundary
        assert t.mu == pytest.approx(30.0, rel=0.01)  # the edge nearest the bowl
    mu, sigma = reference_grid(space.region, runs)
    assert choice.point.point_loss <= law(POINT, mu, sigma, space.budget).min() + 1e-9
    # bootstrap draws drive the check the same way, without a posterior target
    boot = choose_target(
        space.region, "ppl", POINT, draws, space.budget, runs, draws_source="bootstrap", allow_boundary=True
    )
    assert boot.posterior is None and boot.interior["source"] == "bootstrap"
    # a threshold above the observed share lets it through
    assert choose_target(
        space.region, "ppl", POINT, draws, space.budget, runs, max_boundary_fraction=1.0
    ).point.at_boundary


def test_disjoint_support_and_data_law_are_refused(space, wide):
    far = SupportRegion([1e4, 2e4, 1e4], [1e3, 1e3, 3e3])
    with pytest.raises(PplawError, match="do not overlap"):
        choose_target(space.region, "ppl", POINT, None, space.budget, far)
    with pytest.raises(PplawError, match="data-only"):
        choose_target(space.region, "data", {"E": 1.0, "B": 10.0, "beta": 0.3}, None, space.budget, wide)
