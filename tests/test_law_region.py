"""The supported region: convex hull of the runs in scaled (log mu, log sigma), widened by a margin."""

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from pplaw_jax.errors import PplawError
from pplaw_jax.law.region import SupportRegion, hull_distance


def brute_distance(poly, pts, n=4000):
    """Distance to a closed polygon by dense sampling of its edges, 0 inside (matplotlib)."""
    closed = np.vstack([poly, poly[:1]])
    t = np.linspace(0, 1, n)[:, None]
    edge_pts = np.concatenate([a + t * (b - a) for a, b in zip(closed[:-1], closed[1:])])
    d = np.sqrt(((pts[:, None, :] - edge_pts[None]) ** 2).sum(-1)).min(axis=1)
    inside = MplPath(closed).contains_points(pts)
    return np.where(inside, 0.0, d)


def test_hull_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(40, 2))
    support = SupportRegion(np.exp(cloud[:, 0]), np.exp(cloud[:, 1]))
    hull = support.hull
    # every run is inside or on the hull, and the hull's vertices are runs
    assert np.all(hull_distance(hull, support.to_unit(np.exp(cloud[:, 0]), np.exp(cloud[:, 1]))) < 1e-12)
    pts = rng.uniform(-0.5, 1.5, size=(300, 2))
    np.testing.assert_allclose(hull_distance(hull, pts), brute_distance(hull, pts), atol=2e-3)


def test_the_empty_corner_of_the_box_is_not_supported():
    # runs along a rising diagonal (mu and sigma move together, like quantile windows): the box of
    # their ranges has two empty corners; the supported region does not
    mu = np.array([300.0, 390.0, 460.0, 620.0])
    sigma = np.array([20.0, 40.0, 80.0, 130.0])
    support = SupportRegion(mu, sigma, margin=0.1)
    assert support.contains(mu, sigma).all()
    assert not support.contains(620.0, 20.0)  # largest mu, smallest sigma: where cpu_tiny's target went
    assert not support.contains(300.0, 130.0)
    # the margin is a distance in coordinates scaled by the runs' log ranges: runs on the corners
    # of a square in log space have unit coordinates equal to their logs
    square = SupportRegion(np.exp([0.0, 1.0, 0.0, 1.0, 0.5]), np.exp([0.0, 0.0, 1.0, 1.0, 0.5]), margin=0.1)
    for (u, v), expected in (
        ((1.05, 0.5), True),
        ((1.15, 0.5), False),
        ((1.05, 1.05), True),
        ((1.08, 1.08), False),
        ((-0.09, 0.2), True),
        ((0.5, -0.11), False),
    ):
        assert bool(square.contains(np.exp(u), np.exp(v))) == expected, (u, v)


def test_degenerate_runs_give_a_segment_or_a_point():
    seg = SupportRegion([10.0, 20.0, 40.0], [2.0, 4.0, 8.0], margin=0.1)  # collinear in log-log
    assert len(seg.hull) == 2
    assert seg.contains(20.0, 4.0) and not seg.contains(10.0, 8.0)
    one = SupportRegion([10.0, 10.0], [2.0, 2.0], margin=0.1)
    assert len(one.hull) == 1 and one.contains(10.0, 2.0)
    with pytest.raises(PplawError, match="margin"):
        SupportRegion([10.0], [2.0], margin=-1)
    with pytest.raises(PplawError, match="finite"):
        SupportRegion([10.0, np.nan], [2.0, 3.0])


def test_bounds_contain_the_widened_region():
    rng = np.random.default_rng(3)
    mu, sigma = np.exp(rng.normal(3, 0.4, 25)), np.exp(rng.normal(1, 0.6, 25))
    support = SupportRegion(mu, sigma, margin=0.2)
    (mu_lo, mu_hi), (s_lo, s_hi) = support.bounds()
    m, s = np.meshgrid(np.geomspace(mu_lo / 2, mu_hi * 2, 200), np.geomspace(s_lo / 2, s_hi * 2, 200))
    ok = support.contains(m, s)
    assert ok.any()
    assert m[ok].min() >= mu_lo * (1 - 1e-9) and m[ok].max() <= mu_hi * (1 + 1e-9)
    assert s[ok].min() >= s_lo * (1 - 1e-9) and s[ok].max() <= s_hi * (1 + 1e-9)
