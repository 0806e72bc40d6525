"""Baseline subsets with the same token budget as DOS: random, low, high, mid and full.

Each ranked baseline orders the chunks and takes the longest prefix that fits the budget
(`fill_prefix`), so "low" really is the lowest-perplexity chunks (its largest selected ppl is at
most the smallest unselected one), "high" the highest, and "mid" a band around the median
(chunks closest to the median ppl first).  Ties keep landscape order (stable sorts), so the
ranked baselines are deterministic; ``random`` is a seeded permutation.  ``full`` takes every
chunk and ignores the budget: it is the "train on everything" reference of the paper.
"""

from __future__ import annotations

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.select.core import Selection, fill_prefix, make_selection, take_all_if_short

BASELINES = ("random", "low", "high", "mid", "full")


def baseline_order(method: str, ppl: np.ndarray, seed: int = 0) -> np.ndarray:
    """Landscape row indices in the order `method` prefers them (not defined for ``full``)."""
    if method == "random":
        return np.random.default_rng(seed).permutation(ppl.size)
    if method == "low":
        return np.argsort(ppl, kind="stable")
    if method == "high":
        return np.argsort(-ppl, kind="stable")
    if method == "mid":
        return np.argsort(np.abs(ppl - np.median(ppl)), kind="stable")
    raise PplawError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")


def select_baseline(method: str, ppl: np.ndarray, n_tokens: np.ndarray, budget: int | None,
                    seed: int = 0) -> Selection:
    """The `method` baseline's subset of a landscape (``ppl``, ``n_tokens`` per chunk).

    `budget` may be None only for ``full``.  Landscapes smaller than the budget give every chunk
    and a `SelectionWarning`.
    """
    messages: list[str] = []
    if method == "full":
        return make_selection(ppl, n_tokens, np.arange(ppl.size), budget, messages)
    if budget is None:
        raise PplawError(f"method {method!r} needs a token budget (--tokens)")
    everything = take_all_if_short(ppl, n_tokens, budget, method, messages)
    if everything is not None:
        return everything
    order = baseline_order(method, ppl, seed)
    return make_selection(ppl, n_tokens, fill_prefix(order, n_tokens, budget), budget, messages)
