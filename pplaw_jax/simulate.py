"""A known-truth simulator of CPT outcomes over a perplexity landscape, and the loop it scores.

Before anyone spends accelerator hours, the whole method (law-fitting runs -> fit -> supported
target with the interior check -> selection) is run against outcomes whose truth is known:

* Landscape: a real one (chunk ppl and scored tokens of a landscape directory) or
  `heavy_tailed_landscape` (log ppl a mixture with a heavy right tail, like real web/medical text
  scored by a small model).
* Truth: the "loss" of a subset trained on ``D`` tokens is ``log L = log(E + exp(g(S)) *
  (D / D0)^-alphaD)`` plus Gaussian noise of sd `noise` on log-loss (default 0.005), where
  ``g`` is a known function of the subset's chunk distribution.  Families:

  - ``bowl``: the paper's law in ``ppl`` moments with an interior optimum;
  - ``bowl-log``: the paper's law in ``logppl`` moments with an interior optimum;
  - ``edge``: the paper's law without interaction whose best subsets sit on the attainable
    region's edge (no interior optimum);
  - ``quad``: a quadratic bowl in ``(log mu, log sigma)`` of log-ppl moments (misspecified for
    the paper's law, interior optimum);
  - ``saddle``: a quadratic saddle in the same coordinates (no interior optimum);
  - ``tail``: a bowl in the 90% quantile of the subset's log ppl, not in ``mu`` or ``sigma``.

  Interior optima are placed at random inside the middle of the design's region; ``g`` is scaled
  so that a typical subset (the median over a pool of subsets) is `depth` (default 0.02) above the
  best one in log-loss at the deployment budget ``D0``.
* Scores, at the deployment budget: the true optimum is the best of a pool of realisable subsets
  (tilted subsets over a grid of tilts and two-band subsets over the attainable region); a run
  *recovers* it when its target lies within 0.25 landscape standard deviations (of the fit's
  moment kind) of that subset's moments; *regret* is the selected subset's true log-loss minus the
  optimum's, and minus a random subset's (the mean of 5 random subsets of the same budget); a
  refusal selects random; *coverage* is whether the law's 90% interval at the selected subset
  holds its true loss.

`run_replicate` runs one loop; `benchmarks/selection_sim.py` runs many and tabulates them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.law.forms import get_law, predict_loss
from pplaw_jax.law.point import fit_point
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.law.support import DEFAULT_MARGIN, SupportRegion
from pplaw_jax.moments import chunk_values, columns
from pplaw_jax.select.baselines import select_baseline
from pplaw_jax.select.design import build_design, unit_to_region
from pplaw_jax.select.dos import RankedLandscape, dos_select
from pplaw_jax.config import MAX_BOUNDARY_FRACTION
from pplaw_jax.select.target import NoInteriorOptimum, choose_target
from pplaw_jax.select.tilted import TiltedSampler, tilted_select
from pplaw_jax.select.windows import select_windows

FAMILIES = ("bowl", "bowl-log", "edge", "quad", "saddle", "tail")
INTERIOR = {"bowl": True, "bowl-log": True, "edge": False, "quad": True, "saddle": False, "tail": True}
WINDOWS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0), (0.1, 0.9), (0.0, 0.5), (0.5, 1.0),
           (0.0, 1.0))  # the committed cpu_tiny grid's windows
RECOVERY_SD = 0.25
N_RANDOM = 5


def heavy_tailed_landscape(n_chunks: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ppl and scored tokens: log ppl from ``0.9 N(2.8, 0.45) + 0.1 N(4.3, 0.9)`` (a heavy
    right tail of hard chunks), tokens uniform in [64, 255]."""
    rng = np.random.default_rng(seed)
    tail = rng.random(n_chunks) < 0.1
    log_ppl = np.where(tail, rng.normal(4.3, 0.9, n_chunks), rng.normal(2.8, 0.45, n_chunks))
    return np.exp(log_ppl), rng.integers(64, 256, n_chunks)


def subset_stats(ppl) -> dict[str, np.ndarray]:
    """Moments of both kinds and the 90% quantile of log ppl, per subset; `ppl` is one array
    (one subset) or a list of arrays."""
    subsets = [ppl] if isinstance(ppl, np.ndarray) else list(ppl)
    out = {k: [] for k in ("mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl", "q90_logppl")}
    for p in subsets:
        lp = np.log(p)
        for name, x in (("ppl", p), ("logppl", lp)):
            out[f"mu_{name}"].append(x.mean())
            out[f"sigma_{name}"].append(x.std())
        out["q90_logppl"].append(np.quantile(lp, 0.9))
    return {k: np.asarray(v) for k, v in out.items()}


@dataclass
class World:
    """A landscape, the law-fitting budgets and the deployment budget, with a pool of realisable
    subsets at the deployment budget (their stats) for locating the true optimum."""

    ppl: np.ndarray
    n_tokens: np.ndarray
    budgets: tuple[int, ...]
    deploy: int
    pool: dict = field(default_factory=dict)

    @classmethod
    def build(cls, ppl, n_tokens, budgets, deploy=None) -> World:
        budgets = tuple(sorted(int(b) for b in budgets))
        world = cls(np.asarray(ppl, float), np.asarray(n_tokens, np.int64), budgets,
                    int(deploy or budgets[len(budgets) // 2]))
        subsets = []
        for seed in (0, 1):
            s = TiltedSampler(np.log(world.ppl), world.n_tokens, world.deploy, seed)
            for a in np.linspace(-6, 6, 25):
                for b in np.concatenate([-np.geomspace(0.05, 30, 12), [0.0], np.geomspace(0.02, 3, 8)]):
                    rows = s.rows(a, b)
                    if rows.size:
                        subsets.append(world.ppl[rows])
        for kind in ("ppl", "logppl"):
            values = chunk_values(world.ppl, kind)
            space = RankedLandscape(values, world.n_tokens, world.deploy)
            mu, sigma = space.region.grid(15, 10)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                subsets += [world.ppl[dos_select(space, m, s).indices] for m, s in zip(mu, sigma)]
        world.pool = subset_stats(subsets)
        return world

    def region(self, kind: str, budget: int):
        return RankedLandscape(chunk_values(self.ppl, kind), self.n_tokens, budget).region


@dataclass
class Truth:
    """``log L = log(E + exp(g(stats)) * (D / D0)^-alphaD)``; ``g`` maps subset stats to an array."""

    family: str
    g: object
    d0: float
    E: float = 2.0
    alphaD: float = 0.3
    info: dict = field(default_factory=dict)

    def log_loss(self, stats: dict, tokens) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.log(self.E + np.exp(self.g(stats)) * (np.asarray(tokens, float) / self.d0) ** -self.alphaD)


def _paper_h(mu, sigma, a0, a1, b0, b1):
    return -(a0 + a1 * sigma) * np.log(mu) - (b0 + b1 * mu) * np.log(sigma)


def _paper_bowl(mu_s: float, sigma_s: float, region):
    """Coefficients of the paper's law with a stationary minimum at ``(mu_s, sigma_s)`` that is
    also the least value over the attainable `region` (searched over interaction magnitudes)."""
    mu, sigma = region.grid(60, 40)
    for scale in (1.0, 0.5, 2.0, 0.25, 4.0):
        for sa, sb in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            a1, b1 = -sa * scale / sigma_s, -sb * scale / mu_s
            a0 = -a1 * sigma_s - b1 * mu_s * np.log(sigma_s)
            b0 = -b1 * mu_s - a1 * sigma_s * np.log(mu_s)
            h11 = (a0 + a1 * sigma_s) / mu_s**2
            h22 = (b0 + b1 * mu_s) / sigma_s**2
            h12 = -a1 / mu_s - b1 / sigma_s
            if not (h11 > 0 and h11 * h22 - h12**2 > 0):
                continue
            h_star = _paper_h(mu_s, sigma_s, a0, a1, b0, b1)
            if np.min(_paper_h(mu, sigma, a0, a1, b0, b1)) >= h_star - 1e-9:
                return (a0, a1, b0, b1), h_star
    return None


def make_truth(family: str, world: World, rng: np.random.Generator, depth: float = 0.02) -> Truth:
    """A truth of `family` on `world` (random interior optimum for the interior families)."""
    if family not in FAMILIES:
        raise PplawError(f"unknown truth family {family!r}; known: {', '.join(FAMILIES)}")
    kind = "ppl" if family in ("bowl", "edge") else "logppl"
    mu_c, sigma_c = columns(kind)
    design_region = world.region(kind, world.budgets[-1])
    info: dict = {"moments": kind}
    for _ in range(50):
        u = rng.uniform(0.3, 0.7, size=2)
        m_s, s_s = (float(v[0]) for v in unit_to_region(design_region, u[:1], u[1:], 0.05))
        if family in ("bowl", "bowl-log"):
            found = _paper_bowl(m_s, s_s, world.region(kind, world.deploy))
            if found is None:
                continue
            (a0, a1, b0, b1), h_star = found
            info.update(optimum={"mu": m_s, "sigma": s_s}, coef=[a0, a1, b0, b1])

            def shape(st, a0=a0, a1=a1, b0=b0, b1=b1, h_star=h_star):
                return _paper_h(st[mu_c], st[sigma_c], a0, a1, b0, b1) - h_star
        elif family == "edge":
            lm0, ls0 = np.log(world.pool[mu_c]).min(), np.log(world.pool[sigma_c]).min()

            def shape(st, lm0=lm0, ls0=ls0):  # always lower with larger mu and sigma: no interior bowl
                return -(np.log(st[mu_c]) - lm0) - 0.5 * (np.log(st[sigma_c]) - ls0)
        elif family in ("quad", "saddle"):
            sx, sy = np.ptp(np.log(world.pool[mu_c])), np.ptp(np.log(world.pool[sigma_c]))
            sign = 1.0 if family == "quad" else -1.0
            info.update(centre={"mu": m_s, "sigma": s_s})

            def shape(st, m_s=m_s, s_s=s_s, sx=sx, sy=sy, sign=sign):
                x, y = (np.log(st[mu_c]) - np.log(m_s)) / sx, (np.log(st[sigma_c]) - np.log(s_s)) / sy
                return x * x + sign * y * y + 0.3 * x * y
        else:  # tail
            q = world.pool["q90_logppl"]
            q_star = float(np.quantile(q, rng.uniform(0.3, 0.7)))
            sq = np.ptp(q)
            info.update(q90_star=q_star)

            def shape(st, q_star=q_star, sq=sq):
                return ((st["q90_logppl"] - q_star) / sq) ** 2
        break
    else:
        raise PplawError(f"could not place a {family} optimum on this landscape")
    base = shape(world.pool)
    base = base - base.min()
    target = depth

    def typical(k):
        log_l = np.log(2.0 + np.exp(k * base))
        return float(np.median(log_l - log_l.min()))

    lo, hi = 1e-6, 1e3
    for _ in range(100):  # bisection on the scale: the median pool subset sits `depth` above the best
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if typical(mid) < target else (lo, mid)
    k = np.sqrt(lo * hi)
    offset = float(shape(world.pool).min())
    info.update(scale=k, depth=depth)
    return Truth(family, lambda st: k * (shape(st) - offset), float(world.deploy), info=info)


@dataclass(frozen=True)
class LoopConfig:
    """One configuration of the loop: the law-fitting grid, the moments and the fit."""

    grid: str = "design"  # design | windows
    moments: str = "logppl"
    selector: str = "tilted"  # the design's (and final) selector; windows use the paper's bands
    law: str = "ppl"
    n_runs: int = 24
    n_centre: int = 3
    noise: float = 0.005
    bayes: bool = False
    chains: int = 2
    warmup: int = 300
    samples: int = 300
    bootstrap: int = 100
    trust_margin: float = DEFAULT_MARGIN
    max_boundary_fraction: float = MAX_BOUNDARY_FRACTION
    allow_boundary: bool = False


def initial_subsets(world: World, cfg: LoopConfig, seed: int) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Rows, budgets and groups of the law-fitting runs for `cfg.grid`."""
    values = chunk_values(world.ppl, cfg.moments)
    if cfg.grid == "windows":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            subsets, _, _ = select_windows(values, world.n_tokens, WINDOWS, world.budgets, seed)
        return ([s.selection.indices for s in subsets], [s.budget for s in subsets],
                [s.name.rsplit("_b", 1)[0] for s in subsets])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points, sels, _ = build_design(values, world.n_tokens, world.budgets, cfg.n_runs, cfg.n_centre,
                                       cfg.selector, seed, candidates=500)
    return [s.indices for s in sels], [p.budget for p in points], [p.group for p in points]


def observe(world: World, truth: Truth, rows: list[np.ndarray], budgets, rng, noise: float) -> dict:
    """Noisy losses of subsets (``rows``) trained on their own token counts, plus their stats."""
    stats = subset_stats([world.ppl[r] for r in rows])
    tokens = np.array([world.n_tokens[r].sum() for r in rows], dtype=float)
    log_l = truth.log_loss(stats, tokens) + noise * rng.standard_normal(len(rows))
    return {"stats": stats, "tokens": tokens, "loss": np.exp(log_l), "budgets": np.asarray(budgets)}


def fit_runs(obs: dict, groups, cfg: LoopConfig, seed: int) -> dict:
    """Point fit with a group bootstrap and (``cfg.bayes``) a NUTS posterior, in the fit's moments."""
    mu_c, sigma_c = columns(cfg.moments)
    runs = runs_from_arrays(obs["stats"][mu_c], obs["stats"][sigma_c], obs["tokens"], obs["loss"],
                            group=list(groups), moments=cfg.moments)
    form = get_law(cfg.law)
    point = fit_point(runs, form, bootstrap=cfg.bootstrap, seed=seed)
    out = {"runs": runs, "point": point.params, "bootstrap": point.bootstrap_params, "posterior": None}
    if cfg.bayes:
        from pplaw_jax.law.bayes import Priors, SamplerConfig, fit_bayes

        bayes = fit_bayes(runs, point, Priors(), SamplerConfig(chains=cfg.chains, warmup=cfg.warmup,
                                                               samples=cfg.samples, seed=seed))
        flat = bayes.flat()
        out["posterior"] = {k: flat[k] for k in form.param_names}
        out["converged"] = bayes.diagnostics()["converged"]
    return out


def choose(world: World, fit: dict, cfg: LoopConfig, target_kind: str, support: SupportRegion):
    """The target (or a refusal) for `target_kind` (point | posterior)."""
    draws, source = (fit["posterior"], "posterior") if target_kind == "posterior" else (fit["bootstrap"], "bootstrap")
    region = world.region(cfg.moments, world.deploy)
    try:
        choice = choose_target(region, cfg.law, fit["point"], draws, world.deploy, support,
                               draws_source=source, max_boundary_fraction=cfg.max_boundary_fraction,
                               allow_boundary=cfg.allow_boundary)
    except NoInteriorOptimum as e:
        return None, e.details["interior"]["fraction_at_boundary"]
    except PplawError:
        return None, None
    return choice.get(target_kind), choice.interior["fraction_at_boundary"]


def realise(world: World, cfg: LoopConfig, mu: float, sigma: float, seed: int) -> np.ndarray:
    """Rows of the subset for a target, by the family the law was fitted on."""
    values = chunk_values(world.ppl, cfg.moments)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.grid == "design" and cfg.selector == "tilted":
            return tilted_select(values, world.n_tokens, world.deploy, mu, sigma, seed=seed).indices
        return dos_select(RankedLandscape(values, world.n_tokens, world.deploy), mu, sigma).indices


def score(world: World, truth: Truth, cfg: LoopConfig, fit: dict, target, rows, random_log_l: float,
          best: dict, fraction_at_boundary) -> dict:
    """The metrics of one selection (or refusal) against the truth."""
    mu_c, sigma_c = columns(cfg.moments)
    sd = float(chunk_values(world.ppl, cfg.moments).std())
    out = {"refused": target is None, "fraction_at_boundary": fraction_at_boundary}
    if target is None:
        out.update(recovered=False, regret_opt=random_log_l - best["log_l"], regret_random=0.0,
                   covered=None, distance_sd=None)
        return out
    st = subset_stats(world.ppl[rows])
    log_l = float(truth.log_loss(st, world.deploy)[0])
    distance = np.hypot(target.mu - best[mu_c], target.sigma - best[sigma_c]) / sd
    draws = fit["posterior"] if fit["posterior"] is not None else fit["bootstrap"]
    with np.errstate(over="ignore", invalid="ignore"):
        pred = predict_loss(cfg.law, {k: v[:, None] for k, v in draws.items()}, st[mu_c][None],
                            st[sigma_c][None], np.array([[world.n_tokens[rows].sum()]]))[:, 0]
    pred = pred[np.isfinite(pred)]
    lo, hi = np.quantile(pred, [0.05, 0.95]) if pred.size else (np.nan, np.nan)
    true_l = float(np.exp(truth.log_loss(st, world.n_tokens[rows].sum())[0]))
    out.update(recovered=bool(distance <= RECOVERY_SD), distance_sd=float(distance),
               regret_opt=log_l - best["log_l"], regret_random=log_l - random_log_l,
               covered=bool(lo <= true_l <= hi))
    return out


def run_replicate(world: World, family: str, cfg: LoopConfig, seed: int, depth: float = 0.02) -> dict:
    """One design -> fit -> select loop on a fresh truth of `family`; metrics per target kind."""
    rng, truth, best, random_log_l = _truth_and_references(world, family, cfg, seed, depth)
    rows, budgets, groups = initial_subsets(world, cfg, seed)
    obs = observe(world, truth, rows, budgets, rng, cfg.noise)
    fit = fit_runs(obs, groups, cfg, seed)
    result = {"family": family, "seed": seed, "grid": cfg.grid, "moments": cfg.moments,
              "selector": cfg.selector if cfg.grid == "design" else "bands", "law": cfg.law,
              "n_runs": len(rows), "truth": truth.info, "random_minus_best": random_log_l - best["log_l"],
              "converged": fit.get("converged")}
    for kind in ("point", "posterior") if cfg.bayes else ("point",):
        result[kind] = _select_and_score(world, truth, cfg, fit, kind, seed, random_log_l, best)
    return result

def _select_and_score(world: World, truth: Truth, cfg: LoopConfig, fit: dict, kind: str, seed: int,
                      random_log_l: float, best: dict) -> dict:
    support = SupportRegion(fit["runs"].mu, fit["runs"].sigma, cfg.trust_margin)
    target, frac = choose(world, fit, cfg, kind, support)
    rows = None if target is None else realise(world, cfg, target.mu, target.sigma, seed)
    return score(world, truth, cfg, fit, target, rows, random_log_l, best, frac)


def _truth_and_references(world: World, family: str, cfg: LoopConfig, seed: int, depth: float):
    rng = np.random.default_rng(np.random.SeedSequence([seed, FAMILIES.index(family)]))
    truth = make_truth(family, world, rng, depth)
    pool_log_l = truth.log_loss(world.pool, world.deploy)
    i = int(np.argmin(pool_log_l))
    best = {k: float(v[i]) for k, v in world.pool.items()} | {"log_l": float(pool_log_l[i])}
    values = chunk_values(world.ppl, cfg.moments)
    rand = [select_baseline("random", values, world.n_tokens, world.deploy, seed * 100 + k).indices
            for k in range(N_RANDOM)]
    random_log_l = float(np.mean(truth.log_loss(subset_stats([world.ppl[r] for r in rand]), world.deploy)))
    return rng, truth, best, random_log_l


def run_sequential(world: World, family: str, cfg: LoopConfig, seed: int, initial: int = 12,
                   rounds: int = 3, per_round: int = 4, depth: float = 0.02,
                   explore_margin: float = 0.25, stop: bool = False) -> dict:
    """The sequential loop: an `initial`-run design, then `rounds` of Thompson-sampling proposals
    (`per_round` runs at the deployment budget, inside the runs' hull widened by `explore_margin`),
    refitting after each.  The selection is scored after every fit, with the number of runs spent;
    with `stop`, the loop ends early when the stopping rule says the optimum is located."""
    from pplaw_jax.select.propose import propose, stopping
    from pplaw_jax.select.target import feasible_grid

    rng, truth, best, random_log_l = _truth_and_references(world, family, cfg, seed, depth)
    init_cfg = LoopConfig(**{**cfg.__dict__, "n_runs": initial})
    rows, budgets, groups = initial_subsets(world, init_cfg, seed)
    obs = observe(world, truth, rows, budgets, rng, cfg.noise)
    kind = "posterior" if cfg.bayes else "point"
    trace = []
    for r in range(rounds + 1):
        fit = fit_runs(obs, groups, cfg, seed + r)
        step = {"round": r, "runs": len(groups), **_select_and_score(world, truth, cfg, fit, kind, seed, random_log_l, best)}
        trace.append(step)
        if r == rounds:
            break
        draws = fit["posterior"] if cfg.bayes else fit["bootstrap"]
        region = world.region(cfg.moments, world.deploy)
        props, _ = propose(region, SupportRegion(fit["runs"].mu, fit["runs"].sigma, explore_margin), cfg.law,
                           draws, world.deploy, per_round, seed=seed + 1000 * (r + 1))
        rule = stopping(feasible_grid(region, SupportRegion(fit["runs"].mu, fit["runs"].sigma, cfg.trust_margin)),
                        cfg.law, draws, world.deploy, cfg.noise, float(chunk_values(world.ppl, cfg.moments).std()))
        step["located"] = rule["located"]
        if stop and rule["located"]:
            break
        new_rows = [realise(world, cfg, p["mu"], p["sigma"], seed + 1000 * (r + 1) + i) for i, p in enumerate(props)]
        new = observe(world, truth, new_rows, [world.deploy] * len(new_rows), rng, cfg.noise)
        obs = {"stats": {k: np.concatenate([obs["stats"][k], new["stats"][k]]) for k in obs["stats"]},
               "tokens": np.concatenate([obs["tokens"], new["tokens"]]),
               "loss": np.concatenate([obs["loss"], new["loss"]]),
               "budgets": np.concatenate([obs["budgets"], new["budgets"]])}
        groups = list(groups) + [f"r{r + 1}q{i}" for i in range(len(new_rows))]
    return {"family": family, "seed": seed, "moments": cfg.moments, "selector": cfg.selector, "law": cfg.law,
            "kind": kind, "truth": truth.info, "random_minus_best": random_log_l - best["log_l"], "trace": trace}


def run_fixed(world: World, family: str, cfg: LoopConfig, seed: int, sizes=(12, 16, 20, 24),
              depth: float = 0.02) -> dict:
    """Fixed designs of each size in `sizes` (each its own maximin design, same truth and seed),
    scored like `run_sequential`'s steps."""
    rng, truth, best, random_log_l = _truth_and_references(world, family, cfg, seed, depth)
    kind = "posterior" if cfg.bayes else "point"
    trace = []
    for n in sizes:
        c = LoopConfig(**{**cfg.__dict__, "n_runs": n})
        rows, budgets, groups = initial_subsets(world, c, seed)
        obs = observe(world, truth, rows, budgets, rng, cfg.noise)
        fit = fit_runs(obs, groups, c, seed)
        trace.append({"runs": n, **_select_and_score(world, truth, c, fit, kind, seed, random_log_l, best)})
    return {"family": family, "seed": seed, "moments": cfg.moments, "selector": cfg.selector, "law": cfg.law,
            "kind": kind, "truth": truth.info, "random_minus_best": random_log_l - best["log_l"], "trace": trace}
