"""Perplexity landscapes: score every chunk of a corpus with a frozen model (`pplaw score`).

The scoring machinery lives in `pplaw_jax.landscape.score` (it imports JAX); this package root only
exposes the light-weight readers of a finished landscape directory.
"""

from pplaw_jax.landscape.parts import PART_SCHEMA, iter_done_parts, read_landscape
from pplaw_jax.landscape.stats import QUANTILES, ppl_stats

__all__ = ["PART_SCHEMA", "QUANTILES", "iter_done_parts", "ppl_stats", "read_landscape"]
