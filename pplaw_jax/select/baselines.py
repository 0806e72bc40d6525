"""Baseline subsets with the same token budget as DOS: random, low, high, mid, band, oracle and full.

Each ranked baseline orders the chunks and takes the longest prefix that fits the budget
(`fill_prefix`), so "low" really is the lowest-perplexity chunks (its largest selected ppl is at
most the smallest unselected one), "high" the highest, and "mid" a band around the median
(chunks closest to the median ppl first).  Ties keep landscape order (stable sorts), so the
ranked baselines are deterministic; ``random`` is a seeded permutation.  ``full`` takes every
chunk and ignores the budget: it is the "train on everything" reference of the paper.

``band`` is the peers' fixed perplexity filter (data-juicer's perplexity filter, cc_net's
head/middle/tail buckets): keep the chunks between the 10% and 90% quantiles of the landscape's
chunk statistic (the middle 80%), then sample the budget from them at random (seeded); if the band
holds fewer tokens than the budget, the rest comes from outside it, at random, with a warning.
``oracle`` is random among the chunks of documents known to be clean (`allowed`, e.g. the planted
labels of a contaminated corpus, which no selection method sees): the positive control's ceiling.
"""

from __future__ import annotations

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.select.core import Selection, fill_prefix, make_selection, take_all_if_short, warn

BASELINES = ("random", "low", "high", "mid", "band", "oracle", "full")
BAND = (0.1, 0.9)  # `band` keeps the chunks between these quantiles of the chunk statistic


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
    if method == "band":
        lo, hi = np.quantile(ppl, BAND)
        perm = np.random.default_rng(seed).permutation(ppl.size)
        inside = (ppl[perm] >= lo) & (ppl[perm] <= hi)
        return np.concatenate([perm[inside], perm[~inside]])
    raise PplawError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")


def select_baseline(
    method: str,
    ppl: np.ndarray,
    n_tokens: np.ndarray,
    budget: int | None,
    seed: int = 0,
    allowed: np.ndarray | None = None,
) -> Selection:
    """The `method` baseline's subset of a landscape (``ppl``, ``n_tokens`` per chunk).

    `budget` may be None only for ``full``.  Landscapes smaller than the budget give every chunk
    and a `SelectionWarning`.  ``oracle`` needs `allowed` (a boolean per chunk: its document is
    clean) and refuses a budget the allowed chunks cannot fill.
    """
    messages: list[str] = []
    if method == "oracle":
        if allowed is None:
            raise PplawError("method 'oracle' needs the clean documents (--labels: a contaminated corpus)")
        allowed = np.asarray(allowed, dtype=bool)
        if budget is None or int(n_tokens[allowed].sum()) < budget:
            raise PplawError(
                f"method 'oracle': the clean chunks hold {int(n_tokens[allowed].sum())} tokens, "
                f"fewer than the budget {budget}"
            )
        clean = np.flatnonzero(allowed)
        order = clean[np.random.default_rng(seed).permutation(clean.size)]
        return make_selection(ppl, n_tokens, fill_prefix(order, n_tokens, budget), budget, messages)
    if method == "full":
        return make_selection(ppl, n_tokens, np.arange(ppl.size), budget, messages)
    if budget is None:
        raise PplawError(f"method {method!r} needs a token budget (--tokens)")
    everything = take_all_if_short(ppl, n_tokens, budget, method, messages)
    if everything is not None:
        return everything
    order = baseline_order(method, ppl, seed)
    indices = fill_prefix(order, n_tokens, budget)
    if method == "band":
        lo, hi = np.quantile(ppl, BAND)
        outside = int(np.sum((ppl[indices] < lo) | (ppl[indices] > hi)))
        if outside:
            warn(
                messages,
                f"band: the middle {100 * (BAND[1] - BAND[0]):.0f}% of the chunks holds fewer tokens "
                f"than the budget {budget}; {outside} chunks come from outside it",
            )
    return make_selection(ppl, n_tokens, indices, budget, messages)
