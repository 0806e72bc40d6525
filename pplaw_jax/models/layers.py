"""The layers the decoders share (Llama family in `llama.py`, Gemma 3 in `gemma3.py`).

Every parameter names its dims with logical axes (`logical_axes`), kept as the NNX `out_sharding`
metadata; `pplaw_jax.distributed` maps them to mesh axes. Rotary embeddings are in the HF "rotate
half" layout; RMSNorm computes in float32; linear kernels are stored [in, out].
"""

from __future__ import annotations

import math
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pplaw_jax.errors import PplawError

INIT_STD = 0.02  # HF `initializer_range` default, used by `init_model`
LAYERS = "layers"  # logical name of the stacked axis of a scanned model
# `remat` values: what a layer keeps from its forward pass for the backward pass
REMAT_POLICIES = {
    "none": None,  # no rematerialisation: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,  # keep the layer input only, recompute the rest
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep matmul outputs, recompute elementwise ops
}


class RopeConfig(Protocol):
    """What the rotary tables read from a config: a `ModelConfig`, or one RoPE variant of Gemma 3's."""

    @property
    def head_dim(self) -> int: ...
    @property
    def rope_theta(self) -> float: ...
    @property
    def rope_scaling(self) -> dict | None: ...
    @property
    def max_position_embeddings(self) -> int: ...


class MLPConfig(Protocol):
    """What a gated feed-forward reads from a config (`ModelConfig`, `Gemma3Config`)."""

    @property
    def hidden_size(self) -> int: ...
    @property
    def intermediate_size(self) -> int: ...


def logical_axes(*names: str | None) -> dict:
    """Variable metadata naming a parameter's dims with logical axes (see the module docstring)."""
    return {"out_sharding": names, "eager_sharding": False}


def remat_policy_name(remat: str | bool) -> str:
    """The `REMAT_POLICIES` key for `remat` (True/False are aliases of "full"/"none")."""
    if remat is True or remat is False:
        return "full" if remat else "none"
    if remat not in REMAT_POLICIES:
        raise PplawError(f"remat {remat!r} is not one of {sorted(REMAT_POLICIES)} (or True/False)")
    return remat


def rope_inv_freq(config: RopeConfig, seq_len: int) -> np.ndarray:
    """Rotary inverse frequencies [head_dim // 2] (float64), with HF `rope_scaling` applied.

    `linear` divides positions by `factor` (same as dividing the frequencies); `dynamic` (NTK-aware)
    enlarges the base when `seq_len` exceeds the original context, as HF does for a fresh model;
    `llama3` rescales low frequencies and smooths the band between them (Llama 3.1).
    """
    dim = config.head_dim
    base = config.rope_theta
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "dynamic":
        original = scaling.get("original_max_position_embeddings", config.max_position_embeddings)
        if seq_len > original:
            factor = scaling["factor"]
            base = base * ((factor * seq_len / original) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if rope_type == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq


def rope_cos_sin(config: RopeConfig, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables [seq_len, head_dim] for positions 0..seq_len-1 (float32, HF layout)."""
    inv_freq = rope_inv_freq(config, seq_len).astype(np.float32)
    freqs = np.arange(seq_len, dtype=np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x [B, T, heads, head_dim] by position (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos = cos[None, :, None, :].astype(x.dtype)
    sin = sin[None, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


class RMSNorm(nnx.Module):
    """RMSNorm computed in float32, scaled by a learned `scale`, returned in the compute dtype."""

    def __init__(self, dim: int, *, eps: float, dtype, param_dtype, axis: str = "norm"):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), **logical_axes(axis))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return normed.astype(self.dtype) * self.scale[...].astype(self.dtype)


def linear(
    n_in: int,
    n_out: int,
    bias: bool,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    axes: tuple[str, str],
    bias_axis: str | None = None,
) -> nnx.Linear:
    """An [in, out] projection whose dims are named `axes`; its bias is named `bias_axis` (default: `out`'s)."""
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.initializers.normal(INIT_STD),
        rngs=rngs,
        kernel_metadata=logical_axes(*axes),
        bias_metadata=logical_axes(bias_axis or axes[1]),
    )


class MLP(nnx.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: MLPConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, f = config.hidden_size, config.intermediate_size
        self.gate_proj = linear(h, f, False, dtype, param_dtype, rngs, ("embed", "mlp"))
        self.up_proj = linear(h, f, False, dtype, param_dtype, rngs, ("embed", "mlp"))
        self.down_proj = linear(f, h, False, dtype, param_dtype, rngs, ("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))
