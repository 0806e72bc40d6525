"""Where a target may go: one home for the regions of ``(mu, sigma)`` (pure numerics).

* `SupportRegion`: where the runs give support, their convex hull in the fit's coordinates widened
  by the trust margin (below);
* `AttainableRegion`: what a landscape can supply at a budget (`select.dos.RankedLandscape.region`
  builds it from the window and extremes curves: ``mu`` between the lowest and the highest window,
  ``sigma`` between the two curves at that ``mu``).

`law.optimum.FeasibleGrid` searches the intersection of the two (the support alone at fit time)
for the law's argmin, telling the runs' edge from the corpus's.

Support.  A law fitted on runs says little about ``(mu, sigma)`` where no run has been.  The per-axis box of
the runs is not that region: in the committed cpu_tiny study the box's empty corner (largest mu,
smallest sigma) held the selected target, where no run had mu > 470 with sigma < 130, and the
selection lost to random.  The supported region is instead:

* coordinates ``u = (log mu - lo_mu) / span_mu``, ``v = (log sigma - lo_sigma) / span_sigma``,
  where ``lo`` and ``span`` are the minimum and the range of the runs' log moments (the law's
  features are built from ``log mu`` and ``log sigma``; scaling by the runs' ranges makes the
  margin a fraction of the explored extent on each axis);
* the convex hull of the runs' distinct ``(u, v)`` points (a segment or a point when the runs are
  collinear or identical);
* widened by ``margin``: a point is supported when its Euclidean distance to the hull in
  ``(u, v)`` is at most ``margin`` (default 0.1, i.e. 10% of the runs' extent).
"""

from __future__ import annotations

import numpy as np

from pplaw_jax.config import FitConfig
from pplaw_jax.errors import PplawError

DEFAULT_MARGIN = FitConfig.trust_margin  # `pplaw fit --trust-margin`'s default


class SupportRegion:
    """The supported region of a set of runs (see the module docstring)."""

    def __init__(self, mu, sigma, margin: float = DEFAULT_MARGIN):
        mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
        if mu.size == 0 or np.any(~np.isfinite(mu) | ~np.isfinite(sigma) | (mu <= 0) | (sigma <= 0)):
            raise PplawError("support region: need at least one run with finite mu, sigma > 0")
        if not (np.isfinite(margin) and margin >= 0):
            raise PplawError(f"trust margin {margin}: must be a number >= 0")
        self.margin = float(margin)
        pts = np.column_stack([np.log(mu), np.log(sigma)])
        self.lo = pts.min(axis=0)
        span = np.ptp(pts, axis=0)
        self.span = np.where(span > 0, span, 1.0)
        self.hull = _hull(np.unique(self.to_unit(mu, sigma), axis=0))  # [V, 2], closed order

    def to_unit(self, mu, sigma) -> np.ndarray:
        """``[..., 2]`` unit coordinates ``(u, v)`` of ``(mu, sigma)``."""
        pts = np.stack([np.log(np.asarray(mu, dtype=float)), np.log(np.asarray(sigma, dtype=float))], axis=-1)
        return (pts - self.lo) / self.span

    def from_unit(self, uv) -> tuple[np.ndarray, np.ndarray]:
        pts = np.exp(np.asarray(uv, dtype=float) * self.span + self.lo)
        return pts[..., 0], pts[..., 1]

    def distance(self, mu, sigma) -> np.ndarray:
        """Distance in unit coordinates from each ``(mu, sigma)`` to the hull (0 inside)."""
        return hull_distance(self.hull, self.to_unit(mu, sigma))

    def contains(self, mu, sigma) -> np.ndarray:
        """Whether each ``(mu, sigma)`` is supported (within `margin` of the hull)."""
        return self.distance(mu, sigma) <= self.margin + 1e-12

    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(mu_lo, mu_hi), (sigma_lo, sigma_hi)`` of the widened region's bounding box."""
        lo = self.hull.min(axis=0) - self.margin
        hi = self.hull.max(axis=0) + self.margin
        (mu_lo, s_lo), (mu_hi, s_hi) = np.column_stack(self.from_unit(np.stack([lo, hi]))).tolist()
        return (mu_lo, mu_hi), (s_lo, s_hi)

    def to_json(self) -> dict:
        mu, sigma = self.from_unit(self.hull)
        return {
            "coordinates": "u = (log mu - lo[0]) / span[0], v = (log sigma - lo[1]) / span[1]",
            "lo": self.lo.tolist(),
            "span": self.span.tolist(),
            "margin": self.margin,
            "hull": [[float(m), float(s)] for m, s in zip(mu, sigma)],
        }


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices in counter-clockwise order (Andrew's monotone chain); collinear or
    single points give the segment's two ends or the point itself."""
    pts = sorted(map(tuple, points))
    if len(pts) <= 2:
        return np.array(pts, dtype=float)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    upper: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 1e-15:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 1e-15:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1], dtype=float)


def hull_distance(hull: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Distance from each point ``[..., 2]`` to the convex polygon `hull` (CCW vertices; 0 inside)."""
    pts = np.asarray(pts, dtype=float)
    flat = pts.reshape(-1, 2)
    if len(hull) == 1:
        return np.linalg.norm(flat - hull[0], axis=1).reshape(pts.shape[:-1])
    a, b = hull, np.roll(hull, -1, axis=0)
    if len(hull) == 2:
        a, b = hull[:1], hull[1:]
    ab = b - a  # [E, 2]
    ap = flat[:, None, :] - a[None, :, :]  # [P, E, 2]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-300), 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    d = np.linalg.norm(flat[:, None, :] - closest, axis=-1).min(axis=1)
    if len(hull) >= 3:
        inside = np.all(ab[None, :, 0] * ap[..., 1] - ab[None, :, 1] * ap[..., 0] >= -1e-12, axis=1)
        d = np.where(inside, 0.0, d)
    return d.reshape(pts.shape[:-1])


class AttainableRegion:
    """The ``(mu, sigma)`` a subset of about ``budget`` tokens can have (see the module docstring).

    Built from the window curve (least spread per mean) and the extremes curve (most spread);
    both run from the lowest window to the highest window.
    """

    def __init__(self, window_mu, window_sigma, extremes_mu, extremes_sigma):
        if len(window_mu) == 0 or len(extremes_mu) == 0:
            raise PplawError("no subset satisfies the budget rule (budget below every chunk?)")
        wi = np.argsort(window_mu, kind="stable")
        xi = np.argsort(extremes_mu, kind="stable")
        self.window_mu, self.window_sigma = np.asarray(window_mu)[wi], np.asarray(window_sigma)[wi]
        self.extremes_mu = np.asarray(extremes_mu)[xi]
        self.extremes_sigma = np.asarray(extremes_sigma)[xi]
        self.mu_min = float(min(self.window_mu[0], self.extremes_mu[0]))
        self.mu_max = float(max(self.window_mu[-1], self.extremes_mu[-1]))

    def sigma_bounds(self, mu) -> tuple[np.ndarray, np.ndarray]:
        """Least and most attainable ``sigma`` at each ``mu`` (interpolated along the curves)."""
        lo = np.interp(mu, self.window_mu, self.window_sigma)
        hi = np.interp(mu, self.extremes_mu, self.extremes_sigma)
        return np.minimum(lo, hi), np.maximum(lo, hi)

    def contains(self, mu, sigma, rtol: float = 1e-9) -> np.ndarray:
        """Whether each ``(mu, sigma)`` is attainable (up to a relative tolerance `rtol`)."""
        mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
        lo, hi = self.sigma_bounds(mu)
        scale = max(abs(self.mu_max), 1.0)
        tol = rtol * scale
        return (mu >= self.mu_min - tol) & (mu <= self.mu_max + tol) & (sigma >= lo - tol) & (sigma <= hi + tol)

    def closest(self, mu: float, sigma: float, weights: tuple[float, float]) -> tuple[float, float]:
        """The attainable point nearest to ``(mu, sigma)`` under the weighted distance: the point
        itself when attainable, else the nearest point of the two boundary curves."""
        if bool(self.contains(mu, sigma)):
            return float(mu), float(sigma)
        bmu = np.concatenate([self.window_mu, self.extremes_mu])
        bsig = np.concatenate([self.window_sigma, self.extremes_sigma])
        i = int(np.argmin(weights[0] * (bmu - mu) ** 2 + weights[1] * (bsig - sigma) ** 2))
        return float(bmu[i]), float(bsig[i])

    def grid(self, n_mu: int, n_sigma: int) -> tuple[np.ndarray, np.ndarray]:
        """``n_mu * n_sigma`` attainable points: ``mu`` evenly spaced over its range and, at each,
        ``sigma`` evenly spaced between its bounds (flattened, mu-major)."""
        mu = np.linspace(self.mu_min, self.mu_max, n_mu)
        return self.points(np.repeat(mu, n_sigma), np.tile(np.linspace(0.0, 1.0, n_sigma), n_mu))

    def points(self, mu, frac) -> tuple[np.ndarray, np.ndarray]:
        """Attainable points from ``mu`` (clipped to its range) and a fraction ``frac`` in [0, 1]
        of the way from the least to the most attainable ``sigma``."""
        mu = np.clip(np.asarray(mu, dtype=float), self.mu_min, self.mu_max)
        lo, hi = self.sigma_bounds(mu)
        return mu, lo + np.clip(frac, 0.0, 1.0) * (hi - lo)

    def describe(self) -> dict:
        """JSON-friendly summary: the mu range and the sigma range at a few mu."""
        mu = np.linspace(self.mu_min, self.mu_max, 5)
        lo, hi = self.sigma_bounds(mu)
        return {
            "mu_min": self.mu_min,
            "mu_max": self.mu_max,
            "sigma_bounds": [
                {"mu": float(m), "sigma_min": float(a), "sigma_max": float(b)} for m, a, b in zip(mu, lo, hi)
            ],
        }
