"""The known-truth simulator: its truths are what they claim, and the selection loop stays safe only
because of the supported region and the interior-optimum check (a fast version of
benchmarks/selection_sim.py)."""

import warnings

import numpy as np
import pytest

from pplaw_jax.simulate import (INTERIOR, LoopConfig, World, heavy_tailed_landscape, make_truth,
                                run_replicate, subset_stats)

NOISE = 0.005


@pytest.fixture(scope="module")
def world():
    ppl, n_tokens = heavy_tailed_landscape(2500, seed=1)
    total = int(n_tokens.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return World.build(ppl, n_tokens, [total // 160, total // 40, total // 10])


def test_truths_have_the_stated_shape(world):
    rng = np.random.default_rng(0)
    truth = make_truth("bowl-log", world, rng, depth=0.02)
    a0, a1, b0, b1 = truth.info["coef"]
    opt = truth.info["optimum"]
    # the paper's law, written out, has its least value over the pool at the stated optimum
    pool_h = -(a0 + a1 * world.pool["sigma_logppl"]) * np.log(world.pool["mu_logppl"]) \
        - (b0 + b1 * world.pool["mu_logppl"]) * np.log(world.pool["sigma_logppl"])
    h_opt = -(a0 + a1 * opt["sigma"]) * np.log(opt["mu"]) - (b0 + b1 * opt["mu"]) * np.log(opt["sigma"])
    assert pool_h.min() >= h_opt - 1e-9
    # it is the paper's law in logppl moments: log(L - E) = log Dc + k h(mu, sigma) - alphaD log D,
    # with h = -(a0 + a1 sigma) log mu - (b0 + b1 mu) log sigma
    stats = {k: v[:20] for k, v in world.pool.items()}
    h = -(a0 + a1 * stats["sigma_logppl"]) * np.log(stats["mu_logppl"]) \
        - (b0 + b1 * stats["mu_logppl"]) * np.log(stats["sigma_logppl"])
    for d in (1e5, 3e5):
        log_excess = np.log(np.exp(truth.log_loss(stats, d)) - truth.E)
        log_dc = log_excess - truth.info["scale"] * h + truth.alphaD * np.log(d)
        assert np.ptp(log_dc) < 1e-9
    # the typical (median) pool subset sits `depth` above the best in log-loss at the deployment budget
    log_l = truth.log_loss(world.pool, world.deploy)
    assert np.median(log_l - log_l.min()) == pytest.approx(0.02, rel=1e-3)
    # a tail truth depends on the 90% quantile only
    tail = make_truth("tail", world, np.random.default_rng(1))
    one = subset_stats(world.ppl[:400])
    other = dict(one, mu_logppl=one["mu_logppl"] * 1.1, sigma_logppl=one["sigma_logppl"] * 0.5)
    assert tail.log_loss(one, 1e5) == pytest.approx(tail.log_loss(other, 1e5))
    assert not INTERIOR["edge"] and not INTERIOR["saddle"] and INTERIOR["quad"]


def test_selection_is_safe_only_with_support_and_the_interior_check(world):
    """Family `quad` (a bowl the paper's law cannot express) on the paper's windows grid: the
    supported, interior-checked loop refuses, hence never loses to random; without the check it
    selects at the edge of the support, and without the support too it extrapolates to subsets
    clearly worse than random."""
    base = dict(grid="windows", moments="ppl", selector="bands", bootstrap=30, noise=NOISE)
    seeds = range(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safe = [run_replicate(world, "quad", LoopConfig(**base), s)["point"] for s in seeds]
        no_check = [run_replicate(world, "quad", LoopConfig(**base, allow_boundary=True), s)["point"] for s in seeds]
        neither = [run_replicate(world, "quad", LoopConfig(**base, allow_boundary=True, trust_margin=100.0), s)["point"]
                   for s in seeds]
    assert all(r["refused"] and r["regret_random"] <= NOISE for r in safe)
    assert not any(r["refused"] for r in no_check + neither)
    assert all(r["fraction_at_boundary"] > 0.2 for r in no_check)  # what the check would have refused
    worse = [r["regret_random"] for r in neither]
    assert min(worse) > NOISE  # unsupported targets lose to random in every replicate
    assert np.mean([r["regret_random"] for r in no_check]) < np.mean(worse) - NOISE
