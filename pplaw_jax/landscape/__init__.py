"""Perplexity landscapes: score every chunk of a corpus with a frozen model (`pplaw score`).

The scoring machinery lives in `pplaw_jax.landscape.score` (it imports JAX); this package root only
exposes the landscape directory's contract (`landscape.directory`) and its statistics.
"""

from pplaw_jax.landscape.directory import PART_SCHEMA, Landscape, iter_done_parts, read_landscape, read_parts
from pplaw_jax.landscape.stats import QUANTILES, ppl_stats

__all__ = ["PART_SCHEMA", "QUANTILES", "Landscape", "iter_done_parts", "ppl_stats", "read_landscape", "read_parts"]
