"""The selectors: how a `(mu, sigma)` target becomes a subset of a landscape at a token budget.

A registry like `law.forms.LAWS`: the design, the proposals, `pplaw select` and the simulator all
draw through `select_target`, so a new selector is one function and one entry in `SELECTORS`.

* ``tilted`` (default): perplexity-tilted random sampling, seeded (`select.tilted`);
* ``bands``: two bands of perplexity-sorted chunks refined by swaps, deterministic (`select.dos`,
  the paper's DOS); its ranked landscape per budget is cached in `spaces`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.select.core import Selection
from pplaw_jax.select.dos import RankedLandscape, dos_select
from pplaw_jax.select.tilted import tilted_select


def _tilted(values, n_tokens, budget, mu, sigma, seed, spaces) -> Selection:
    return tilted_select(values, n_tokens, budget, mu, sigma, seed=seed)


def _bands(values, n_tokens, budget, mu, sigma, seed, spaces) -> Selection:
    if budget not in spaces:
        spaces[budget] = RankedLandscape(values, n_tokens, budget)
    return dos_select(spaces[budget], mu, sigma)


SELECTORS: dict[str, Callable[..., Selection]] = {"tilted": _tilted, "bands": _bands}


def select_target(
    selector: str,
    values: np.ndarray,
    n_tokens: np.ndarray,
    budget: int,
    mu: float,
    sigma: float,
    seed: int = 0,
    spaces: dict | None = None,
) -> Selection:
    """The subset `selector` draws for target `(mu, sigma)` of per-chunk `values` at `budget`
    tokens; `spaces` caches the ranked landscapes by budget (pass one dict across calls)."""
    if selector not in SELECTORS:
        raise PplawError(f"--selector {selector!r}: expected one of {', '.join(SELECTORS)}")
    return SELECTORS[selector](values, n_tokens, budget, mu, sigma, seed, {} if spaces is None else spaces)
