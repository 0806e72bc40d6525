"""Token-level negative log-likelihood of padded chunks, the loss convention shared with scoring.

A sequence is `[start, w1, ..., wn, pad, ...]` of length `n + 1` (its `length`): position `t`
predicts token `t + 1`, so `w1..wn` are scored, the start token is context only and padding is
masked. `first` moves the first scored token further right (multiple-choice scoring scores only
the continuation after a prompt). Log-probabilities are computed in float32 whatever the logits'
dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll(
    logits: jax.Array, input_ids: jax.Array, lengths: jax.Array, first: jax.Array | int = 1
) -> tuple[jax.Array, jax.Array]:
    """Per-sequence summed NLL (nats) and number of scored tokens.

    logits: [B, T, V] for input_ids [B, T]; lengths: [B] valid tokens per row (start token
    included); first: [B] or scalar, index of the first scored token (>= 1). Token j of a row is
    scored when `first <= j < length`. Returns (sum_nll float32[B], n_tokens int32[B]).
    """
    logits = logits[:, :-1].astype(jnp.float32)
    targets = input_ids[:, 1:]
    # logsumexp - logit[target] is the float32 log-softmax without materialising it.
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    j = jnp.arange(1, input_ids.shape[1])[None, :]
    mask = (j >= jnp.reshape(first, (-1, 1))) & (j < lengths[:, None])
    return jnp.sum(jnp.where(mask, nll, 0.0), axis=1), jnp.sum(mask, axis=1, dtype=jnp.int32)
