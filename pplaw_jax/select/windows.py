"""Perplexity quantile windows at several token budgets: the subsets of the law-fitting grid.

A window ``(lo_q, hi_q)`` holds the chunks whose ppl rank (stable sort, ties in landscape order)
lies in ``[round(lo_q*N), round(hi_q*N))``: quantiles over chunks, unweighted, like ``mu`` and
``sigma``.  Within a window the chunks are put in a seeded random order (the seed is derived
from ``seed`` and the window bounds, so it does not depend on which other windows are listed)
and each budget takes the longest prefix that fits: the budget rule holds, and the subsets of one
window are nested (the 1e5-token subset is part of the 3e5-token one).  A window holding fewer
tokens than a budget cannot supply that subset: it is skipped with a `SelectionWarning` and
listed under ``skipped`` in ``windows.json`` (not in ``manifest.csv``, which lists exactly the
subsets written).

The default family varies centre and width so that ``(mu, sigma)`` spread widely: five
disjoint fifths, three halves, two 80% windows and the whole landscape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.select.core import Selection, fill_prefix, make_selection, warn


@dataclass
class WindowSubset:
    """One subset of the grid: its directory name, window, budget and selection."""

    name: str
    lo_q: float
    hi_q: float
    budget: int
    selection: Selection


def parse_window(text: str) -> tuple[float, float]:
    """``"0.2-0.4"`` -> ``(0.2, 0.4)``, with ``0 <= lo < hi <= 1``."""
    parts = text.split("-")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise PplawError(f"--windows: {text!r} is not LO-HI with quantiles, e.g. 0.2-0.4") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise PplawError(f"--windows: {text!r} needs 0 <= LO < HI <= 1")
    return lo, hi


def format_quantile(q: float) -> str:
    """Two decimals when exact (``0.20``), else up to six significant digits (``0.125``)."""
    two = f"{q:.2f}"
    return two if abs(float(two) - q) < 1e-12 else f"{q:.6g}"


def format_budget(budget: int) -> str:
    """Compact, lossless and filesystem-safe: ``1e6``, ``3e5``, ``25e4``; ``123456`` as is."""
    mantissa, exponent = int(budget), 0
    while mantissa and mantissa % 10 == 0:
        mantissa, exponent = mantissa // 10, exponent + 1
    return f"{mantissa}e{exponent}" if exponent >= 3 else str(int(budget))


def subset_name(lo_q: float, hi_q: float, budget: int) -> str:
    """Stable directory name of a subset, e.g. ``w0.20-0.40_b1e6``."""
    return f"w{format_quantile(lo_q)}-{format_quantile(hi_q)}_b{format_budget(budget)}"


def window_rows(order: np.ndarray, lo_q: float, hi_q: float) -> np.ndarray:
    """Landscape rows of a window, given `order` = rows sorted by ppl."""
    n = order.size
    return order[int(round(lo_q * n)) : int(round(hi_q * n))]


def select_windows(
    ppl: np.ndarray, n_tokens: np.ndarray, windows, budgets, seed: int = 0
) -> tuple[list[WindowSubset], list[dict], list[str]]:
    """Every ``window x budget`` subset that the landscape can supply.

    Returns the subsets (window-major, in the given order), the skipped ``(window, budget)``
    pairs as dicts (``name, lo_q, hi_q, budget, window_tokens``) and the warnings issued.
    """
    names = [subset_name(lo, hi, b) for lo, hi in windows for b in budgets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PplawError(f"windows x budgets repeat subset(s) {', '.join(duplicates)}")
    order = np.argsort(ppl, kind="stable")
    subsets: list[WindowSubset] = []
    skipped: list[dict] = []
    messages: list[str] = []
    for lo, hi in windows:
        rows = window_rows(order, lo, hi)
        entropy = [int(seed), int(round(lo * 1e9)), int(round(hi * 1e9))]
        shuffled = rows[np.random.default_rng(entropy).permutation(rows.size)]
        window_tokens = int(n_tokens[rows].sum())
        for budget in budgets:
            name = subset_name(lo, hi, budget)
            if window_tokens < budget:
                skipped.append(
                    {"name": name, "lo_q": lo, "hi_q": hi, "budget": int(budget), "window_tokens": window_tokens}
                )
                warn(
                    messages,
                    f"window {format_quantile(lo)}-{format_quantile(hi)} holds "
                    f"{window_tokens} tokens, fewer than the budget {budget}; "
                    f"subset {name} skipped",
                )
                continue
            chosen = fill_prefix(shuffled, n_tokens, int(budget))
            sel = make_selection(ppl, n_tokens, chosen, int(budget), [])
            subsets.append(WindowSubset(name, float(lo), float(hi), int(budget), sel))
    return subsets, skipped, messages
