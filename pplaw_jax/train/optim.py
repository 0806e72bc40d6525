"""The optimiser and learning-rate schedule of a CPT run.

Schedule rule (the README quotes this): a run's length is defined by its own token budget, so runs
of different sizes are comparable: every run warms up, peaks and decays over *its own* tokens.

- steps per run: `--steps S` if given; else with `--tokens N`,
  `S = ceil(N / (batch_size * (seq_len - 1)))` (each sequence is a start token plus at most
  `seq_len - 1` scored tokens); else one epoch over the training sequences,
  `S = ceil(num_sequences / batch_size)`.
- warmup: `--warmup W` is a fraction of `S` when `W < 1` (rounded, at least 1 step when W > 0),
  else a number of steps `W`; during warmup step `s` (0-based) uses `lr * (s + 1) / W`.
- decay: from the end of warmup to step `S` the learning rate follows a half cosine (or a straight
  line for `linear`) down to `min_lr_ratio * lr`; `constant` stays at `lr`.

The optimiser is AdamW (decoupled weight decay applied to matrices only: norm scales and biases,
the 1-D parameters, are not decayed) after clipping the gradient to a global norm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
import optax
from flax import nnx
from numpy.typing import ArrayLike

from pplaw_jax.distributed import logical_axes
from pplaw_jax.errors import PplawError
from pplaw_jax.models.layers import LAYERS

SCHEDULES = ("cosine", "linear", "constant")


def total_steps(
    *, batch_size: int, seq_len: int, num_sequences: int, steps: int | None = None, tokens: int | None = None
) -> int:
    """Number of optimiser steps of a run, by the rule in the module docstring."""
    if steps is not None and tokens is not None:
        raise PplawError("give either --steps or --tokens, not both")
    if steps is not None:
        if steps < 1:
            raise PplawError(f"--steps must be at least 1, got {steps}")
        return int(steps)
    if tokens is not None:
        if tokens < 1:
            raise PplawError(f"--tokens must be at least 1, got {tokens}")
        return math.ceil(tokens / (batch_size * (seq_len - 1)))
    return max(1, math.ceil(num_sequences / batch_size))


def warmup_steps(warmup: float, num_steps: int) -> int:
    """Warmup length in steps: a fraction of the run when `warmup < 1`, else a step count."""
    if warmup < 0:
        raise PplawError(f"--warmup must be non-negative, got {warmup}")
    if warmup < 1:
        n = round(warmup * num_steps)
        n = max(n, 1) if warmup > 0 else 0
    else:
        if warmup != int(warmup):
            raise PplawError(f"--warmup >= 1 is a number of steps and must be an integer, got {warmup}")
        n = int(warmup)
    if n > num_steps:
        raise PplawError(f"--warmup of {n} steps exceeds the run's {num_steps} steps")
    return n


def make_schedule(
    lr: float, num_steps: int, num_warmup: int, *, kind: str = "cosine", min_lr_ratio: float = 0.1
) -> Callable[[ArrayLike], np.ndarray]:
    """Learning rate as a function of the (0-based) step, on the host in float64: linear warmup,
    then `kind` decay to `min_lr_ratio*lr` (optax's cosine and linear schedules' formulas). Takes a
    step or an array of steps; the train step receives each step's rate as an argument."""
    if kind not in SCHEDULES:
        raise PplawError(f"--schedule must be one of {SCHEDULES}, got {kind!r}")
    if not 0 <= min_lr_ratio <= 1:
        raise PplawError(f"--min-lr-ratio must be in [0, 1], got {min_lr_ratio}")
    decay_steps = max(num_steps - num_warmup, 1)

    def schedule(step: ArrayLike) -> np.ndarray:
        step = np.asarray(step, dtype=np.float64)
        done = np.clip(step - num_warmup, 0, decay_steps) / decay_steps  # share of the decay behind
        if kind == "cosine":
            decayed = lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + np.cos(np.pi * done)))
        elif kind == "linear":
            decayed = lr * (1 - (1 - min_lr_ratio) * done)
        else:
            decayed = np.full_like(step, lr)
        if num_warmup == 0:
            return decayed
        # lr * (s + 1) / W: the first step already learns, step W - 1 is at the peak
        return np.where(step < num_warmup, lr * np.minimum(step + 1, num_warmup) / num_warmup, decayed)

    return schedule


def _decay_mask(params):
    """Weight decay on matrices (embeddings, projections) only, not on norm scales or biases. A
    scanned model's stacked `layers` axis does not count: its [layers, width] norm scales are vectors."""

    def is_matrix(x) -> bool:
        axes = logical_axes(x) or ()
        return x.ndim - axes.count(LAYERS) >= 2

    return jax.tree.map(
        lambda x: x.replace(is_matrix(x)) if isinstance(x, nnx.Variable) else is_matrix(x),
        params,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def make_optimizer(
    schedule: optax.Schedule,
    *,
    weight_decay: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """Global-norm clipping followed by AdamW with `schedule` (no clipping when `clip_norm` is None/0)."""
    adamw = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_decay_mask)
    if not clip_norm:
        return adamw
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


@dataclass(frozen=True)
class AdamW:
    """`make_optimizer`'s settings but the learning rate: hashable, so that a process keeps one
    compiled train step per model and settings (`train.loop.Trainer`), whatever each run's
    schedule. The learning rate is an argument of every step."""

    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float | None = 1.0

    def transform(self, learning_rate) -> optax.GradientTransformation:
        """The optimizer at this step's `learning_rate` (a scalar, traced inside the step); its
        state is the same whatever the rate (`make_optimizer` with a schedule)."""
        return make_optimizer(
            lambda _: learning_rate,
            weight_decay=self.weight_decay,
            b1=self.b1,
            b2=self.b2,
            eps=self.eps,
            clip_norm=self.clip_norm,
        )
