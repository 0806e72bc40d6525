"""What every selection method shares: the `Selection` result, budget parsing, prefix filling and
subset moments.

Budget rule (all methods except ``full``): the selected chunks' scored tokens (sum of the
landscape's ``n_tokens``) never exceed the budget and fall short of it by less than one chunk,
i.e. by less than the landscape's largest ``n_tokens``.  When the whole landscape holds fewer
tokens than the budget, a method takes every chunk and warns.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from pplaw_jax.errors import PplawError


class SelectionWarning(UserWarning):
    """A selection ran but could not do exactly what was asked (budget or target out of reach)."""


@dataclass
class Selection:
    """A chosen subset of a landscape.

    ``indices`` are landscape row indices in ascending order (so outputs keep the landscape's row
    order); ``tokens``, ``mu`` and ``sigma`` are exact over those rows (chunk-level ppl mean and
    standard deviation, ddof=0, as in the law); ``warnings`` are the messages also emitted as
    `SelectionWarning`; ``info`` holds method-specific fields for the summary.
    """

    indices: np.ndarray
    tokens: int
    mu: float
    sigma: float
    warnings: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def n_chunks(self) -> int:
        return int(self.indices.size)


def warn(messages: list[str], message: str) -> None:
    """Record `message` for the summary and emit it as a `SelectionWarning`."""
    messages.append(message)
    warnings.warn(message, SelectionWarning, stacklevel=3)


def parse_budget(value, what: str = "--tokens") -> int:
    """A positive whole number of tokens from ``1000000``, ``1e6`` or ``1_000_000``."""
    try:
        budget = float(value)
    except (TypeError, ValueError):
        raise PplawError(f"{what}: {value!r} is not a number of tokens") from None
    if not math.isfinite(budget) or budget <= 0:
        raise PplawError(f"{what}: the token budget must be positive, got {value!r}")
    if budget != int(budget):
        raise PplawError(f"{what}: the token budget must be a whole number of tokens, got {value!r}")
    return int(budget)


def make_selection(
    ppl: np.ndarray,
    n_tokens: np.ndarray,
    indices: np.ndarray,
    budget: int | None,
    messages: list[str],
    info: dict | None = None,
) -> Selection:
    """Wrap `indices` (any order) as a `Selection` with exact moments; an empty subset is an error
    (the budget is below every chunk it could start with)."""
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    if indices.size == 0:
        raise PplawError(
            f"token budget {budget} selects no chunk: it is smaller than the chunks "
            f"(largest n_tokens {int(n_tokens.max())}); raise --tokens"
        )
    sub = ppl[indices]
    return Selection(
        indices=indices,
        tokens=int(n_tokens[indices].sum()),
        mu=float(sub.mean()),
        sigma=float(sub.std()),
        warnings=messages,
        info=dict(info or {}),
    )


def fill_prefix(order: np.ndarray, n_tokens: np.ndarray, budget: int) -> np.ndarray:
    """The longest prefix of `order` whose tokens fit in `budget`.

    The chunk after the prefix did not fit, so the shortfall is below that chunk's tokens and
    hence below the largest chunk: the budget rule holds for every order.
    """
    cum = np.cumsum(n_tokens[order])
    return order[: int(np.searchsorted(cum, budget, side="right"))]


def take_all_if_short(
    ppl: np.ndarray, n_tokens: np.ndarray, budget: int, method: str, messages: list[str]
) -> Selection | None:
    """Every chunk, with a warning, when the landscape has no more tokens than `budget`; else None."""
    total = int(n_tokens.sum())
    if total > budget:
        return None
    if total < budget:
        warn(
            messages,
            f"{method}: the landscape holds only {total} tokens, fewer than the budget "
            f"{budget}; every chunk is selected",
        )
    return make_selection(ppl, n_tokens, np.arange(ppl.size), budget, messages)


def target_distance(sel: Selection, mu: float, sigma: float, weights) -> float:
    """DOS's distance of a subset's moments to a target: sqrt(w_mu (mu - mu*)^2 + w_sigma (sigma - sigma*)^2)."""
    return float(np.sqrt(weights[0] * (sel.mu - mu) ** 2 + weights[1] * (sel.sigma - sigma) ** 2))
