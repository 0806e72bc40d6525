"""A known-truth simulator of CPT outcomes over a perplexity landscape, and the loop it scores.

Before anyone spends accelerator hours, the whole method (law-fitting runs -> fit -> supported
target with the interior check -> selection) is run against outcomes whose truth is known:

* Landscape: a real one (chunk ppl and scored tokens of a landscape directory),
  `heavy_tailed_landscape` (log ppl a mixture with a heavy right tail, like real web/medical text
  scored by a small model) or `junk_landscape` (a clean component plus planted low- and
  high-perplexity junk, with a per-chunk junk label: the positive control's corpus).
* Truth: the "loss" of a subset trained on ``D`` tokens is ``log L = log(E + exp(g(S)) *
  (D / D0)^-alphaD)`` plus Gaussian noise of sd `noise` on log-loss (a `LoopConfig` parameter),
  where ``g`` is a known function of the subset's chunk distribution.  Families:

  - ``bowl``: the paper's law in ``ppl`` moments with an interior optimum;
  - ``bowl-log``: the paper's law in ``logppl`` moments with an interior optimum;
  - ``edge``: the paper's law without interaction whose best subsets sit on the attainable
    region's edge (no interior optimum);
  - ``quad``: a quadratic bowl in ``(log mu, log sigma)`` of log-ppl moments (misspecified for
    the paper's law, interior optimum);
  - ``saddle``: a quadratic saddle in the same coordinates (no interior optimum);
  - ``tail``: a bowl in the 90% quantile of the subset's log ppl, not in ``mu`` or ``sigma``;
  - ``gp``: a smooth random surface in ``(log mu, log sigma)`` of log-ppl moments, not drawn from
    any parametric law: a Gaussian-process draw (squared-exponential kernel, length scale
    `GP_LENGTH` = 0.35 of the pool's range on each axis; `gp_surface`) plus a weak bowl
    (`GP_BOWL`) around a random point, so the pool's argmin is interior in about half the draws;
  - ``curved-d``: ``quad``'s surface with a token axis of the wrong curvature for
    ``E + B D^-alpha``: ``log L = g + c0 - c1 t - c2 t^2``, ``t = log(D / D0)``, with
    ``c0, c1, c2 = 0.41277, 0.07703, 0.01357`` fitted exactly to the mean losses 1.638 / 1.511 /
    1.323 measured on real short cosine-schedule runs at 20k / 80k / 320k tokens, mapped to
    ``D0/4, D0, 4 D0`` (the best pool subset follows them); log-loss is concave in ``log D`` (the
    decrease accelerates with D), so no ``E + B D^-alpha`` fits it;
  - ``junk``: on `junk_landscape`, ``g = k * (junk_share + 0.1 ((mu - mu_clean) / range)^2)``
    (`JUNK_MU_WEIGHT`; ``mu`` of log ppl, ``mu_clean`` the clean chunks' mean): loss grows with the
    subset's share of planted junk, with a small smooth dependence on ``mu``.

  Interior optima are placed at random inside the middle of the design's region; ``g`` is scaled
  so that a typical subset (the median over a pool of subsets) is `depth` (default 0.02) above the
  best one in log-loss at the deployment budget ``D0`` (``junk``: a random subset is `depth` above
  the best).  ``INTERIOR`` says whether a family's optimum is interior; where it is None (``gp``,
  ``junk``) each drawn truth says so in ``truth.info["interior"]`` (the pool's argmin lies more
  than `EDGE_MARGIN` of the attainable region's width from its edge, at the deployment budget).
* Scores, at the deployment budget.  The best attainable subset is the best of a pool of
  realisable subsets (tilted subsets over a grid of tilts and two-band subsets over the attainable
  region); *random* is the mean log-loss of 5 random subsets of the same budget.  The *used*
  subset is the selection, or random when the loop refuses.  Per replicate and target kind:

  - ``headroom = log L(random) - log L(best)``: what the pool offers over random;
  - ``gain = log L(random) - log L(used)`` (a refusal's gain is 0);
  - ``regret = log L(used) - log L(best)`` (a refusal's regret is its headroom: a refusal is not a
    win, it leaves the headroom on the table: ``left_on_table``);
  - ``outcome`` with the threshold ``tol`` (default the noise sd, recorded): ``refused``;
    ``harmful`` (selected, gain < -tol); ``useful`` (selected, gain > tol); ``neutral`` (selected,
    within +-tol).  Rates (`outcome_rates`, each with a 95% Wilson interval): refusal, useful,
    harmful, neutral and safe = 1 - harmful (a refusal is safe but never useful);
  - ``recovered``: the target lies within 0.25 landscape standard deviations (of the fit's moment
    kind) of the best pool subset's moments; ``covered``: the law's 90% interval at the selected
    subset holds its true loss (both only meaningful where the loop selected).

  `verdict` holds a set of replicates to the targets: where a truth has an interior optimum and
  headroom of at least ``HEADROOM_SD`` noise sd, useful >= ``USEFUL_MIN`` and harmful <=
  ``HARMFUL_MAX``; elsewhere harmful <= ``HARMFUL_MAX``.

`run_replicate` runs one loop; `benchmarks/selection_sim.py` runs many and tabulates them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pplaw_jax.config import AUTO, LACK_OF_FIT_ALPHA, MAX_BOUNDARY_FRACTION, FitConfig
from pplaw_jax.errors import PplawError
from pplaw_jax.law.choice import assess_laws, choose_law
from pplaw_jax.law.forms import LAWS, get_law, predict_loss
from pplaw_jax.law.point import fit_point
from pplaw_jax.law.region import DEFAULT_MARGIN, SupportRegion
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.moments import chunk_values, columns
from pplaw_jax.select.baselines import select_baseline
from pplaw_jax.select.design import build_design, unit_to_region
from pplaw_jax.select.dos import RankedLandscape, dos_select
from pplaw_jax.select.selectors import select_target
from pplaw_jax.select.target import Refusal, choose_target
from pplaw_jax.select.tilted import TiltedSampler
from pplaw_jax.select.windows import select_windows

FAMILIES = ("bowl", "bowl-log", "edge", "quad", "saddle", "tail", "gp", "curved-d", "junk")
# True / False: every truth of the family has / lacks an interior optimum; None: per drawn truth
# (``truth.info["interior"]``)
INTERIOR = {
    "bowl": True,
    "bowl-log": True,
    "edge": False,
    "quad": True,
    "saddle": False,
    "tail": True,
    "gp": None,
    "curved-d": True,
    "junk": None,
}
WINDOWS = (
    (0.0, 0.25),
    (0.25, 0.5),
    (0.5, 0.75),
    (0.75, 1.0),
    (0.1, 0.9),
    (0.0, 0.5),
    (0.5, 1.0),
    (0.0, 1.0),
)  # the committed cpu_tiny grid's windows
RECOVERY_SD = 0.25
N_RANDOM = 5
EDGE_MARGIN = 0.05  # an argmin closer than this (share of the region's width) to its edge is not interior
# targets of `verdict`
HEADROOM_SD = 3.0
USEFUL_MIN = 0.70
HARMFUL_MAX = 0.05
OUTCOMES = ("refused", "useful", "neutral", "harmful")
# gp: squared-exponential length scale (share of the pool's range per axis), grid size, weight of
# the bowl (in range units squared) that makes about half the draws' optima interior
GP_LENGTH = 0.35
GP_GRID = 25
GP_BOWL = 3.0  # 48% of 200 draws interior on heavy_tailed_landscape (2500 and 6000 chunks)
# curved-d: mean loss measured on real short cosine-schedule runs at 20k / 80k / 320k tokens; the
# simulator's budgets are D0/4, D0, 4 D0 (the same 16x span), D0 the deployment budget <-> 80k
CURVED_D_LOSS = (1.638, 1.511, 1.323)


def _curved_d_coefficients(losses=CURVED_D_LOSS) -> tuple[float, float, float]:
    """``(c0, c1, c2)`` with ``log L = c0 - c1 t - c2 t^2``, ``t = log(D / D0)``, exactly through
    ``log(losses)`` at ``t = -log 4, 0, log 4``."""
    y_lo, y_0, y_hi = np.log(losses)
    h = np.log(4.0)
    return float(y_0), float(-(y_hi - y_lo) / (2 * h)), float(-(y_hi + y_lo - 2 * y_0) / (2 * h * h))


CURVED_D = _curved_d_coefficients()  # (0.41277, 0.07703, 0.01357)
JUNK_MU_WEIGHT = 0.1  # junk: weight of the smooth dependence on mu beside the junk share


def heavy_tailed_landscape(n_chunks: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ppl and scored tokens: log ppl from ``0.9 N(2.8, 0.45) + 0.1 N(4.3, 0.9)`` (a heavy
    right tail of hard chunks), tokens uniform in [64, 255]."""
    rng = np.random.default_rng(seed)
    tail = rng.random(n_chunks) < 0.1
    log_ppl = np.where(tail, rng.normal(4.3, 0.9, n_chunks), rng.normal(2.8, 0.45, n_chunks))
    return np.exp(log_ppl), rng.integers(64, 256, n_chunks)


def junk_landscape(
    n_chunks: int = 6000, fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunk ppl, scored tokens and a per-chunk junk label (bool) for a corpus with planted junk.

    Log ppl is a mixture: clean text ``N(2.8, 0.45)`` (share ``1 - fraction``), a low-perplexity
    junk tail ``N(1.2, 0.25)`` (boilerplate, repeated text; ``fraction / 2``) and a high-perplexity
    junk tail ``N(5.0, 0.6)`` (garbled text; ``fraction / 2``).  The components overlap a little,
    so no perplexity band separates junk from clean exactly.  Tokens uniform in [64, 255].
    """
    if not 0.0 <= fraction < 1.0:
        raise PplawError(f"junk fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    component = rng.choice(3, size=n_chunks, p=[1.0 - fraction, fraction / 2, fraction / 2])
    mean, sd = np.array([2.8, 1.2, 5.0]), np.array([0.45, 0.25, 0.6])
    log_ppl = rng.normal(mean[component], sd[component])
    return np.exp(log_ppl), rng.integers(64, 256, n_chunks), component > 0


def subset_stats(ppl, junk=None) -> dict[str, np.ndarray]:
    """Moments of both kinds and the 90% quantile of log ppl, per subset; `ppl` is one array
    (one subset) or a list of arrays.  With `junk` (the subsets' per-chunk junk labels, same
    layout) also ``junk_share``, the share of the subset's chunks that are junk."""
    subsets = [ppl] if isinstance(ppl, np.ndarray) else list(ppl)
    labels = None if junk is None else ([junk] if isinstance(junk, np.ndarray) else list(junk))
    out: dict[str, list] = {k: [] for k in ("mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl", "q90_logppl")}
    for p in subsets:
        lp = np.log(p)
        for name, x in (("ppl", p), ("logppl", lp)):
            out[f"mu_{name}"].append(x.mean())
            out[f"sigma_{name}"].append(x.std())
        out["q90_logppl"].append(np.quantile(lp, 0.9))
    if labels is not None:
        out["junk_share"] = [float(np.mean(lab)) for lab in labels]
    return {k: np.asarray(v) for k, v in out.items()}


@dataclass
class World:
    """A landscape, the law-fitting budgets and the deployment budget, with a pool of realisable
    subsets at the deployment budget (their stats) for locating the true optimum; `junk` is the
    per-chunk junk label where the landscape has one (`junk_landscape`)."""

    ppl: np.ndarray
    n_tokens: np.ndarray
    budgets: tuple[int, ...]
    deploy: int
    pool: dict = field(default_factory=dict)
    junk: np.ndarray | None = None
    _regions: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, ppl, n_tokens, budgets, deploy=None, junk=None) -> World:
        budgets = tuple(sorted(int(b) for b in budgets))
        world = cls(
            np.asarray(ppl, float),
            np.asarray(n_tokens, np.int64),
            budgets,
            int(deploy or budgets[len(budgets) // 2]),
            junk=None if junk is None else np.asarray(junk, bool),
        )
        if world.junk is not None and world.junk.shape != world.ppl.shape:
            raise PplawError(f"junk labels: {world.junk.size} for {world.ppl.size} chunks")
        subsets = []
        for seed in (0, 1):
            s = TiltedSampler(np.log(world.ppl), world.n_tokens, world.deploy, seed)
            for a in np.linspace(-6, 6, 25):
                for b in np.concatenate([-np.geomspace(0.05, 30, 12), [0.0], np.geomspace(0.02, 3, 8)]):
                    rows = s.rows(a, b)
                    if rows.size:
                        subsets.append(rows)
        for kind in ("ppl", "logppl"):
            values = chunk_values(world.ppl, kind)
            space = RankedLandscape(values, world.n_tokens, world.deploy)
            mu, sigma = space.region.grid(15, 10)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                subsets += [dos_select(space, m, s).indices for m, s in zip(mu, sigma)]
        world.pool = world.stats(subsets)
        return world

    def stats(self, rows) -> dict[str, np.ndarray]:
        """`subset_stats` of subsets given by landscape rows (one array or a list of arrays),
        with ``junk_share`` where the landscape has junk labels."""
        rows = [rows] if isinstance(rows, np.ndarray) else list(rows)
        return subset_stats([self.ppl[r] for r in rows], None if self.junk is None else [self.junk[r] for r in rows])

    def region(self, kind: str, budget: int):
        key = (kind, int(budget))
        if key not in self._regions:
            self._regions[key] = RankedLandscape(chunk_values(self.ppl, kind), self.n_tokens, budget).region
        return self._regions[key]


@dataclass
class Truth:
    """``log L = log(E + exp(g(stats)) * (D / D0)^-alphaD)``, or with `curve` ``(c0, c1, c2)``
    ``log L = g(stats) + c0 - c1 t - c2 t^2`` with ``t = log(D / D0)``; ``g`` maps subset stats to
    an array."""

    family: str
    g: Callable[[dict], np.ndarray] | None  # set by `make_truth` once the scale is known
    d0: float
    E: float = 2.0
    alphaD: float = 0.3
    info: dict = field(default_factory=dict)
    curve: tuple[float, float, float] | None = None

    def log_loss(self, stats: dict, tokens) -> np.ndarray:
        if self.g is None:
            raise PplawError(f"truth {self.family!r} has no g yet (make_truth sets it)")
        return self.compose(self.g(stats), tokens)

    def compose(self, g, tokens) -> np.ndarray:
        """Log-loss from ``g`` values and token counts."""
        t = np.log(np.asarray(tokens, float) / self.d0)
        if self.curve is not None:
            c0, c1, c2 = self.curve
            return np.asarray(g, float) + c0 - c1 * t - c2 * t * t
        with np.errstate(over="ignore"):
            return np.log(self.E + np.exp(g) * np.exp(-self.alphaD * t))


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


def _cholesky(k: np.ndarray) -> np.ndarray:
    """Cholesky factor of a covariance, with the least jitter (1e-10, x10 ...) that makes it work."""
    jitter = 1e-10
    while True:
        try:
            return np.linalg.cholesky(k + jitter * np.eye(len(k)))
        except np.linalg.LinAlgError:
            jitter *= 10
            if jitter > 1e-2:
                raise


def gp_surface(
    x_range, y_range, rng: np.random.Generator, length: float = GP_LENGTH, n: int = GP_GRID, pad: float = 0.25
):
    """A draw of a zero-mean, unit-variance Gaussian process with a squared-exponential kernel
    (length scale `length` times each axis's range) over ``x_range x y_range`` widened by `pad`
    of the range on each side: sampled on an ``n x n`` grid (the kernel is separable, so the
    grid covariance is ``Kx (x) Ky`` and a draw is ``Lx Z Ly^T`` with ``L`` the jittered Cholesky
    factors) and interpolated bilinearly (`RegularGridInterpolator`); points outside the grid take
    the value at its nearest edge.  Returns ``f(x, y) -> array``."""
    from scipy.interpolate import RegularGridInterpolator

    axes, factors = [], []
    for lo, hi in (x_range, y_range):
        r = max(hi - lo, 1e-12)
        grid = np.linspace(lo - pad * r, hi + pad * r, n)
        u = (grid - lo) / r
        factors.append(_cholesky(np.exp(-0.5 * (u[:, None] - u[None, :]) ** 2 / length**2)))
        axes.append(grid)
    values = factors[0] @ rng.standard_normal((n, n)) @ factors[1].T
    interp = RegularGridInterpolator(tuple(axes), values, method="linear")

    def f(x, y):
        x, y = np.broadcast_arrays(np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float)))
        pts = np.stack(
            [
                np.clip(np.nan_to_num(x, nan=axes[0][0]), axes[0][0], axes[0][-1]),
                np.clip(np.nan_to_num(y, nan=axes[1][0]), axes[1][0], axes[1][-1]),
            ],
            axis=-1,
        )
        return interp(pts)

    return f


def argmin_interior(world: World, pool_log_l: np.ndarray, kind: str, margin: float = EDGE_MARGIN) -> dict:
    """Where the pool's best subset lies in the attainable region of `kind` moments at the
    deployment budget: unit coordinates (``mu`` over its range, ``sigma`` between its bounds at
    that ``mu``) and whether it is interior (more than `margin` from every edge)."""
    mu_c, sigma_c = columns(kind)
    i = int(np.argmin(pool_log_l))
    mu, sigma = float(world.pool[mu_c][i]), float(world.pool[sigma_c][i])
    region = world.region(kind, world.deploy)
    u_mu = (mu - region.mu_min) / max(region.mu_max - region.mu_min, 1e-300)
    lo, hi = (float(v) for v in region.sigma_bounds(mu))
    u_sigma = (sigma - lo) / (hi - lo) if hi > lo else 0.0
    return {
        "interior": bool(min(u_mu, 1 - u_mu, u_sigma, 1 - u_sigma) > margin),
        "argmin_unit": [float(u_mu), float(u_sigma)],
        "argmin": {"mu": mu, "sigma": sigma},
    }


def make_truth(family: str, world: World, rng: np.random.Generator, depth: float = 0.02) -> Truth:
    """A truth of `family` on `world` (random interior optimum for the interior families).

    `depth` sets the scale of ``g``: the median pool subset sits `depth` above the best in
    log-loss at the deployment budget; for ``junk`` the whole landscape (what a random subset is,
    on average) sits `depth` above the best, so `depth` is the junk's headroom.
    """
    if family not in FAMILIES:
        raise PplawError(f"unknown truth family {family!r}; known: {', '.join(FAMILIES)}")
    if family == "junk" and world.junk is None:
        raise PplawError("truth family 'junk' needs a landscape with junk labels (junk_landscape)")
    kind = "ppl" if family in ("bowl", "edge") else "logppl"
    mu_c, sigma_c = columns(kind)
    design_region = world.region(kind, world.budgets[-1])
    info: dict = {"moments": kind}
    shape: Callable[[dict], np.ndarray]  # the family's g before scaling, one variant per family
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
        elif family in ("quad", "saddle", "curved-d"):
            sx, sy = np.ptp(np.log(world.pool[mu_c])), np.ptp(np.log(world.pool[sigma_c]))
            sign = -1.0 if family == "saddle" else 1.0
            info.update(centre={"mu": m_s, "sigma": s_s})
            if family == "curved-d":
                info.update(
                    curve={
                        "c0": CURVED_D[0],
                        "c1": CURVED_D[1],
                        "c2": CURVED_D[2],
                        "loss_at_quarter_d0_d0_4d0": list(CURVED_D_LOSS),
                    }
                )

            def shape(st, m_s=m_s, s_s=s_s, sx=sx, sy=sy, sign=sign):
                x, y = (np.log(st[mu_c]) - np.log(m_s)) / sx, (np.log(st[sigma_c]) - np.log(s_s)) / sy
                return x * x + sign * y * y + 0.3 * x * y
        elif family == "gp":
            lx, ly = np.log(world.pool[mu_c]), np.log(world.pool[sigma_c])
            sx, sy = np.ptp(lx), np.ptp(ly)
            surface = gp_surface((lx.min(), lx.max()), (ly.min(), ly.max()), rng)
            info.update(centre={"mu": m_s, "sigma": s_s}, length=GP_LENGTH, grid=GP_GRID, bowl=GP_BOWL)

            def shape(st, m_s=m_s, s_s=s_s, sx=sx, sy=sy, surface=surface):
                with np.errstate(divide="ignore", invalid="ignore"):
                    x, y = np.log(st[mu_c]), np.log(st[sigma_c])
                bowl = ((x - np.log(m_s)) / sx) ** 2 + ((y - np.log(s_s)) / sy) ** 2
                return surface(x, y) + GP_BOWL * np.nan_to_num(bowl, nan=0.0, posinf=1e6)
        elif family == "junk":
            junk = world.junk
            assert junk is not None  # checked above
            mu_clean = float(np.mean(chunk_values(world.ppl[~junk], kind)))
            smu = float(np.ptp(world.pool[mu_c]))
            info.update(junk_fraction=float(junk.mean()), mu_clean=mu_clean, mu_weight=JUNK_MU_WEIGHT)

            def shape(st, mu_clean=mu_clean, smu=smu):
                return st["junk_share"] + JUNK_MU_WEIGHT * ((st[mu_c] - mu_clean) / smu) ** 2
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
    truth = Truth(family, None, float(world.deploy), curve=CURVED_D if family == "curved-d" else None, info=info)
    offset = float(shape(world.pool).min())
    base = shape(world.pool) - offset
    d0 = truth.d0
    if family == "junk":  # the whole landscape stands for a random subset: `depth` is the headroom
        ref = float(shape(world.stats(np.arange(world.ppl.size)))[0] - offset)

        def spread(k):
            return float(truth.compose(k * ref, d0) - truth.compose(0.0, d0))
    else:

        def spread(k):
            log_l = truth.compose(k * base, d0)
            return float(np.median(log_l - log_l.min()))

    lo, hi = 1e-6, 1e3
    for _ in range(100):  # bisection on the scale
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if spread(mid) < depth else (lo, mid)
    k = float(np.sqrt(lo * hi))
    info.update(scale=k, depth=depth)
    truth.g = lambda st: k * (shape(st) - offset)
    where = argmin_interior(world, truth.log_loss(world.pool, d0), kind)
    info.update(argmin_interior=where["interior"], argmin_unit=where["argmin_unit"])
    info["interior"] = INTERIOR[family] if INTERIOR[family] is not None else where["interior"]
    return truth


@dataclass(frozen=True)
class LoopConfig:
    """One configuration of the loop: the law-fitting grid, the moments and the fit.  `tol` is the
    threshold of the useful / neutral / harmful outcomes on the true log-loss gain over random
    (None: the noise sd)."""

    grid: str = "design"  # design | windows
    moments: str = "logppl"
    selector: str = "tilted"  # the design's (and final) selector; windows use the paper's bands
    law: str = "auto"  # as `pplaw fit --law`: auto chooses among every law (lack of fit, held-out error)
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
    tol: float | None = None
    outlier_share: float = 0.0  # `pplaw fit --outlier-share`: the trimmed lack-of-fit test

    @property
    def label(self) -> str:
        """The law setting as tables show it: the law, and the trimmed lack-of-fit test if on."""
        return self.law if not self.outlier_share else f"{self.law}:trim{self.outlier_share:g}"

    @property
    def tolerance(self) -> float:
        return float(self.noise if self.tol is None else self.tol)


def initial_subsets(world: World, cfg: LoopConfig, seed: int) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Rows, budgets and groups of the law-fitting runs for `cfg.grid`."""
    values = chunk_values(world.ppl, cfg.moments)
    if cfg.grid == "windows":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            subsets, _, _ = select_windows(values, world.n_tokens, WINDOWS, world.budgets, seed)
        return (
            [s.selection.indices for s in subsets],
            [s.budget for s in subsets],
            [s.name.rsplit("_b", 1)[0] for s in subsets],
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points, sels, _ = build_design(
            values, world.n_tokens, world.budgets, cfg.n_runs, cfg.n_centre, cfg.selector, seed, candidates=500
        )
    return [s.indices for s in sels], [p.budget for p in points], [p.group for p in points]


def observe(world: World, truth: Truth, rows: list[np.ndarray], budgets, rng, noise: float) -> dict:
    """Noisy losses of subsets (``rows``) trained on their own token counts, plus their stats."""
    stats = world.stats(rows)
    tokens = np.array([world.n_tokens[r].sum() for r in rows], dtype=float)
    log_l = truth.log_loss(stats, tokens) + noise * rng.standard_normal(len(rows))
    return {"stats": stats, "tokens": tokens, "loss": np.exp(log_l), "budgets": np.asarray(budgets)}


def fit_runs(obs: dict, groups, cfg: LoopConfig, seed: int) -> dict:
    """As the fit stage: every candidate law's lack-of-fit test and held-out error, the law choice
    (`law.choice`), then the used law's point fit with a group bootstrap and (``cfg.bayes``) a NUTS
    posterior, in the fit's moments.  ``usable`` is False when the law failed its lack-of-fit test
    (or none could be chosen): the selection then refuses."""
    mu_c, sigma_c = columns(cfg.moments)
    runs = runs_from_arrays(
        obs["stats"][mu_c], obs["stats"][sigma_c], obs["tokens"], obs["loss"], group=list(groups), moments=cfg.moments
    )
    candidates = tuple(LAWS) if cfg.law == AUTO else (cfg.law,)
    assessed = assess_laws(
        runs,
        candidates,
        alpha=LACK_OF_FIT_ALPHA,
        n_random=4,
        seed=seed,
        outlier_share=cfg.outlier_share,
        min_runs_per_param=FitConfig.min_runs_per_param,
    )
    if cfg.law == AUTO:
        choice = choose_law(assessed.heldout, assessed.lof, runs.groups, seed)
        law, usable = choice["chosen"], choice["chosen"] is not None
    else:
        law, usable = cfg.law, (assessed.lof.get(cfg.law) or {}).get("rejected") is not True
    out = {
        "runs": runs,
        "law": law,
        "usable": usable,
        "point": None,
        "bootstrap": None,
        "posterior": None,
        "lack_of_fit": {k: v["p"] for k, v in assessed.lof.items()},
        "pure_error_sd": assessed.pure_error.sd,
    }
    if not usable:
        return out
    form = get_law(law)
    point = fit_point(runs, form, bootstrap=cfg.bootstrap, seed=seed)
    out.update(point=point.params, bootstrap=point.bootstrap_params)
    if cfg.bayes:
        from pplaw_jax.law.bayes import Priors, SamplerConfig, fit_bayes

        bayes = fit_bayes(
            runs, point, Priors(), SamplerConfig(chains=cfg.chains, warmup=cfg.warmup, samples=cfg.samples, seed=seed)
        )
        flat = bayes.flat()
        out["posterior"] = {k: flat[k] for k in form.param_names}
        out["converged"] = bayes.diagnostics()["converged"]
    return out


def choose(world: World, fit: dict, cfg: LoopConfig, target_kind: str, support: SupportRegion):
    """``(target, fraction_at_boundary, refusal reason)`` for `target_kind` (point | posterior);
    a refusal has target None and its reason (the error's message for other refusals)."""
    if not fit["usable"]:
        return None, None, "lack of fit"
    draws, source = (fit["posterior"], "posterior") if target_kind == "posterior" else (fit["bootstrap"], "bootstrap")
    region = world.region(cfg.moments, world.deploy)
    try:
        choice = choose_target(
            region,
            fit["law"],
            fit["point"],
            draws,
            world.deploy,
            support,
            draws_source=source,
            max_boundary_fraction=cfg.max_boundary_fraction,
            allow_boundary=cfg.allow_boundary,
        )
    except Refusal as e:
        return None, (e.details.get("interior") or {}).get("fraction_at_boundary"), e.details["refused"]
    except PplawError as e:
        return None, None, str(e)
    return choice.get(target_kind), choice.interior["fraction_at_boundary"], None


def realise(world: World, cfg: LoopConfig, mu: float, sigma: float, seed: int) -> np.ndarray:
    """Rows of the subset for a target, by the family the law was fitted on."""
    values = chunk_values(world.ppl, cfg.moments)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        selector = cfg.selector if cfg.grid == "design" else "bands"  # windows: the paper's bands
        return select_target(selector, values, world.n_tokens, world.deploy, mu, sigma, seed=seed).indices


def classify(refused: bool, gain: float, tol: float) -> str:
    """``refused``, or for a selection ``harmful`` (gain < -tol), ``useful`` (gain > tol) or
    ``neutral``.  A refusal is never useful, whatever it left on the table."""
    if refused:
        return "refused"
    if gain < -tol:
        return "harmful"
    return "useful" if gain > tol else "neutral"


def score(
    world: World,
    truth: Truth,
    cfg: LoopConfig,
    fit: dict | None,
    target,
    rows,
    random_log_l: float,
    best: dict,
    fraction_at_boundary,
    refusal_reason: str | None = None,
) -> dict:
    """The metrics of one selection (or refusal) against the truth (see the module docstring).

    The used subset is the selection, or random for a refusal: a refusal gains 0 over random and
    its regret is the whole headroom (``left_on_table``), never 0."""
    tol = cfg.tolerance
    headroom = float(random_log_l - best["log_l"])
    out = {"refused": target is None, "fraction_at_boundary": fraction_at_boundary, "tol": tol, "headroom": headroom}
    if target is None:
        out.update(
            outcome="refused",
            refusal_reason=refusal_reason,
            gain=0.0,
            regret=headroom,
            left_on_table=headroom,
            log_l=float(random_log_l),
            target=None,
            recovered=False,
            covered=None,
            distance_sd=None,
        )
        return out
    if fit is None:
        raise PplawError("score: a selection (target) needs the fit it was chosen from")
    mu_c, sigma_c = columns(cfg.moments)
    sd = float(chunk_values(world.ppl, cfg.moments).std())
    st = world.stats(rows)
    log_l = float(truth.log_loss(st, world.deploy)[0])
    distance = np.hypot(target.mu - best[mu_c], target.sigma - best[sigma_c]) / sd
    draws = fit["posterior"] if fit["posterior"] is not None else fit["bootstrap"]
    with np.errstate(over="ignore", invalid="ignore"):
        pred = predict_loss(
            fit["law"],
            {k: v[:, None] for k, v in draws.items()},
            st[mu_c][None],
            st[sigma_c][None],
            np.array([[world.n_tokens[rows].sum()]]),
        )[:, 0]
    pred = pred[np.isfinite(pred)]
    lo, hi = np.quantile(pred, [0.05, 0.95]) if pred.size else (np.nan, np.nan)
    true_l = float(np.exp(truth.log_loss(st, world.n_tokens[rows].sum())[0]))
    gain = float(random_log_l - log_l)
    out.update(
        outcome=classify(False, gain, tol),
        refusal_reason=None,
        gain=gain,
        regret=float(log_l - best["log_l"]),
        left_on_table=None,
        log_l=log_l,
        target={"mu": float(target.mu), "sigma": float(target.sigma)},
        recovered=bool(distance <= RECOVERY_SD),
        distance_sd=float(distance),
        covered=bool(lo <= true_l <= hi),
    )
    return out


def share(flags) -> dict:
    """A proportion with its 95% Wilson interval: ``{"k", "n", "p", "lo", "hi"}`` (nan for n = 0)."""
    from pplaw_jax.train.evaluate import wilson_interval

    flags = [bool(f) for f in flags]
    k, n = int(sum(flags)), len(flags)
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "p": k / n if n else float("nan"), "lo": lo, "hi": hi}


def outcome_rates(scores: list[dict]) -> dict:
    """Refusal, useful, neutral, harmful and safe (= 1 - harmful; a refusal is safe, never useful)
    rates of a set of scored replicates, each a `share` with its 95% Wilson interval."""
    out = {
        name: share([s["outcome"] == o for s in scores])
        for name, o in (("refusal", "refused"), ("useful", "useful"), ("neutral", "neutral"), ("harmful", "harmful"))
    }
    out["safe"] = share([s["outcome"] != "harmful" for s in scores])
    return out


def has_value(record: dict, score_: dict) -> bool:
    """Whether a replicate's truth offers value the loop should find: headroom of at least
    `HEADROOM_SD` noise sd.  Its optimum is interior or on the edge of what the corpus can supply,
    and both are answers the loop may give (an optimum beyond the runs is what it refuses)."""
    return score_["headroom"] >= HEADROOM_SD * record["noise"]


def _judge(x: dict, low: float | None = None, high: float | None = None) -> tuple[bool, str]:
    """Whether a share meets ``p >= low`` / ``p <= high`` as a point estimate, and what its 95%
    interval says: ``met`` (the whole interval meets it), ``not met`` (none of it does) or
    ``undecided``."""
    if x["n"] == 0:
        return True, "undecided"
    if low is not None:
        return x["p"] >= low, "met" if x["lo"] >= low else "not met" if x["hi"] < low else "undecided"
    return x["p"] <= high, "met" if x["hi"] <= high else "not met" if x["lo"] > high else "undecided"


def verdict(pairs: list[tuple[dict, dict]]) -> dict:
    """Targets for a set of ``(replicate record, score)`` pairs, split by `has_value`: where the
    truth has value, useful >= `USEFUL_MIN` and harmful <= `HARMFUL_MAX`; elsewhere harmful <=
    `HARMFUL_MAX`.  ``met`` is judged on the point estimates; ``by_interval`` says whether the 95%
    Wilson intervals confirm it (``met``), refute it (``not met``) or cannot tell (``undecided``)."""
    groups = {
        "value": [s for r, s in pairs if has_value(r, s)],
        "no_value": [s for r, s in pairs if not has_value(r, s)],
    }
    out: dict[str, Any] = {}
    met_all = True
    intervals: list[str] = []
    for name, scores in groups.items():
        rates = outcome_rates(scores)
        checks = [_judge(rates["harmful"], high=HARMFUL_MAX)]
        if name == "value":
            checks.append(_judge(rates["useful"], low=USEFUL_MIN))
        met = all(c[0] for c in checks) if scores else True
        by = [c[1] for c in checks]
        by_interval = "not met" if "not met" in by else "undecided" if "undecided" in by else "met"
        out[name] = {
            "n": len(scores),
            "useful": rates["useful"],
            "harmful": rates["harmful"],
            "targets": (
                f"useful >= {USEFUL_MIN:.2f}, harmful <= {HARMFUL_MAX:.2f}"
                if name == "value"
                else f"harmful <= {HARMFUL_MAX:.2f}"
            ),
            "met": met,
            "by_interval": by_interval if scores else "undecided",
        }
        met_all &= met
        if scores:
            intervals.append(out[name]["by_interval"])
    out["met"] = met_all
    out["by_interval"] = (
        "not met" if "not met" in intervals else "undecided" if "undecided" in intervals or not intervals else "met"
    )
    return out


def run_replicate(world: World, family: str, cfg: LoopConfig, seed: int, depth: float = 0.02) -> dict:
    """One design -> fit -> select loop on a fresh truth of `family`; metrics per target kind."""
    rng, truth, best, random_log_l = _truth_and_references(world, family, cfg, seed, depth)
    rows, budgets, groups = initial_subsets(world, cfg, seed)
    obs = observe(world, truth, rows, budgets, rng, cfg.noise)
    fit = fit_runs(obs, groups, cfg, seed)
    result = {
        **_header(family, seed, cfg, truth, best, random_log_l, depth),
        "n_runs": len(rows),
        "converged": fit.get("converged"),
    }
    for kind in ("point", "posterior") if cfg.bayes else ("point",):
        result[kind] = _select_and_score(world, truth, cfg, fit, kind, seed, random_log_l, best)
    return result


def _header(
    family: str, seed: int, cfg: LoopConfig, truth: Truth, best: dict, random_log_l: float, depth: float
) -> dict:
    return {
        "family": family,
        "seed": seed,
        "grid": cfg.grid,
        "moments": cfg.moments,
        "selector": cfg.selector if cfg.grid == "design" else "bands",
        "law": cfg.label,
        "truth": truth.info,
        "interior": truth.info["interior"],
        "noise": cfg.noise,
        "tol": cfg.tolerance,
        "depth": depth,
        "random_log_l": random_log_l,
        "best_log_l": best["log_l"],
        "headroom": random_log_l - best["log_l"],
        "random_minus_best": random_log_l - best["log_l"],
    }


def _select_and_score(
    world: World, truth: Truth, cfg: LoopConfig, fit: dict, kind: str, seed: int, random_log_l: float, best: dict
) -> dict:
    support = SupportRegion(fit["runs"].mu, fit["runs"].sigma, cfg.trust_margin)
    target, frac, reason = choose(world, fit, cfg, kind, support)
    rows = None if target is None else realise(world, cfg, target.mu, target.sigma, seed)
    return {
        **score(world, truth, cfg, fit, target, rows, random_log_l, best, frac, reason),
        "law_used": fit["law"],
        "law_usable": fit["usable"],
        "lack_of_fit_p": fit["lack_of_fit"],
    }


def _truth_and_references(world: World, family: str, cfg: LoopConfig, seed: int, depth: float):
    rng = np.random.default_rng(np.random.SeedSequence([seed, FAMILIES.index(family)]))
    truth = make_truth(family, world, rng, depth)
    pool_log_l = truth.log_loss(world.pool, world.deploy)
    i = int(np.argmin(pool_log_l))
    best = {k: float(v[i]) for k, v in world.pool.items()} | {"log_l": float(pool_log_l[i])}
    values = chunk_values(world.ppl, cfg.moments)
    rand = [
        select_baseline("random", values, world.n_tokens, world.deploy, seed * 100 + k).indices for k in range(N_RANDOM)
    ]
    random_log_l = float(np.mean(truth.log_loss(world.stats(rand), world.deploy)))
    return rng, truth, best, random_log_l


def run_sequential(
    world: World,
    family: str,
    cfg: LoopConfig,
    seed: int,
    initial: int = 12,
    rounds: int = 3,
    per_round: int = 4,
    depth: float = 0.02,
    explore_margin: float = 0.25,
    stop: bool = False,
) -> dict:
    """The sequential loop: an `initial`-run design, then `rounds` of Thompson-sampling proposals
    (`per_round` runs at the deployment budget, inside the runs' hull widened by `explore_margin`),
    refitting after each.  The selection is scored after every fit, with the number of runs spent
    (a refusal at a round scores its headroom as regret); with `stop`, the loop ends early when
    the stopping rule says the optimum is located."""
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
        step = {
            "round": r,
            "runs": len(groups),
            **_select_and_score(world, truth, cfg, fit, kind, seed, random_log_l, best),
        }
        trace.append(step)
        if r == rounds:
            break
        if not fit["usable"] or not get_law(fit["law"]).uses_perplexity:
            step["located"] = None  # no law to propose from: the loop stops here
            break
        draws = fit["posterior"] if cfg.bayes else fit["bootstrap"]
        region = world.region(cfg.moments, world.deploy)
        props, _ = propose(
            region,
            SupportRegion(fit["runs"].mu, fit["runs"].sigma, explore_margin),
            fit["law"],
            draws,
            world.deploy,
            per_round,
            seed=seed + 1000 * (r + 1),
        )
        noise = fit["pure_error_sd"] or cfg.noise  # as `pplaw propose`: the replicates' pure error
        rule = stopping(
            feasible_grid(region, SupportRegion(fit["runs"].mu, fit["runs"].sigma, cfg.trust_margin)),
            fit["law"],
            draws,
            world.deploy,
            noise,
            float(chunk_values(world.ppl, cfg.moments).std()),
            fit["runs"].mu,
            fit["runs"].sigma,
        )
        step["located"] = rule["located"]
        if stop and rule["located"]:
            break
        new_rows = [realise(world, cfg, p["mu"], p["sigma"], seed + 1000 * (r + 1) + i) for i, p in enumerate(props)]
        new = observe(world, truth, new_rows, [world.deploy] * len(new_rows), rng, cfg.noise)
        obs = {
            "stats": {k: np.concatenate([obs["stats"][k], new["stats"][k]]) for k in obs["stats"]},
            "tokens": np.concatenate([obs["tokens"], new["tokens"]]),
            "loss": np.concatenate([obs["loss"], new["loss"]]),
            "budgets": np.concatenate([obs["budgets"], new["budgets"]]),
        }
        groups = list(groups) + [f"r{r + 1}q{i}" for i in range(len(new_rows))]
    return {**_header(family, seed, cfg, truth, best, random_log_l, depth), "kind": kind, "trace": trace}


def run_fixed(
    world: World, family: str, cfg: LoopConfig, seed: int, sizes=(12, 16, 20, 24), depth: float = 0.02
) -> dict:
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
    return {**_header(family, seed, cfg, truth, best, random_log_l, depth), "kind": kind, "trace": trace}
