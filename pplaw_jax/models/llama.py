"""One Flax NNX causal decoder for the Llama family (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM).

Pre-norm blocks: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); rotary position embeddings in
the HF "rotate half" layout (checkpoint loaders convert GGUF's interleaved layout on load);
grouped-query attention through `jax.nn.dot_product_attention` (float32 logits and softmax even
under bfloat16 compute). Parameter paths follow HF names (`embed_tokens`, `layers[i].self_attn.q_proj`,
`mlp.gate_proj`, `norm`, `lm_head`) so that loaders and sharding rules can key on them. Linear
kernels are stored [in, out] (the transpose of PyTorch's `weight`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pplaw_jax.errors import PplawError
from pplaw_jax.models.config import ModelConfig

INIT_STD = 0.02  # HF `initializer_range` default, used by `init_model`


def rope_inv_freq(config: ModelConfig, seq_len: int) -> np.ndarray:
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


def rope_cos_sin(config: ModelConfig, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
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

    def __init__(self, dim: int, *, eps: float, dtype, param_dtype):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return normed.astype(self.dtype) * self.scale[...].astype(self.dtype)


def _linear(n_in: int, n_out: int, bias: bool, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.initializers.normal(INIT_STD),
        rngs=rngs,
    )


class Attention(nnx.Module):
    """Multi-head attention with grouped KV heads, optional qkv bias and per-head q/k RMSNorm."""

    def __init__(self, config: ModelConfig, *, dtype, param_dtype, attention_impl, rngs: nnx.Rngs):
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.q_proj = _linear(c.hidden_size, c.num_heads * c.head_dim, c.attention_bias, dtype, param_dtype, rngs)
        self.k_proj = _linear(c.hidden_size, c.num_kv_heads * c.head_dim, c.attention_bias, dtype, param_dtype, rngs)
        self.v_proj = _linear(c.hidden_size, c.num_kv_heads * c.head_dim, c.attention_bias, dtype, param_dtype, rngs)
        self.o_proj = _linear(c.num_heads * c.head_dim, c.hidden_size, c.attention_out_bias, dtype, param_dtype, rngs)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, eps=c.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
            self.k_norm = RMSNorm(c.head_dim, eps=c.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        else:
            self.q_norm = self.k_norm = None
        self.window = None if c.sliding_window is None else (c.sliding_window - 1, 0)
        self.attention_impl = attention_impl

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = jax.nn.dot_product_attention(
            q, k, v, is_causal=True, local_window_size=self.window, implementation=self.attention_impl
        )
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim))


class MLP(nnx.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h, f = config.hidden_size, config.intermediate_size
        self.gate_proj = _linear(h, f, False, dtype, param_dtype, rngs)
        self.up_proj = _linear(h, f, False, dtype, param_dtype, rngs)
        self.down_proj = _linear(f, h, False, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    def __init__(self, config: ModelConfig, *, dtype, param_dtype, attention_impl, rngs: nnx.Rngs):
        norm = dict(eps=config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, **norm)
        self.self_attn = Attention(
            config, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, rngs=rngs
        )
        self.post_attention_layernorm = RMSNorm(config.hidden_size, **norm)
        self.mlp = MLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


def _layer_forward(layer: DecoderLayer, x, cos, sin):
    return layer(x, cos, sin)


class LlamaForCausalLM(nnx.Module):
    """Causal LM: token ids int32[B, T] -> logits [B, T, vocab] in the compute dtype.

    Positions are 0..T-1 for every row (right padding is handled by the caller masking the loss).
    `dtype` is the compute dtype (float32 or bfloat16); parameters stay in `param_dtype`.
    `attention_impl` is passed to `jax.nn.dot_product_attention` (None = XLA, "cudnn" = fused
    flash attention on NVIDIA GPUs in bf16/fp16). `remat=True` recomputes each block's activations
    in the backward pass (less memory for training).
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        attention_impl: str | None = None,
        remat: bool = False,
    ):
        self.config = config
        self.dtype = dtype
        self.embed_tokens = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(INIT_STD),
            rngs=rngs,
        )
        self.layers = nnx.List(
            [
                DecoderLayer(config, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, rngs=rngs)
                for _ in range(config.num_layers)
            ]
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, False, dtype, param_dtype, rngs)
        self.remat = remat

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        t = input_ids.shape[1]
        cos, sin = (jnp.asarray(a) for a in rope_cos_sin(self.config, t))
        x = self.embed_tokens(input_ids)
        forward = nnx.remat(_layer_forward) if self.remat else _layer_forward
        for layer in self.layers:
            x = forward(layer, x, cos, sin)
        x = self.norm(x)
        if self.lm_head is None:
            return self.embed_tokens.attend(x)
        return self.lm_head(x)


def init_model(config: ModelConfig, *, seed: int = 0, dtype: str = "float32", **kwargs) -> LlamaForCausalLM:
    """A randomly initialised model (normal(0.02) weights, unit norms) for from-scratch training.

    `dtype` names the compute dtype ("float32" or "bfloat16"); parameters are float32.
    Extra keyword arguments (`attention_impl`, `remat`) go to `LlamaForCausalLM`.
    """
    return LlamaForCausalLM(config, dtype=jnp.dtype(dtype), param_dtype=jnp.float32, rngs=nnx.Rngs(params=seed), **kwargs)


def flat_params(model: LlamaForCausalLM) -> dict[str, jax.Array]:
    """Parameters keyed by dotted path ("layers.0.self_attn.q_proj.kernel")."""
    return {".".join(str(k) for k in path): var[...] for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def model_from_params(
    config: ModelConfig,
    params: dict[str, np.ndarray],
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    source: str = "checkpoint",
    decoder_cls: type = LlamaForCausalLM,
    **kwargs,
) -> LlamaForCausalLM:
    """Build a model whose parameters are `params` (dotted paths as in `flat_params`), cast to `param_dtype`.

    `decoder_cls` is the module class built from `config` (`gemma3.Gemma3ForCausalLM` for Gemma 3).

    The model is created abstractly first (no random init), so peak memory is one copy of the
    weights. Missing, unexpected or mis-shaped tensors raise PplawError naming `source`.
    """
    abstract = nnx.eval_shape(
        lambda: decoder_cls(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0), **kwargs)
    )
    graphdef, state = nnx.split(abstract)
    expected = {".".join(str(k) for k in path): var for path, var in nnx.to_flat_state(state)}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise PplawError(f"{source}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    pure: dict = {}
    for name, var in expected.items():
        array = params[name]
        if tuple(array.shape) != tuple(var.shape):
            raise PplawError(f"{source}: tensor {name} has shape {tuple(array.shape)}, config implies {tuple(var.shape)}")
        node = pure
        keys = [int(k) if k.isdigit() else k for k in name.split(".")]
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = jnp.asarray(array, dtype=param_dtype)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)
