"""Token-level negative log-likelihood of padded chunks, the loss convention shared with scoring.

A sequence is `[start, w1, ..., wn, pad, ...]` of length `n + 1` (its `length`): position `t`
predicts token `t + 1`, so `w1..wn` are scored, the start token is context only and padding is
masked. `first` moves the first scored token further right (multiple-choice scoring scores only
the continuation after a prompt). The arithmetic (float32 log-softmax, gather, masked sum) is
`pplaw_jax.models.loss.next_token_nll`; this module only turns lengths into its target mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pplaw_jax.models.loss import next_token_nll


def token_nll(
    logits: jax.Array, input_ids: jax.Array, lengths: jax.Array, first: jax.Array | int = 1
) -> tuple[jax.Array, jax.Array]:
    """Per-sequence summed NLL (nats) and number of scored tokens.

    logits: [B, T, V] for input_ids [B, T]; lengths: [B] valid tokens per row (start token
    included); first: [B] or scalar, index of the first scored token (>= 1). Token j of a row is
    scored when `first <= j < length`. Returns (sum_nll float32[B], n_tokens int32[B]).
    """
    j = jnp.arange(1, input_ids.shape[1])[None, :]
    scored = (j >= jnp.reshape(first, (-1, 1))) & (j < lengths[:, None])
    return next_token_nll(logits, input_ids, scored)
