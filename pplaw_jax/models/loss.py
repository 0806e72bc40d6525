"""Next-token negative log-likelihood of padded sequences: the one loss of scoring, training and eval.

A row is ``[start, w1, ..., wn, pad, ...]``; ``logits[:, t]`` predicts ``input_ids[:, t + 1]``, so
the targets are ``input_ids[:, 1:]`` and the start token is context only. Which targets count is
a boolean mask over them (`next_token_nll`); every stage describes its rows by their lengths
(start token included) and a first scored position (`token_nll`: 1 for scoring and training, the
continuation's start for multiple-choice scoring), so padding and prompts are left out the same
way everywhere. Log-probabilities are computed in float32 whatever the logits' dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_nll(logits: jax.Array, input_ids: jax.Array, scored: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-row summed next-token NLL (nats) and number of scored targets.

    logits: [B, T, V] for input_ids [B, T]; scored: bool [B, T - 1], ``scored[b, t]`` says whether
    target ``input_ids[b, t + 1]`` (predicted by ``logits[b, t]``) counts.
    Returns (sum_nll float32[B], n_tokens int32[B]).
    """
    logits = logits[:, :-1].astype(jnp.float32)
    targets = input_ids[:, 1:]
    # logsumexp - logit[target] is the float32 log-softmax without materialising it.
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(scored, nll, 0.0), axis=1), jnp.sum(scored, axis=1, dtype=jnp.int32)


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
