"""Training subsets of a perplexity landscape under a token budget.

Public API (pure functions on arrays; the CLI in `pplaw_jax.select.cli` adds the files):

* ``write_selection(out_dir, landscape, indices, summary)`` of a `landscape.directory.Landscape`
  (what `landscape.directory.read_landscape` returns: ``.table``, ``.ppl``, ``.n_tokens``).
* ``select_baseline(method, ppl, n_tokens, budget, seed) -> Selection`` for
  ``random | low | high | mid | full``.
* ``RankedLandscape(ppl, n_tokens, budget)`` (``.region`` is its `AttainableRegion`) and
  ``dos_select(space, target_mu, target_sigma, weights=None) -> Selection``.
* ``choose_target(region, law, point_params, draws, tokens, support) -> TargetChoice``: point and
  posterior-expected-loss targets among attainable ``(mu, sigma)`` that the fitted runs support,
  with the interior-optimum check (`NoInteriorOptimum`, one kind of `Refusal`).
* ``tilted_select(values, n_tokens, budget, mu, sigma, seed) -> Selection``: perplexity-tilted random
  sampling toward a target (the default selector).
* ``build_design(values, n_tokens, budgets, n, ...)``: the space-filling 2-D law-fitting design.
* ``select_windows(ppl, n_tokens, windows, budgets, seed)``: the law-fitting grid of subsets.

Every method keeps the budget rule (tokens <= budget, shortfall below one chunk; ``full`` takes
everything) and warns with `SelectionWarning` when it cannot do what was asked.
"""

from pplaw_jax.law.region import AttainableRegion
from pplaw_jax.select.baselines import BASELINES, select_baseline
from pplaw_jax.select.core import Selection, SelectionWarning, parse_budget
from pplaw_jax.select.design import DesignPoint, build_design
from pplaw_jax.select.dos import RankedLandscape, default_weights, dos_select
from pplaw_jax.select.io import write_selection
from pplaw_jax.select.target import NoInteriorOptimum, Refusal, Target, TargetChoice, choose_target
from pplaw_jax.select.tilted import tilted_select
from pplaw_jax.select.windows import WindowSubset, select_windows, subset_name

__all__ = [
    "AttainableRegion",
    "BASELINES",
    "DesignPoint",
    "NoInteriorOptimum",
    "RankedLandscape",
    "Refusal",
    "Selection",
    "SelectionWarning",
    "Target",
    "TargetChoice",
    "WindowSubset",
    "build_design",
    "choose_target",
    "default_weights",
    "dos_select",
    "parse_budget",
    "select_baseline",
    "select_windows",
    "subset_name",
    "tilted_select",
    "write_selection",
]
