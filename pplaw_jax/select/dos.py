"""Distance-to-Optimum Selection (DOS): a subset whose chunk-level ppl mean and std hit a target.

Objective.  For a subset S with chunk-level ppl mean ``mu(S)`` and standard deviation
``sigma(S)`` (unweighted over chunks, ddof=0, as in the law) and target ``(mu*, sigma*)``::

    J(S) = w_mu * (mu(S) - mu*)^2 + w_sigma * (sigma(S) - sigma*)^2

subject to the budget rule (tokens <= budget, shortfall below one chunk).  Default weights are
``w_mu = w_sigma = 1 / std(ppl)^2`` over the whole landscape, so both errors are measured in the
same unit (landscape ppl standard deviations) and ``distance = sqrt(J)`` is scale-free.

Subset family.  Chunks are sorted by ppl (stable) and every candidate is the union of two bands
of consecutive ranks: a lower band that starts at rank ``a`` and takes ``T`` tokens upwards, and
an upper band that ends at rank ``e`` and takes the remaining budget downwards (clipped so the
bands never overlap).  With prefix sums of tokens, ppl and ppl^2 one candidate costs two binary
searches, so millions of candidates are cheap and a 1M-chunk landscape never leaves numpy.  The
family contains

* the *windows* (``T = budget``: one contiguous band), which give the least spread at each mean,
* the *extremes* (``a = 0``, ``e = N``: lowest chunks plus highest chunks), which give the most,

and moving the two bands between these two curves changes ``(mu, sigma)`` continuously (at the
granularity of one chunk), so every point between them is reached.

Attainable region.  `AttainableRegion` is that set of moments for a given budget: ``mu`` between
the lowest and the highest window, ``sigma`` between the window curve and the extremes curve at
that ``mu``.  A target outside it cannot be met; DOS then picks the subset closest to it (the
nearest point of the region's boundary, refined) and warns.

Search.  Starting points are the best window, the best extremes subset and the best point of a
grid over a path of two-band subsets that runs from the window with the target's mean to the
extremes subset with that mean (``sigma`` grows along it); each is refined by an integer pattern
search over ``(a, e, T)`` whose steps halve down to one rank / one token.  DOS is deterministic:
no randomness is involved, so the seed does not change its output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.law.region import AttainableRegion
from pplaw_jax.select.core import Selection, make_selection, take_all_if_short, target_distance, warn

# Grid of the (window -> extremes) path that seeds the pattern search: path positions x tokens.
_PATH_STEPS = 65
_SPLIT_STEPS = 257
# Pattern search: offsets per coordinate, initial step as a fraction of the range, iteration cap.
_OFFSETS = np.array([-2, -1, 0, 1, 2])
_INITIAL_DIVISOR = 256
_MAX_ITERATIONS = 4000
# Swap refinement: chunks sampled (evenly by rank) from each side per round, and rounds at most.
_SWAP_SAMPLE = 256
_SWAP_ROUNDS = 64


def default_weights(ppl: np.ndarray) -> tuple[float, float]:
    """``(w_mu, w_sigma) = (1/std^2, 1/std^2)`` of the landscape's chunk ppl (1 if all equal)."""
    std = float(np.std(ppl))
    w = 1.0 / std**2 if std > 0 else 1.0
    return w, w


@dataclass(frozen=True)
class Moments:
    """Vectorised result of evaluating two-band candidates."""

    n: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    tokens: np.ndarray
    feasible: np.ndarray


class RankedLandscape:
    """A landscape sorted by ppl with prefix sums, for one token budget.

    ``order`` maps ranks to landscape rows.  Ppl is centred on its median before the prefix sums
    of ppl and ppl^2 so that differences of large sums do not cancel.
    """

    def __init__(self, ppl: np.ndarray, n_tokens: np.ndarray, budget: int):
        if int(budget) < 1:
            raise PplawError(f"token budget must be positive, got {budget}")
        if len(ppl) == 0:
            raise PplawError("the landscape has no chunks")
        self.ppl = np.asarray(ppl, dtype=np.float64)
        self.n_tokens = np.asarray(n_tokens, dtype=np.int64)
        self.budget = int(budget)
        self.size = self.ppl.size
        self.order = np.argsort(self.ppl, kind="stable")
        sorted_ppl = self.ppl[self.order]
        self.centre = float(sorted_ppl[self.size // 2])
        x = sorted_ppl - self.centre
        self.cum_tokens = np.concatenate([[0], np.cumsum(self.n_tokens[self.order])])
        self.cum_x = np.concatenate([[0.0], np.cumsum(x)])
        self.cum_x2 = np.concatenate([[0.0], np.cumsum(x * x)])
        self.max_tokens = int(self.n_tokens.max())
        self.total_tokens = int(self.cum_tokens[-1])

    def _bands(self, a, e, t):
        """Rank bounds ``[a, a_end)`` and ``[b, e2)`` of candidates ``(a, e, t)`` (arrays)."""
        n, budget, cum = self.size, self.budget, self.cum_tokens
        a = np.clip(np.asarray(a, dtype=np.int64), 0, n)
        e = np.clip(np.asarray(e, dtype=np.int64), 0, n)
        t = np.clip(np.asarray(t, dtype=np.int64), 0, budget)
        a, e, t = np.broadcast_arrays(a, e, t)
        a_end = np.searchsorted(cum, cum[a] + t, side="right") - 1
        rest = budget - (cum[a_end] - cum[a])
        b = np.maximum(np.searchsorted(cum, cum[e] - rest, side="left"), a_end)
        e2 = np.maximum(e, b)
        return a, a_end, b, e2

    def evaluate(self, a, e, t) -> Moments:
        """Moments of candidates ``(a, e, t)``; infeasible ones break the budget rule or are empty."""
        a, a_end, b, e2 = self._bands(a, e, t)
        cum, cx, cx2 = self.cum_tokens, self.cum_x, self.cum_x2
        count = (a_end - a) + (e2 - b)
        tokens = (cum[a_end] - cum[a]) + (cum[e2] - cum[b])
        s1 = (cx[a_end] - cx[a]) + (cx[e2] - cx[b])
        s2 = (cx2[a_end] - cx2[a]) + (cx2[e2] - cx2[b])
        safe = np.maximum(count, 1)
        mean_x = s1 / safe
        var = np.maximum(s2 / safe - mean_x**2, 0.0)
        feasible = (count > 0) & (self.budget - tokens < self.max_tokens)
        return Moments(n=count, mu=mean_x + self.centre, sigma=np.sqrt(var), tokens=tokens, feasible=feasible)

    def rows(self, a: int, e: int, t: int) -> np.ndarray:
        """Landscape row indices of one candidate."""
        a, a_end, b, e2 = (int(v) for v in self._bands(a, e, t))
        return np.concatenate([self.order[a:a_end], self.order[b:e2]])

    @functools.cached_property
    def windows(self) -> tuple[np.ndarray, Moments]:
        """Every feasible window (one band of ``budget`` tokens upwards from each rank ``a``), as
        candidate parameters ``[K, 3]`` (written ``(a, a_end, budget)`` so that a pattern search
        can grow an upper band from it) and their moments."""
        a = np.arange(self.size)
        _, a_end, _, _ = self._bands(a, 0, self.budget)
        params = np.stack([a, a_end, np.full_like(a, self.budget)], axis=1)
        m = self.evaluate(*params.T)
        return params[m.feasible], _subset(m, m.feasible)

    @functools.cached_property
    def extremes(self) -> tuple[np.ndarray, Moments]:
        """Every feasible extremes subset (the lowest ``k`` chunks plus the highest chunks for the
        rest of the budget), as candidate parameters ``[K, 3]`` and their moments."""
        k = np.arange(int(np.searchsorted(self.cum_tokens, self.budget, side="right")))
        params = np.stack([np.zeros_like(k), np.full_like(k, self.size), self.cum_tokens[k]], axis=1)
        m = self.evaluate(*params.T)
        return params[m.feasible], _subset(m, m.feasible)

    @functools.cached_property
    def region(self) -> AttainableRegion:
        """The `AttainableRegion` of this landscape at this budget."""
        _, win = self.windows
        _, ext = self.extremes
        return AttainableRegion(win.mu, win.sigma, ext.mu, ext.sigma)


def _subset(m: Moments, mask: np.ndarray) -> Moments:
    return Moments(m.n[mask], m.mu[mask], m.sigma[mask], m.tokens[mask], m.feasible[mask])


def _objective(m: Moments, mu: float, sigma: float, weights) -> np.ndarray:
    j = weights[0] * (m.mu - mu) ** 2 + weights[1] * (m.sigma - sigma) ** 2
    return np.where(m.feasible, j, np.inf)


def _best(space: RankedLandscape, a, e, t, mu, sigma, weights) -> tuple[tuple[int, int, int], float]:
    """The candidate ``(a, e, t)`` (broadcast arrays) with the least objective, and that value."""
    a, e, t = np.broadcast_arrays(np.asarray(a), np.asarray(e), np.asarray(t))
    j = _objective(space.evaluate(a, e, t), mu, sigma, weights)
    i = int(np.argmin(j))
    return (int(a.flat[i]), int(e.flat[i]), int(t.flat[i])), float(j.flat[i])


def _path_grid(space: RankedLandscape, near_mu: float, mu: float, sigma: float, weights):
    """Best candidate on a grid over two-band subsets between the window with mean `near_mu` and
    the extremes subset with mean `near_mu` (path position x lower-band tokens)."""
    params, win = space.windows
    a_w, e_w, _ = (int(v) for v in params[np.argmin(np.abs(win.mu - near_mu))])
    lam = np.linspace(0.0, 1.0, _PATH_STEPS)[:, None]
    a = np.rint((1.0 - lam) * a_w).astype(np.int64)
    e = np.rint(e_w + lam * (space.size - e_w)).astype(np.int64)
    t = np.rint(np.linspace(0.0, space.budget, _SPLIT_STEPS)).astype(np.int64)[None, :]
    return _best(space, a, e, t, mu, sigma, weights)


def _pattern_search(space: RankedLandscape, start, value: float, mu: float, sigma: float, weights):
    """Integer pattern search over ``(a, e, t)``: try every combination of offsets in
    ``{-2..2} * step`` per coordinate, move to the best improvement, halve the steps otherwise."""
    x = np.array(start, dtype=np.int64)
    steps = np.array(
        [max(1, space.size // _INITIAL_DIVISOR)] * 2 + [max(1, space.budget // _INITIAL_DIVISOR)], dtype=np.int64
    )
    da, de, dt = np.meshgrid(_OFFSETS, _OFFSETS, _OFFSETS, indexing="ij")
    offsets = np.stack([da.ravel(), de.ravel(), dt.ravel()], axis=1)
    for _ in range(_MAX_ITERATIONS):
        cand = x + offsets * steps
        best, j = _best(space, cand[:, 0], cand[:, 1], cand[:, 2], mu, sigma, weights)
        if j < value:
            x, value = np.array(best, dtype=np.int64), j
        elif np.all(steps == 1):
            break
        else:
            steps = np.maximum(steps // 2, 1)
    return tuple(int(v) for v in x), value


def _swap_refine(space: RankedLandscape, rows: np.ndarray, mu: float, sigma: float, weights) -> np.ndarray:
    """Polish a subset with single moves: swap a selected chunk for an unselected one, add one,
    or drop one, keeping the budget rule.  Each round scores, in one vectorised step, every move
    among `_SWAP_SAMPLE` chunks per side (evenly spaced by rank, so all of them on small
    landscapes) and applies the best improving one; it stops when none improves."""
    x = space.ppl - space.centre
    t = space.n_tokens
    mask = np.zeros(space.size, dtype=bool)
    mask[rows] = True
    n, s1, s2, tok = rows.size, x[rows].sum(), (x[rows] ** 2).sum(), int(t[rows].sum())

    def score(n_new, s1_new, s2_new, tok_new):
        m = s1_new / np.maximum(n_new, 1)
        sd = np.sqrt(np.maximum(s2_new / np.maximum(n_new, 1) - m * m, 0.0))
        j = weights[0] * (m + space.centre - mu) ** 2 + weights[1] * (sd - sigma) ** 2
        ok = (n_new > 0) & (tok_new <= space.budget) & (space.budget - tok_new < space.max_tokens)
        return np.where(ok, j, np.inf)

    current = float(score(np.array(n), np.array(s1), np.array(s2), np.array(tok)))
    for _ in range(_SWAP_ROUNDS):
        ranked = mask[space.order]
        sel, uns = space.order[ranked], space.order[~ranked]
        sel = sel[np.unique(np.linspace(0, sel.size - 1, min(_SWAP_SAMPLE, sel.size)).astype(np.int64))]
        uns = uns[np.unique(np.linspace(0, uns.size - 1, min(_SWAP_SAMPLE, uns.size)).astype(np.int64))]
        xi, xj = x[sel][:, None], x[uns][None, :]
        ti, tj = t[sel][:, None], t[uns][None, :]
        moves = [
            score(n, s1 - xi + xj, s2 - xi**2 + xj**2, tok - ti + tj),  # swap i out, j in
            score(n + 1, s1 + xj, s2 + xj**2, tok + tj),  # add j
            score(n - 1, s1 - xi, s2 - xi**2, tok - ti),  # drop i
        ]
        best = [float(m.min()) for m in moves]
        kind = int(np.argmin(best))
        if not best[kind] < current:
            break
        current = best[kind]
        i, j = np.unravel_index(int(np.argmin(moves[kind])), moves[kind].shape)
        drop = [sel[i]] if kind in (0, 2) else []
        add = [uns[j]] if kind in (0, 1) else []
        for r in drop:
            mask[r], n, s1, s2, tok = False, n - 1, s1 - x[r], s2 - x[r] ** 2, tok - int(t[r])
        for r in add:
            mask[r], n, s1, s2, tok = True, n + 1, s1 + x[r], s2 + x[r] ** 2, tok + int(t[r])
    return np.flatnonzero(mask)


def dos_select(
    space: RankedLandscape, target_mu: float, target_sigma: float, weights: tuple[float, float] | None = None
) -> Selection:
    """The DOS subset of ``space`` for target ``(target_mu, target_sigma)``.

    When the target is not attainable at this budget, the closest attainable subset is chosen
    and a `SelectionWarning` says so.  ``info`` records the target, the closest attainable point,
    the weights, ``distance = sqrt(J)`` of the exact subset moments and ``attainable``.
    """
    if not (np.isfinite(target_mu) and np.isfinite(target_sigma)) or target_sigma < 0:
        raise PplawError(f"DOS target must be finite with sigma >= 0, got mu={target_mu}, sigma={target_sigma}")
    weights = default_weights(space.ppl) if weights is None else (float(weights[0]), float(weights[1]))
    messages: list[str] = []
    info = {
        "target": {"mu": float(target_mu), "sigma": float(target_sigma)},
        "weights": {"w_mu": weights[0], "w_sigma": weights[1]},
    }
    everything = take_all_if_short(space.ppl, space.n_tokens, space.budget, "dos", messages)
    if everything is not None:
        everything.info.update(
            info,
            attainable=False,
            attainable_target=None,
            distance=target_distance(everything, target_mu, target_sigma, weights),
        )
        return everything

    region = space.region
    attainable = bool(region.contains(target_mu, target_sigma))
    near_mu, near_sigma = region.closest(target_mu, target_sigma, weights)
    if not attainable:
        warn(
            messages,
            f"dos: target (mu={target_mu:.4g}, sigma={target_sigma:.4g}) is not "
            f"attainable with {space.budget} tokens of this landscape (mu in "
            f"[{region.mu_min:.4g}, {region.mu_max:.4g}], sigma in "
            f"{_fmt_bounds(region, target_mu)} at that mu); selecting the closest "
            f"attainable subset, near (mu={near_mu:.4g}, sigma={near_sigma:.4g})",
        )

    starts = []
    for family in (space.windows, space.extremes):
        a, e, t = family[0].T
        starts.append(_best(space, a, e, t, target_mu, target_sigma, weights))
    starts.append(_path_grid(space, near_mu, target_mu, target_sigma, weights))
    refined = [_pattern_search(space, x, j, target_mu, target_sigma, weights) for x, j in starts]
    best, _ = min(refined, key=lambda r: r[1])
    rows = _swap_refine(space, space.rows(*best), target_mu, target_sigma, weights)
    sel = make_selection(space.ppl, space.n_tokens, rows, space.budget, messages)
    sel.info.update(
        info,
        attainable=attainable,
        attainable_target={"mu": near_mu, "sigma": near_sigma},
        distance=target_distance(sel, target_mu, target_sigma, weights),
    )
    return sel


def _fmt_bounds(region: AttainableRegion, mu: float) -> str:
    lo, hi = region.sigma_bounds(np.clip(mu, region.mu_min, region.mu_max))
    return f"[{float(lo):.4g}, {float(hi):.4g}]"
