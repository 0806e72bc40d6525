"""Distance-to-Optimum Selection on synthetic landscapes with known log-normal perplexities."""

import numpy as np
import pytest

from pplaw_jax.errors import PplawError
from pplaw_jax.select import RankedLandscape, SelectionWarning, default_weights, dos_select
from pplaw_jax.select.synthetic import synthetic_landscape


def arrays(n, seed):
    t = synthetic_landscape(n, seed=seed)
    return t.column("ppl").to_numpy(), t.column("n_tokens").to_numpy()


@pytest.fixture(scope="module")
def big():
    ppl, n_tokens = arrays(20000, seed=1)
    return RankedLandscape(ppl, n_tokens, int(n_tokens.sum() * 0.1))


@pytest.fixture(scope="module")
def small():
    ppl, n_tokens = arrays(300, seed=2)
    return RankedLandscape(ppl, n_tokens, int(n_tokens.sum() * 0.2))


def check_budget_rule(space, sel):
    assert sel.tokens == space.n_tokens[sel.indices].sum() <= space.budget
    assert space.budget - sel.tokens < space.n_tokens.max()
    assert len(np.unique(sel.indices)) == sel.n_chunks


def distance(space, idx, mu, sigma):
    w = default_weights(space.ppl)
    p = space.ppl[idx]
    return np.sqrt(w[0] * (p.mean() - mu) ** 2 + w[1] * (p.std() - sigma) ** 2)


def test_candidate_moments_match_their_rows(big):
    """The prefix-sum moments of random two-band candidates equal np.mean/np.std of their rows."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, big.size, 200)
    e = rng.integers(0, big.size + 1, 200)
    t = rng.integers(0, big.budget + 1, 200)
    m = big.evaluate(a, e, t)
    for i in range(200):
        rows = big.rows(a[i], e[i], t[i])
        assert m.n[i] == rows.size and m.tokens[i] == big.n_tokens[rows].sum()
        if rows.size:
            assert m.mu[i] == pytest.approx(big.ppl[rows].mean(), rel=1e-10)
            assert m.sigma[i] == pytest.approx(big.ppl[rows].std(), rel=1e-7, abs=1e-9)
        ok = rows.size > 0 and big.budget - m.tokens[i] < big.n_tokens.max()
        assert m.feasible[i] == ok


def test_region_contains_random_subsets_and_not_impossible_points(big):
    region = big.region
    rng = np.random.default_rng(3)
    for _ in range(5):
        order = rng.permutation(big.size)
        idx = order[: np.searchsorted(np.cumsum(big.n_tokens[order]), big.budget, side="right")]
        assert region.contains(big.ppl[idx].mean(), big.ppl[idx].std())
    lowest = np.sort(big.ppl)
    assert not region.contains(lowest[0], 1.0)  # a mean below every chunk
    assert not region.contains(np.median(lowest), 0.0)  # no spread with thousands of chunks
    assert not region.contains(np.median(lowest), big.ppl.max())  # more spread than the range
    # the least spread at a mean is a narrow window; the most is far wider
    lo, hi = region.sigma_bounds(np.median(lowest))
    assert lo < 0.1 * big.ppl.std() and hi > big.ppl.std()


@pytest.mark.parametrize(
    "mu_frac,sigma_frac", [(0.1, 0.5), (0.3, 0.05), (0.5, 0.5), (0.5, 0.95), (0.8, 0.2), (0.95, 0.6)]
)
def test_attainable_target_is_reached(big, mu_frac, sigma_frac):
    region = big.region
    mu = region.mu_min + mu_frac * (region.mu_max - region.mu_min)
    mu, sigma = (float(v) for v in region.points(mu, sigma_frac))
    sel = dos_select(big, mu, sigma)
    check_budget_rule(big, sel)
    assert sel.warnings == [] and sel.info["attainable"]
    d = distance(big, sel.indices, mu, sigma)
    assert sel.info["distance"] == pytest.approx(d)
    assert d < 2e-3  # in landscape ppl standard deviations
    assert sel.mu == pytest.approx(big.ppl[sel.indices].mean())


def naive_boundary_subsets(space):
    """Reference subsets built by plain Python loops: every window of the sorted chunks and every
    'lowest chunks + highest chunks' subset, each filled while the next chunk fits."""
    order = np.argsort(space.ppl, kind="stable")
    t = space.n_tokens[order]
    out = []
    for a in range(space.size):
        chosen, total, j = [], 0, a
        while j < space.size and total + t[j] <= space.budget:
            chosen.append(j)
            total += t[j]
            j += 1
        out.append((chosen, total))
    k, total = 0, 0
    while k < space.size and total + t[k] <= space.budget:
        chosen, tot, j = list(range(k)), total, space.size - 1
        while j >= k and tot + t[j] <= space.budget:
            chosen.append(j)
            tot += t[j]
            j -= 1
        out.append((chosen, tot))
        total += t[k]
        k += 1
    return [order[c] for c, tot in out if c and space.budget - tot < space.n_tokens.max()]


@pytest.mark.parametrize("mu,sigma", [(2.0, 1.0), (200.0, 1.0), (20.0, 0.0), (25.0, 300.0)])
def test_unattainable_target_gives_closest_subset_and_warns(small, mu, sigma):
    with pytest.warns(SelectionWarning, match="not attainable"):
        sel = dos_select(small, mu, sigma)
    check_budget_rule(small, sel)
    assert not sel.info["attainable"] and "not attainable" in sel.warnings[0]
    reference = min(distance(small, idx, mu, sigma) for idx in naive_boundary_subsets(small))
    d = distance(small, sel.indices, mu, sigma)
    assert d <= reference + 1e-9
    near = sel.info["attainable_target"]
    assert not small.region.contains(mu, sigma) and small.region.contains(near["mu"], near["sigma"])


def test_deterministic_and_weighted(big):
    a = dos_select(big, 25.0, 8.0)
    b = dos_select(big, 25.0, 8.0)
    assert np.array_equal(a.indices, b.indices)
    # an unattainable target: weighting mu heavily keeps mu, weighting sigma keeps sigma
    mu, sigma = 25.0, 0.01
    with pytest.warns(SelectionWarning):
        keep_mu = dos_select(big, mu, sigma, weights=(1e4, 1.0))
        keep_sigma = dos_select(big, mu, sigma, weights=(1.0, 1e4))
    assert abs(keep_mu.mu - mu) < abs(keep_sigma.mu - mu)
    assert abs(keep_sigma.sigma - sigma) < abs(keep_mu.sigma - sigma)


def test_budget_above_landscape_and_bad_targets(small):
    short = RankedLandscape(small.ppl, small.n_tokens, int(small.n_tokens.sum()) + 1)
    with pytest.warns(SelectionWarning, match="fewer than the budget"):
        sel = dos_select(short, 20.0, 5.0)
    assert sel.n_chunks == small.size
    for mu, sigma in [(np.nan, 1.0), (20.0, -1.0), (np.inf, 1.0)]:
        with pytest.raises(PplawError, match="DOS target"):
            dos_select(small, mu, sigma)
    with pytest.raises(PplawError, match="must be positive"):
        RankedLandscape(small.ppl, small.n_tokens, 0)
