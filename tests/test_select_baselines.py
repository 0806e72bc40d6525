"""Baselines on a synthetic log-normal landscape: budget rule, and each one does what its name says."""

import contextlib

import numpy as np
import pytest

from pplaw_jax.errors import PplawError
from pplaw_jax.select import SelectionWarning, select_baseline
from pplaw_jax.select.synthetic import synthetic_landscape

LOG_MEAN, LOG_STD = 3.0, 0.5


@pytest.fixture(scope="module")
def land():
    t = synthetic_landscape(5000, seed=3, log_mean=LOG_MEAN, log_std=LOG_STD)
    return t.column("ppl").to_numpy(), t.column("n_tokens").to_numpy()


def naive_prefix(order, n_tokens, budget):
    """Reference: walk the order in Python and stop at the first chunk that does not fit."""
    chosen, total = [], 0
    for i in order:
        if total + n_tokens[i] > budget:
            break
        chosen.append(i)
        total += n_tokens[i]
    return sorted(chosen)


@pytest.mark.parametrize("method", ["random", "low", "high", "mid", "band"])
@pytest.mark.parametrize("frac", [0.001, 0.05, 0.5, 0.999])
def test_budget_rule(land, method, frac):
    ppl, n_tokens = land
    budget = int(n_tokens.sum() * frac)
    spills = method == "band" and frac > 0.8  # the middle 80% cannot hold the budget: warned
    with pytest.warns(SelectionWarning) if spills else contextlib.nullcontext():
        sel = select_baseline(method, ppl, n_tokens, budget, seed=7)
    assert sel.tokens == n_tokens[sel.indices].sum()
    assert sel.tokens <= budget
    assert budget - sel.tokens < n_tokens.max()
    assert len(np.unique(sel.indices)) == sel.n_chunks
    assert sel.mu == pytest.approx(ppl[sel.indices].mean())
    assert sel.sigma == pytest.approx(ppl[sel.indices].std())
    assert bool(sel.warnings) == spills


def test_low_high_mid_are_what_they_say(land):
    ppl, n_tokens = land
    budget = int(n_tokens.sum() * 0.2)
    rest = lambda sel: np.setdiff1d(np.arange(ppl.size), sel.indices)  # noqa: E731
    low = select_baseline("low", ppl, n_tokens, budget)
    assert ppl[low.indices].max() <= ppl[rest(low)].min()
    high = select_baseline("high", ppl, n_tokens, budget)
    assert ppl[high.indices].min() >= ppl[rest(high)].max()
    mid = select_baseline("mid", ppl, n_tokens, budget)
    dist = np.abs(ppl - np.median(ppl))
    assert dist[mid.indices].max() <= dist[rest(mid)].min()
    # about 20% of the chunks around the median: the band spans roughly quantiles 0.4..0.6
    q = np.searchsorted(np.sort(ppl), ppl[mid.indices]) / ppl.size
    assert 0.35 < q.min() < 0.45 and 0.55 < q.max() < 0.65
    assert low.mu < mid.mu < high.mu
    # the ranked baselines equal a plain Python walk over the sorted order
    assert low.indices.tolist() == naive_prefix(np.argsort(ppl, kind="stable"), n_tokens, budget)
    assert high.indices.tolist() == naive_prefix(np.argsort(-ppl, kind="stable"), n_tokens, budget)


def test_random_is_seeded_and_unbiased(land):
    ppl, n_tokens = land
    budget = int(n_tokens.sum() * 0.3)
    a = select_baseline("random", ppl, n_tokens, budget, seed=1)
    b = select_baseline("random", ppl, n_tokens, budget, seed=1)
    c = select_baseline("random", ppl, n_tokens, budget, seed=2)
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    order = np.random.default_rng(1).permutation(ppl.size)
    assert a.indices.tolist() == naive_prefix(order, n_tokens, budget)
    # ~1500 chunks of a log-normal(3, 0.5): log ppl mean and sd within 5 standard errors
    logp = np.log(ppl[a.indices])
    se = LOG_STD / np.sqrt(a.n_chunks)
    assert abs(logp.mean() - LOG_MEAN) < 5 * se
    assert abs(logp.std() - LOG_STD) < 5 * LOG_STD / np.sqrt(2 * a.n_chunks)


def test_full_takes_everything(land):
    ppl, n_tokens = land
    for budget in (None, 1000):
        sel = select_baseline("full", ppl, n_tokens, budget)
        assert np.array_equal(sel.indices, np.arange(ppl.size))
        assert sel.tokens == n_tokens.sum()


def test_budget_above_landscape_takes_all_and_warns(land):
    ppl, n_tokens = land
    with pytest.warns(SelectionWarning, match="fewer than the budget"):
        sel = select_baseline("low", ppl, n_tokens, int(n_tokens.sum()) + 10)
    assert sel.n_chunks == ppl.size and sel.warnings


def test_bad_budgets(land):
    ppl, n_tokens = land
    with pytest.raises(PplawError, match="selects no chunk"):
        select_baseline("low", ppl, n_tokens, 1)
    with pytest.raises(PplawError, match="needs a token budget"):
        select_baseline("random", ppl, n_tokens, None)
    with pytest.raises(PplawError, match="unknown baseline"):
        select_baseline("median", ppl, n_tokens, 1000)


def test_band_is_random_within_the_middle_80_percent(land):
    ppl, n_tokens = land
    lo, hi = np.quantile(ppl, [0.1, 0.9])
    a = select_baseline("band", ppl, n_tokens, int(n_tokens.sum() * 0.3), seed=1)
    b = select_baseline("band", ppl, n_tokens, int(n_tokens.sum() * 0.3), seed=2)
    assert ((ppl[a.indices] >= lo) & (ppl[a.indices] <= hi)).all() and not a.warnings
    assert set(a.indices) != set(b.indices)  # re-drawn per seed
    # within the band it is uniform: its mean log ppl is the band's, not skewed to either end
    band = np.log(ppl[(ppl >= lo) & (ppl <= hi)])
    assert np.log(ppl[a.indices]).mean() == pytest.approx(band.mean(), abs=4 * band.std() / np.sqrt(a.n_chunks))
    with pytest.warns(SelectionWarning, match="outside it"):
        over = select_baseline("band", ppl, n_tokens, int(n_tokens.sum() * 0.95), seed=1)
    assert over.warnings


def test_oracle_samples_only_allowed_chunks(land):
    ppl, n_tokens = land
    allowed = np.random.default_rng(0).random(ppl.size) < 0.7
    sel = select_baseline("oracle", ppl, n_tokens, int(n_tokens.sum() * 0.3), seed=3, allowed=allowed)
    assert allowed[sel.indices].all() and n_tokens.sum() * 0.3 - sel.tokens < n_tokens.max()
    with pytest.raises(PplawError, match="needs the clean documents"):
        select_baseline("oracle", ppl, n_tokens, 1000, seed=3)
    with pytest.raises(PplawError, match="fewer than the budget"):
        select_baseline("oracle", ppl, n_tokens, int(n_tokens.sum() * 0.9), seed=3, allowed=allowed)
