"""Quantile-window subsets for the law-fitting grid."""

import numpy as np
import pytest

from pplaw_jax.errors import PplawError
from pplaw_jax.select import SelectionWarning, select_windows, subset_name
from pplaw_jax.select.synthetic import synthetic_landscape
from pplaw_jax.select.windows import format_budget, parse_window


@pytest.fixture(scope="module")
def land():
    t = synthetic_landscape(5000, seed=4)
    return t.column("ppl").to_numpy(), t.column("n_tokens").to_numpy()


def test_names_are_stable_and_safe():
    assert subset_name(0.2, 0.4, 1_000_000) == "w0.20-0.40_b1e6"
    assert subset_name(0.0, 1.0, 300_000) == "w0.00-1.00_b3e5"
    assert subset_name(0.125, 0.5, 250_000) == "w0.125-0.50_b25e4"
    assert format_budget(123456) == "123456" and format_budget(500) == "500"
    assert parse_window("0.2-0.4") == (0.2, 0.4) and parse_window("0-1") == (0.0, 1.0)
    for bad in ("0.4-0.2", "0.2", "a-b", "0.5-1.5"):
        with pytest.raises(PplawError, match="--windows"):
            parse_window(bad)


def test_windows_subsets(land):
    ppl, n_tokens = land
    total = int(n_tokens.sum())
    windows = [(0.0, 0.2), (0.4, 0.6), (0.9, 1.0)]
    budgets = [total // 100, total // 15, total // 8]  # the last exceeds a 10% window
    with pytest.warns(SelectionWarning, match="skipped"):
        subsets, skipped, messages = select_windows(ppl, n_tokens, windows, budgets, seed=5)
    assert [s["name"] for s in skipped] == [subset_name(0.9, 1.0, budgets[2])]
    assert skipped[0]["window_tokens"] < budgets[2] and len(messages) == 1
    assert len(subsets) == 8
    sorted_ppl = np.sort(ppl)
    by_name = {s.name: s for s in subsets}
    for s in subsets:
        sel = s.selection
        assert sel.tokens == n_tokens[sel.indices].sum() <= s.budget
        assert s.budget - sel.tokens < n_tokens.max()
        lo, hi = round(s.lo_q * ppl.size), round(s.hi_q * ppl.size)
        assert ppl[sel.indices].min() >= sorted_ppl[lo] and ppl[sel.indices].max() <= sorted_ppl[hi - 1]
        assert sel.mu == pytest.approx(ppl[sel.indices].mean())
    # subsets of one window are nested; higher windows have higher mean ppl
    for lo, hi in windows[:2]:
        small = by_name[subset_name(lo, hi, budgets[0])].selection.indices
        large = by_name[subset_name(lo, hi, budgets[1])].selection.indices
        assert np.isin(small, large).all()
    mus = [by_name[subset_name(lo, hi, budgets[1])].selection.mu for lo, hi in windows]
    assert mus == sorted(mus)
    # a narrow window at the top spreads more than one in the middle (log-normal tail)
    assert (
        by_name[subset_name(0.9, 1.0, budgets[0])].selection.sigma
        > by_name[subset_name(0.4, 0.6, budgets[0])].selection.sigma
    )


def test_windows_are_seeded_per_window(land):
    ppl, n_tokens = land
    budget = [int(n_tokens.sum()) // 50]
    a, _, _ = select_windows(ppl, n_tokens, [(0.2, 0.4), (0.5, 0.7)], budget, seed=1)
    b, _, _ = select_windows(ppl, n_tokens, [(0.5, 0.7)], budget, seed=1)
    c, _, _ = select_windows(ppl, n_tokens, [(0.5, 0.7)], budget, seed=2)
    assert np.array_equal(a[1].selection.indices, b[0].selection.indices)
    assert not np.array_equal(b[0].selection.indices, c[0].selection.indices)


def test_repeated_subsets_are_refused(land):
    ppl, n_tokens = land
    with pytest.raises(PplawError, match="repeat"):
        select_windows(ppl, n_tokens, [(0.2, 0.4), (0.2, 0.4)], [1000], seed=0)
