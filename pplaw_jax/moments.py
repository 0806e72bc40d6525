"""The two kinds of subset moments the law can be written in: ``ppl`` and ``logppl``.

A subset of landscape chunks is summarised by the mean ``mu`` and standard deviation ``sigma``
(unweighted over chunks, ddof=0) of a per-chunk value:

* ``ppl``: the chunk perplexity ``exp(sum_nll / n_tokens)``, the paper's definition;
* ``logppl``: the chunk mean NLL ``sum_nll / n_tokens = log(ppl)``.  Far less tail-dominated:
  on a heavy-tailed landscape the top 1% of chunks can hold most of the raw ppl variance, so
  ``sigma`` of raw ppl jumps from subset to subset while ``sigma`` of log ppl does not.

Both are computed from the ``ppl`` column every landscape and selection file carries, so a
selection, a training run and ``runs.csv`` can record both kinds and one law-fitting grid
serves fits in either.  ``runs.csv`` names them ``mu_ppl, sigma_ppl, mu_logppl, sigma_logppl``.
"""

from __future__ import annotations

import numpy as np

from pplaw_jax.errors import PplawError

MOMENTS = ("ppl", "logppl")


def check_moments(kind: str, what: str = "--moments") -> str:
    """`kind` if it is a known moment kind, else a PplawError naming `what`."""
    if kind not in MOMENTS:
        raise PplawError(f"{what} {kind!r}: expected one of {', '.join(MOMENTS)}")
    return kind


def chunk_values(ppl, kind: str) -> np.ndarray:
    """The per-chunk value whose mean and std are the moments of `kind` (float64)."""
    ppl = np.asarray(ppl, dtype=np.float64)
    return ppl if check_moments(kind) == "ppl" else np.log(ppl)


def columns(kind: str) -> tuple[str, str]:
    """The ``runs.csv`` columns of the moments of `kind`: ``("mu_ppl", "sigma_ppl")`` etc."""
    check_moments(kind)
    return f"mu_{kind}", f"sigma_{kind}"


def subset_moments(ppl) -> dict[str, float]:
    """Both kinds of moments of one subset, as the flat ``runs.csv`` columns."""
    out = {}
    for kind in MOMENTS:
        x = chunk_values(ppl, kind)
        mu, sigma = columns(kind)
        out[mu], out[sigma] = float(x.mean()), float(x.std())
    return out
