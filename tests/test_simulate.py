"""The known-truth simulator: its truths are what they claim, a refusal is scored as what it is (no
gain, the headroom left on the table; safe but never useful), and the selection loop stays safe
only because of the supported region and the interior-optimum check (a fast version of
benchmarks/selection_sim.py)."""

import warnings

import numpy as np
import pytest

from pplaw_jax.simulate import (
    CURVED_D_LOSS,
    EDGE_MARGIN,
    FAMILIES,
    INTERIOR,
    OUTCOMES,
    LoopConfig,
    World,
    _truth_and_references,
    classify,
    heavy_tailed_landscape,
    junk_landscape,
    make_truth,
    outcome_rates,
    run_replicate,
    score,
    subset_stats,
    verdict,
)

NOISE = 0.005


def _budgets(n_tokens):
    total = int(n_tokens.sum())
    return [total // 160, total // 40, total // 10]


@pytest.fixture(scope="module")
def world():
    ppl, n_tokens = heavy_tailed_landscape(2500, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return World.build(ppl, n_tokens, _budgets(n_tokens))


@pytest.fixture(scope="module")
def junk_world():
    ppl, n_tokens, junk = junk_landscape(2500, fraction=0.3, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return World.build(ppl, n_tokens, _budgets(n_tokens), junk=junk)


def _check_score(s: dict, tol: float = NOISE):
    """The scoring identities every replicate must satisfy."""
    assert set(s) >= {"refused", "outcome", "gain", "headroom", "regret", "left_on_table", "tol"}
    assert s["tol"] == tol and s["outcome"] in OUTCOMES
    assert s["gain"] + s["regret"] == pytest.approx(s["headroom"], abs=1e-12)  # used vs random vs best
    if s["refused"]:
        assert s["outcome"] == "refused" and s["gain"] == 0.0
        assert s["regret"] == s["headroom"] == s["left_on_table"]
    else:
        assert s["outcome"] == classify(False, s["gain"], tol) and s["left_on_table"] is None


def test_truths_have_the_stated_shape(world):
    rng = np.random.default_rng(0)
    truth = make_truth("bowl-log", world, rng, depth=0.02)
    a0, a1, b0, b1 = truth.info["coef"]
    opt = truth.info["optimum"]
    # the paper's law, written out, has its least value over the pool at the stated optimum
    pool_h = -(a0 + a1 * world.pool["sigma_logppl"]) * np.log(world.pool["mu_logppl"]) - (
        b0 + b1 * world.pool["mu_logppl"]
    ) * np.log(world.pool["sigma_logppl"])
    h_opt = -(a0 + a1 * opt["sigma"]) * np.log(opt["mu"]) - (b0 + b1 * opt["mu"]) * np.log(opt["sigma"])
    assert pool_h.min() >= h_opt - 1e-9
    # it is the paper's law in logppl moments: log(L - E) = log Dc + k h(mu, sigma) - alphaD log D,
    # with h = -(a0 + a1 sigma) log mu - (b0 + b1 mu) log sigma
    stats = {k: v[:20] for k, v in world.pool.items()}
    h = -(a0 + a1 * stats["sigma_logppl"]) * np.log(stats["mu_logppl"]) - (b0 + b1 * stats["mu_logppl"]) * np.log(
        stats["sigma_logppl"]
    )
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
    assert not INTERIOR["edge"] and not INTERIOR["saddle"] and INTERIOR["quad"] and INTERIOR["curved-d"]
    assert INTERIOR["gp"] is None and INTERIOR["junk"] is None  # decided per drawn truth
    # every truth states whether its optimum is interior; the fixed families agree with their pool argmin
    for family in ("bowl-log", "edge", "saddle"):
        t = make_truth(family, world, np.random.default_rng(2))
        assert t.info["interior"] is INTERIOR[family] and t.info["argmin_interior"] is INTERIOR[family]


def _pool_argmin_interior(world, truth) -> bool:
    """Independent re-computation: is the pool's best subset more than EDGE_MARGIN of the region's
    width (unit coordinates) from the attainable region's edge?"""
    log_l = truth.log_loss(world.pool, world.deploy)
    i = int(np.argmin(log_l))
    mu, sigma = world.pool["mu_logppl"][i], world.pool["sigma_logppl"][i]
    region = world.region("logppl", world.deploy)
    lo, hi = region.sigma_bounds(mu)
    u = [(mu - region.mu_min) / (region.mu_max - region.mu_min), (sigma - lo) / (hi - lo)]
    return min(u[0], 1 - u[0], u[1], 1 - u[1]) > EDGE_MARGIN


def test_gp_truths_are_smooth_seeded_and_interior_only_sometimes(world):
    flags = []
    for seed in range(12):
        truth = make_truth("gp", world, np.random.default_rng(seed))
        assert truth.info["interior"] == _pool_argmin_interior(world, truth)
        flags.append(truth.info["interior"])
        log_l = truth.log_loss(world.pool, world.deploy)
        assert np.median(log_l - log_l.min()) == pytest.approx(0.02, rel=1e-3)
    assert any(flags) and not all(flags)  # the weak bowl makes some optima interior, not all
    # seeded: the same generator state gives the same surface
    a, b = (make_truth("gp", world, np.random.default_rng(5)) for _ in range(2))
    assert np.array_equal(a.g(world.pool), b.g(world.pool))
    # smooth: a 0.1% step in mu and sigma moves g by a tiny share of its range over the pool
    g = a.g(world.pool)
    step = dict(world.pool, mu_logppl=world.pool["mu_logppl"] * 1.001, sigma_logppl=world.pool["sigma_logppl"] * 1.001)
    assert np.max(np.abs(a.g(step) - g)) < 0.02 * np.ptp(g)


def test_curved_d_has_the_measured_concave_token_axis(world):
    truth = make_truth("curved-d", world, np.random.default_rng(0))
    d0 = world.deploy
    log_l = truth.log_loss(world.pool, world.deploy)
    best = {k: v[[int(np.argmin(log_l))]] for k, v in world.pool.items()}
    # the best pool subset follows the measured mean losses at D0/4, D0, 4 D0 (20k / 80k / 320k tokens)
    curve = np.array([truth.log_loss(best, d0 * f)[0] for f in (0.25, 1.0, 4.0)])
    np.testing.assert_allclose(curve, np.log(CURVED_D_LOSS), atol=1e-12)
    # concave in log D: the decrease accelerates with D (the wrong sign for E + B D^-alpha)
    assert curve[2] - curve[1] < curve[1] - curve[0] < 0
    t = np.linspace(-2, 2, 9)
    second = np.diff(truth.log_loss(best, d0 * np.exp(t)), 2)
    assert np.all(second < 0)
    # the (mu, sigma) effect is the same at every budget (separable), and it is quad's shape
    for f in (0.25, 4.0):
        diff = truth.log_loss(world.pool, d0 * f) - log_l
        assert np.ptp(diff) < 1e-12
    assert np.median(log_l - log_l.min()) == pytest.approx(0.02, rel=1e-3)
    assert truth.info["interior"] is True and "centre" in truth.info


def test_junk_truth_grows_with_the_junk_share(junk_world):
    assert junk_world.junk.mean() == pytest.approx(0.3, abs=0.03)
    assert "junk_share" in junk_world.pool
    truth = make_truth("junk", junk_world, np.random.default_rng(0), depth=0.02)
    one = junk_world.stats(np.arange(400))
    shares = np.linspace(0, 1, 11)
    losses = [truth.log_loss(dict(one, junk_share=np.array([s])), junk_world.deploy)[0] for s in shares]
    assert np.all(np.diff(losses) > 0)  # monotone in the junk share at fixed moments
    # `depth` is the junk's headroom: the whole landscape (a random subset, on average) sits `depth`
    # above the best pool subset
    pool_l = truth.log_loss(junk_world.pool, junk_world.deploy)
    everything = truth.log_loss(junk_world.stats(np.arange(junk_world.ppl.size)), junk_world.deploy)[0]
    assert everything - pool_l.min() == pytest.approx(0.02, rel=1e-6)
    assert junk_world.pool["junk_share"][int(np.argmin(pool_l))] < 0.5 * junk_world.junk.mean()
    with pytest.raises(Exception, match="junk labels"):
        make_truth(
            "junk",
            World(junk_world.ppl, junk_world.n_tokens, junk_world.budgets, junk_world.deploy, junk_world.pool),
            np.random.default_rng(0),
        )


def test_a_refusal_is_not_a_win(world):
    """A refusal scores gain 0 and regret = headroom (never 0), is safe but never useful, and a
    set of refusals on truths with value fails the usefulness target."""
    cfg = LoopConfig(noise=NOISE)
    _, truth, best, random_log_l = _truth_and_references(world, "edge", cfg, 0, 0.02)
    s = score(world, truth, cfg, None, None, None, random_log_l, best, 1.0)
    _check_score(s)
    assert s["headroom"] > 3 * NOISE  # edge: the pool's best is ~3 noise sd better than random
    assert s["regret"] == s["headroom"] and s["regret"] > 0 and s["gain"] == 0.0
    rates = outcome_rates([s] * 10)
    assert rates["useful"]["p"] == 0 and rates["refusal"]["p"] == 1 and rates["safe"]["p"] == 1
    assert rates["harmful"]["p"] == 0 and rates["useful"]["hi"] < 0.35  # Wilson interval, n = 10
    value = {"interior": True, "noise": NOISE}
    v = verdict([(value, s)] * 10)
    assert v["value"]["n"] == 10 and not v["value"]["met"] and not v["met"]
    assert v["by_interval"] == "not met"  # 0/10 useful: the interval excludes 0.70
    # the edge family's optimum lies on the edge of what the corpus can supply: a valid answer, so its
    # headroom counts as value whether or not the optimum is interior
    assert not verdict([({"interior": False, "noise": NOISE}, s)] * 10)["met"]
    flat = dict(s, headroom=NOISE, regret=NOISE, left_on_table=NOISE)  # no headroom: safe is enough
    assert verdict([({"interior": True, "noise": NOISE}, flat)] * 10)["met"]
    assert classify(True, 0.5, NOISE) == "refused"  # whatever the gain, a refusal is not useful
    assert [classify(False, g, NOISE) for g in (-0.01, 0.0, 0.01)] == ["harmful", "neutral", "useful"]


def test_selection_is_safe_only_with_support_and_the_interior_check(world):
    """Family `quad` (a bowl the paper's law cannot express) on the paper's windows grid: the
    supported, interior-checked loop refuses (safe, but it leaves the headroom on the table);
    without the check it selects at the edge of the support, and without the support too it
    extrapolates to subsets clearly worse than random (harmful)."""
    base = dict(grid="windows", moments="ppl", selector="bands", law="ppl", bootstrap=30, noise=NOISE)
    seeds = range(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safe = [run_replicate(world, "quad", LoopConfig(**base), s) for s in seeds]
        no_check = [run_replicate(world, "quad", LoopConfig(**base, allow_boundary=True), s)["point"] for s in seeds]
        neither = [
            run_replicate(world, "quad", LoopConfig(**base, allow_boundary=True, trust_margin=100.0), s)["point"]
            for s in seeds
        ]
    for rec in safe:
        r = rec["point"]
        _check_score(r)
        assert r["refused"] and r["outcome"] == "refused" and r["refusal_reason"]
        assert r["regret"] == rec["headroom"] > 0 and r["gain"] == 0.0  # the refusal's cost is its headroom
        assert rec["interior"] is True and rec["tol"] == NOISE
    for r in no_check + neither:
        _check_score(r)
    assert not any(r["refused"] for r in no_check + neither)
    assert all(r["fraction_at_boundary"] > 0.2 for r in no_check)  # what the check would have refused
    assert all(r["outcome"] == "harmful" and r["gain"] < -NOISE for r in neither)  # unsupported targets lose
    assert np.mean([r["gain"] for r in no_check]) > np.mean([r["gain"] for r in neither]) + NOISE
    rates = outcome_rates([rec["point"] for rec in safe])
    assert rates["safe"]["p"] == 1 and rates["useful"]["p"] == 0 and rates["refusal"]["p"] == 1
    assert outcome_rates(neither)["safe"]["p"] == 0


@pytest.mark.parametrize("family", ["gp", "curved-d", "junk"])
def test_new_families_run_end_to_end(family, world, junk_world):
    cfg = LoopConfig(grid="design", moments="logppl", selector="tilted", bootstrap=20, noise=NOISE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = run_replicate(junk_world if family == "junk" else world, family, cfg, 0)
    assert family in FAMILIES and rec["family"] == family
    assert isinstance(rec["interior"], bool) and rec["interior"] == rec["truth"]["interior"]
    assert rec["headroom"] == rec["random_minus_best"] > 0 and rec["noise"] == rec["tol"] == NOISE
    _check_score(rec["point"])
    assert rec["point"]["headroom"] == rec["headroom"]
