"""Perplexity-tilted random sampling: a smooth subset family that reaches a target ``(mu, sigma)``.

Chunk i, with standardised value ``z_i`` (the chunk's ppl or log ppl, see `pplaw_jax.moments`,
centred and scaled by the landscape's mean and std), gets the log-weight ``a*z_i + b*z_i^2``.  A
subset is a weighted random sample without replacement under the token budget, drawn by the
Gumbel-top-k trick: keys ``a*z_i + b*z_i^2 + G_i`` with ``G_i`` iid standard Gumbel from the seed,
chunks taken in decreasing key order as long as they fit (`fill_prefix`, so the budget rule
holds).  The family is smooth and contains the obvious references:

* ``(a, b) = (0, 0)`` is a uniform random subset;
* ``b < 0`` concentrates on a soft band around ``z = -a / (2b)`` (a window with soft edges);
* ``b > 0`` favours both tails (a soft version of the lowest-plus-highest "extremes" subsets).

Unlike the two-band family of `dos`, every member keeps a unimodal-or-smooth shape, so two
subsets with the same ``(mu, sigma)`` are similar as distributions: a law fitted on this family
says something about the subset it finally selects from the same family.

Reaching a target.  For fixed Gumbel noise (fixed seed) the realised moments are a function of
``(a, b)``.  The search starts at the best of a grid of tilts by their smooth with-replacement
moments (weights ``exp(a z + b z^2)``, on at most 20,000 chunks), solves the smooth moments over
all chunks (least squares) from there, and corrects for the without-replacement sampling by a
fixed-point loop (the smooth target is moved by the residual between the realised subset and the
real target); if that does not converge, a compass search on the realised distance finishes.  The
best realised subset is kept, so the recorded ``mu, sigma`` are always the exact moments of the
chosen chunks.  A subset of a few dozen chunks has lumpy moments: for one draw of the Gumbel noise
no tilt may come close (on a 3,000-chunk synthetic landscape, 14 chunks missed a high-sigma target
by 0.37 landscape sd for every tilt on a 241 x 121 grid).  So when the first draw misses, up to
`_REDRAWS` further draws of the noise (derived from the same seed, recorded as ``draw``) are
searched and the closest subset is kept: still a member of the family, reproducible from
``(seed, draw, a, b)``.  Measured on synthetic
landscapes, the family reaches the same ``(mu, sigma)`` region as the two-band family of `dos`
except for its sharpest edges (the narrowest windows), which need an infinite tilt.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from pplaw_jax.errors import PplawError
from pplaw_jax.select.core import Selection, fill_prefix, make_selection, take_all_if_short, target_distance, warn
from pplaw_jax.select.dos import default_weights

_CORRECTIONS = 10  # fixed-point corrections of the smooth target
_TOLERANCE = 1e-3  # stop when the realised distance (landscape sd) is below this
_UNREACHED = 0.05  # warn when the best realised distance exceeds this (landscape sd)
_REDRAWS = 4  # further draws of the Gumbel noise searched when the first misses the target
_PROBE_A = np.concatenate([-np.geomspace(0.05, 60.0, 20)[::-1], [0.0], np.geomspace(0.05, 60.0, 20)])
_PROBE_B = np.concatenate([-np.geomspace(0.05, 100.0, 16), [0.0], np.geomspace(0.01, 30.0, 16)])
_PROBE_CHUNKS = 20_000


class TiltedSampler:
    """Tilted subsets of one landscape at one budget with one draw of a seed's Gumbel noise."""

    def __init__(self, values: np.ndarray, n_tokens: np.ndarray, budget: int, seed: int, draw: int = 0):
        if int(budget) < 1:
            raise PplawError(f"token budget must be positive, got {budget}")
        self.values = np.asarray(values, dtype=np.float64)
        if self.values.size == 0:
            raise PplawError("the landscape has no chunks")
        self.n_tokens = np.asarray(n_tokens, dtype=np.int64)
        self.budget = int(budget)
        self.centre = float(self.values.mean())
        self.scale = float(self.values.std()) or 1.0
        self.z = (self.values - self.centre) / self.scale
        entropy = [int(seed), 0x7117] + ([int(draw)] if draw else [])
        self.gumbel = np.random.default_rng(np.random.SeedSequence(entropy)).gumbel(size=self.z.size)

    def rows(self, a: float, b: float) -> np.ndarray:
        """Landscape rows of the subset with tilt ``(a, b)``."""
        keys = a * self.z + b * self.z * self.z + self.gumbel
        return fill_prefix(np.argsort(-keys, kind="stable"), self.n_tokens, self.budget)

    def realised(self, a: float, b: float) -> tuple[float, float]:
        """Exact ``(mu, sigma)`` in z units of the subset with tilt ``(a, b)``."""
        z = self.z[self.rows(a, b)]
        return (float(z.mean()), float(z.std())) if z.size else (np.nan, np.nan)

    def smooth(self, tilt) -> np.ndarray:
        """With-replacement ``(mean, std)`` in z units of weights ``exp(a z + b z^2)``."""
        a, b = tilt
        lw = a * self.z + b * self.z * self.z
        w = np.exp(lw - lw.max())
        w /= w.sum()
        m = float(w @ self.z)
        v = max(float(w @ (self.z * self.z)) - m * m, 0.0)
        return np.array([m, np.sqrt(v)])

    def solve_smooth(self, target_z: np.ndarray, start) -> np.ndarray:
        """The tilt whose smooth moments are closest to `target_z`, searched from `start`."""
        res = least_squares(
            lambda t: self.smooth(t) - target_z, np.asarray(start, dtype=float), x_scale="jac", max_nfev=200
        )
        return res.x

    def probe(self) -> np.ndarray:
        """Smooth ``(a, b, mu_z, sigma_z)`` over a grid of tilts (all computed at once on at most
        `_PROBE_CHUNKS` chunks): a start for the search on the realised subsets."""
        z = self.z
        if z.size > _PROBE_CHUNKS:
            z = z[np.random.default_rng(0).choice(z.size, _PROBE_CHUNKS, replace=False)]
        a, b = np.meshgrid(_PROBE_A, _PROBE_B, indexing="ij")
        a, b = a.ravel(), b.ravel()
        lw = a[:, None] * z[None, :] + b[:, None] * (z * z)[None, :]
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        m = w @ z
        v = np.maximum(w @ (z * z) - m * m, 0.0)
        return np.column_stack([a, b, m, np.sqrt(v)])


def tilted_select(
    values: np.ndarray,
    n_tokens: np.ndarray,
    budget: int,
    target_mu: float,
    target_sigma: float,
    seed: int = 0,
    weights: tuple[float, float] | None = None,
) -> Selection:
    """The tilted subset (seeded) whose exact ``(mu, sigma)`` of `values` is closest to the target.

    The distance is the DOS one, ``sqrt(w_mu (mu - mu*)^2 + w_sigma (sigma - sigma*)^2)`` with
    `default_weights` (landscape-sd units).  ``info`` records the target, the tilt ``(a, b)``, the
    distance and whether the target was reached (distance <= 0.05); a `SelectionWarning` says
    when it was not.
    """
    if not (np.isfinite(target_mu) and np.isfinite(target_sigma)) or target_sigma < 0:
        raise PplawError(f"tilted target must be finite with sigma >= 0, got mu={target_mu}, sigma={target_sigma}")
    values = np.asarray(values, dtype=np.float64)
    weights = default_weights(values) if weights is None else (float(weights[0]), float(weights[1]))
    messages: list[str] = []
    info = {
        "target": {"mu": float(target_mu), "sigma": float(target_sigma)},
        "weights": {"w_mu": weights[0], "w_sigma": weights[1]},
        "seed": int(seed),
    }
    everything = take_all_if_short(values, n_tokens, budget, "tilted", messages)
    if everything is not None:
        everything.info.update(
            info, tilt=None, attainable=False, distance=target_distance(everything, target_mu, target_sigma, weights)
        )
        return everything

    best = None
    for draw in range(_REDRAWS + 1):
        s = TiltedSampler(values, n_tokens, budget, seed, draw)
        w_z = np.array(weights) * s.scale**2  # weights in z units
        tilt, d = _search(s, np.array([(target_mu - s.centre) / s.scale, target_sigma / s.scale]), w_z)
        if best is None or d < best[2]:
            best = (s, tilt, d, draw)
        if best[2] <= _UNREACHED:
            break
    assert best is not None  # the loop above runs at least once
    s, best_tilt, _, draw = best
    rows = s.rows(*best_tilt)
    sel = make_selection(values, n_tokens, rows, budget, messages)
    distance = target_distance(sel, target_mu, target_sigma, weights)
    reached = distance <= _UNREACHED
    if not reached:
        warn(
            messages,
            f"tilted: target (mu={target_mu:.4g}, sigma={target_sigma:.4g}) not reached "
            f"with {budget} tokens (closest subset: mu={sel.mu:.4g}, sigma={sel.sigma:.4g}, "
            f"distance {distance:.3g} landscape sd)",
        )
    sel.info.update(
        info,
        tilt={"a": float(best_tilt[0]), "b": float(best_tilt[1])},
        draw=draw,
        attainable=bool(reached),
        distance=distance,
    )
    return sel


def _search(s: TiltedSampler, goal: np.ndarray, w_z: np.ndarray) -> tuple[np.ndarray, float]:
    """The tilt of `s` whose realised moments are closest to `goal` (z units) and that distance
    (z units, weighted by `w_z`): probe start, smooth solve with fixed-point corrections, then a
    compass search if still short."""

    def dist(m):
        return float(np.sqrt(w_z[0] * (m[0] - goal[0]) ** 2 + w_z[1] * (m[1] - goal[1]) ** 2))

    probes = s.probe()
    tilt = probes[int(np.argmin([dist(p[2:]) for p in probes])), :2]
    aim, best_tilt, best_d = goal.copy(), tilt, dist(s.realised(*tilt))
    for _ in range(_CORRECTIONS):
        if best_d < _TOLERANCE:
            break
        tilt = s.solve_smooth(aim, tilt)
        got = np.array(s.realised(*tilt))
        d = dist(got)
        if d < best_d:
            best_tilt, best_d = tilt, d
        aim = aim + (goal - got)
        aim[1] = max(aim[1], 1e-6)
    if best_d >= _TOLERANCE:
        best_tilt, best_d = _pattern_search(s, best_tilt, dist)
    return best_tilt, best_d


def _pattern_search(s: TiltedSampler, tilt, dist, max_evals: int = 300):
    """Compass search on the realised distance over ``(a, b)``: try the 8 neighbours at the
    current steps, move to the best improvement, halve the steps otherwise."""
    x = np.asarray(tilt, dtype=float)
    best = dist(s.realised(*x))
    step = np.array([max(0.3 * abs(x[0]), 0.05), max(0.3 * abs(x[1]), 0.05)])
    moves = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if i or j], dtype=float)
    evals = 0
    while evals < max_evals and best >= _TOLERANCE and step.max() > 1e-4:
        cand = x + moves * step
        ds = [dist(s.realised(*c)) for c in cand]
        evals += len(cand)
        i = int(np.argmin(ds))
        if ds[i] < best:
            x, best = cand[i], ds[i]
        else:
            step = step / 2
    return x, best
