"""Point and uncertainty-aware DOS targets against a brute-force grid with the law written out."""

import numpy as np
import pytest

from pplaw_jax.errors import PplawError
from pplaw_jax.select import RankedLandscape, choose_target
from pplaw_jax.select.synthetic import synthetic_landscape

# A perplexity-aware law with its optimum inside the ranges this landscape spans.
POINT = dict(E=1.8, Dc=50.0, alpha0=1.0, alpha1=-0.03, beta0=0.6, beta1=-0.01, alphaD=0.1)


def law(p, mu, sigma, d):
    """The law of DESIGN.md, written independently of pplaw_jax.law."""
    return p["E"] + p["Dc"] / (mu ** (p["alpha0"] + p["alpha1"] * sigma)
                               * sigma ** (p["beta0"] + p["beta1"] * mu) * d ** p["alphaD"])


@pytest.fixture(scope="module")
def space():
    t = synthetic_landscape(20000, seed=1)
    n_tokens = t.column("n_tokens").to_numpy()
    return RankedLandscape(t.column("ppl").to_numpy(), n_tokens, int(n_tokens.sum() * 0.1))


@pytest.fixture(scope="module")
def draws():
    """Posterior draws that differ from the point estimate in the interaction exponents."""
    rng = np.random.default_rng(0)
    out = {k: np.full(300, v) for k, v in POINT.items()}
    out["alpha1"] = POINT["alpha1"] + rng.normal(0.0, 0.004, 300)
    out["beta1"] = POINT["beta1"] + rng.gamma(2.0, 0.004, 300)
    return out


def reference_grid(region, n=150):
    mu = np.repeat(np.linspace(region.mu_min, region.mu_max, n), n)
    return region.points(mu, np.tile(np.linspace(0, 1, n), n))


def test_point_target_minimises_point_loss(space):
    choice = choose_target(space.region, "ppl", POINT, None, space.budget)
    assert choice.posterior is None and choice.point.expected_loss is None
    mu, sigma = reference_grid(space.region)
    best = law(POINT, mu, sigma, space.budget).min()
    t = choice.point
    assert t.point_loss == pytest.approx(law(POINT, t.mu, t.sigma, space.budget), rel=1e-12)
    assert t.point_loss <= best + 1e-9
    assert space.region.contains(t.mu, t.sigma)
    with pytest.raises(PplawError, match="posterior"):
        choice.get("posterior")


def test_posterior_target_minimises_expected_loss(space, draws):
    choice = choose_target(space.region, "ppl", POINT, draws, space.budget)
    mu, sigma = reference_grid(space.region, 100)
    expected = np.mean([law({k: v[s] for k, v in draws.items()}, mu, sigma, space.budget)
                        for s in range(300)], axis=0)
    post, point = choice.posterior, choice.point
    assert post.expected_loss <= expected.min() + 1e-9
    own = np.mean([law({k: v[s] for k, v in draws.items()}, post.mu, post.sigma, space.budget)
                   for s in range(300)])
    assert post.expected_loss == pytest.approx(own, rel=1e-10)
    # the point target is a different place and costs expected loss
    assert abs(post.mu - point.mu) + abs(post.sigma - point.sigma) > 0.1
    gap = choice.as_dict()["expected_loss_gap"]
    assert gap == pytest.approx(point.expected_loss - post.expected_loss) and gap > 0
    assert choice.get("posterior") is post and choice.get("point") is point


def test_posterior_equal_to_point_gives_the_point_target(space):
    same = {k: np.full(50, v) for k, v in POINT.items()}
    choice = choose_target(space.region, "ppl", POINT, same, space.budget)
    assert choice.posterior.mu == pytest.approx(choice.point.mu)
    assert choice.posterior.sigma == pytest.approx(choice.point.sigma)
    assert choice.as_dict()["expected_loss_gap"] == pytest.approx(0.0, abs=1e-12)


def test_data_law_has_no_target(space):
    with pytest.raises(PplawError, match="data-only"):
        choose_target(space.region, "data", {"E": 1.0, "B": 10.0, "beta": 0.3}, None, space.budget)
