"""One Flax NNX causal decoder for the Llama family (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM).

Pre-norm blocks: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); rotary position embeddings in
the HF "rotate half" layout (checkpoint loaders convert GGUF's interleaved layout on load);
grouped-query attention through `jax.nn.dot_product_attention` (float32 logits and softmax even
under bfloat16 compute). Parameter paths follow HF names (`embed_tokens`, `layers[i].self_attn.q_proj`,
`mlp.gate_proj`, `norm`, `lm_head`) so that loaders can key on them. Linear kernels are stored
[in, out] (the transpose of PyTorch's `weight`).

Every parameter names its dims with logical axes (`embed`, `mlp`, `heads`, `kv_heads`, `head_dim`,
`vocab`, `norm`, `embed_bias`, `layers`), kept as the NNX `out_sharding` metadata so that
`nnx.vmap`/`nnx.scan` insert the `layers` axis of a scanned model; `pplaw_jax.distributed` maps
them to mesh axes. Eager sharding is off for these variables: placement is the loader's
(`pplaw_jax.models.weights`) or the caller's job, so a model can be built without a mesh.

Two layouts of the decoder layers: unrolled (`layers` is an `nnx.List`, paths `layers.0.mlp...`,
the default) and scanned (`scan_layers=True`: one `DecoderLayer` whose parameters are stacked on a
leading `layers` axis, paths `layers.mlp...`, run with `nnx.scan`, so compile time does not grow
with depth). `flat_params` names parameters the unrolled way in both, which is what checkpoints use.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from pplaw_jax.distributed import state_shardings
from pplaw_jax.errors import PplawError
from pplaw_jax.models.config import ModelConfig

INIT_STD = 0.02  # HF `initializer_range` default, used by `init_model`
LAYERS = "layers"  # logical name of the stacked axis of a scanned model
# `remat` values: what a layer keeps from its forward pass for the backward pass
REMAT_POLICIES = {
    "none": None,  # no rematerialisation: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,  # keep the layer input only, recompute the rest
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep matmul outputs, recompute elementwise ops
}


def _axes(*names: str | None) -> dict:
    """Variable metadata naming a parameter's dims with logical axes (see the module docstring)."""
    return {"out_sharding": names, "eager_sharding": False}


def remat_policy_name(remat: str | bool) -> str:
    """The `REMAT_POLICIES` key for `remat` (True/False are aliases of "full"/"none")."""
    if remat is True or remat is False:
        return "full" if remat else "none"
    if remat not in REMAT_POLICIES:
        raise PplawError(f"remat {remat!r} is not one of {sorted(REMAT_POLICIES)} (or True/False)")
    return remat


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

    def __init__(self, dim: int, *, eps: float, dtype, param_dtype, axis: str = "norm"):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), **_axes(axis))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return normed.astype(self.dtype) * self.scale[...].astype(self.dtype)


def _linear(
    n_in: int, n_out: int, bias: bool, dtype, param_dtype, rngs: nnx.Rngs, axes: tuple[str, str], bias_axis: str | None = None
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
        kernel_metadata=_axes(*axes),
        bias_metadata=_axes(bias_axis or axes[1]),
    )


class Attention(nnx.Module):
    """Multi-head attention with grouped KV heads, optional qkv bias and per-head q/k RMSNorm."""

    def __init__(self, config: ModelConfig, *, dtype, param_dtype, attention_impl, rngs: nnx.Rngs):
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.q_proj = _linear(c.hidden_size, q, c.attention_bias, dtype, param_dtype, rngs, ("embed", "heads"))
        self.k_proj = _linear(c.hidden_size, kv, c.attention_bias, dtype, param_dtype, rngs, ("embed", "kv_heads"))
        self.v_proj = _linear(c.hidden_size, kv, c.attention_bias, dtype, param_dtype, rngs, ("embed", "kv_heads"))
        self.o_proj = _linear(
            q, c.hidden_size, c.attention_out_bias, dtype, param_dtype, rngs, ("heads", "embed"), bias_axis="embed_bias"
        )
        if c.qk_norm:
            norm = dict(eps=c.rms_norm_eps, dtype=dtype, param_dtype=param_dtype, axis="head_dim")
            self.q_norm = RMSNorm(c.head_dim, **norm)
            self.k_norm = RMSNorm(c.head_dim, **norm)
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
        self.gate_proj = _linear(h, f, False, dtype, param_dtype, rngs, ("embed", "mlp"))
        self.up_proj = _linear(h, f, False, dtype, param_dtype, rngs, ("embed", "mlp"))
        self.down_proj = _linear(f, h, False, dtype, param_dtype, rngs, ("mlp", "embed"))

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
    flash attention on NVIDIA GPUs in bf16/fp16). `remat` is what each decoder layer keeps for
    the backward pass (`REMAT_POLICIES`: "none", "full" recomputes everything from the layer input,
    "dots_saveable" keeps matmul outputs; True/False mean "full"/"none"). `scan_layers` stacks the
    layers on a leading `layers` axis and runs them with `nnx.scan` (one traced layer: compile
    time independent of depth); the unrolled default keeps one module per layer.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        attention_impl: str | None = None,
        remat: str | bool = "none",
        scan_layers: bool = False,
    ):
        self.config = config
        self.dtype = dtype
        self.remat = remat_policy_name(remat)
        self.scan_layers = bool(scan_layers)
        self.embed_tokens = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(INIT_STD),
            rngs=rngs,
            embedding_metadata=_axes("vocab", "embed"),
        )

        def layer(rngs):
            return DecoderLayer(config, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, rngs=rngs)

        if self.scan_layers:
            stacked = nnx.vmap(
                layer, in_axes=0, out_axes=0, axis_size=config.num_layers, transform_metadata={nnx.PARTITION_NAME: LAYERS}
            )
            self.layers = nnx.split_rngs(splits=config.num_layers)(stacked)(rngs)
        else:
            self.layers = nnx.List([layer(rngs) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, False, dtype, param_dtype, rngs, ("embed", "vocab"))

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        t = input_ids.shape[1]
        cos, sin = (jnp.asarray(a) for a in rope_cos_sin(self.config, t))
        x = self.embed_tokens(input_ids)
        policy = REMAT_POLICIES[self.remat]
        forward = _layer_forward
        if self.remat != "none":
            # a scan body already keeps XLA from merging the recomputation back into the forward
            # pass, so the optimisation barriers of prevent_cse are needed only when unrolled
            forward = nnx.remat(_layer_forward, policy=policy, prevent_cse=not self.scan_layers)
        if self.scan_layers:
            scan = nnx.scan(
                forward,
                in_axes=(0, nnx.Carry, None, None),
                out_axes=nnx.Carry,
                transform_metadata={nnx.PARTITION_NAME: LAYERS},
            )
            x = scan(self.layers, x, cos, sin)
        else:
            for layer in self.layers:
                x = forward(layer, x, cos, sin)
        x = self.norm(x)
        if self.lm_head is None:
            return self.embed_tokens.attend(x)
        return self.lm_head(x)


def init_model(
    config: ModelConfig, *, seed: int = 0, dtype: str = "float32", mesh: Mesh | None = None, **kwargs
) -> LlamaForCausalLM:
    """A randomly initialised model (normal(0.02) weights, unit norms) for from-scratch training.

    `dtype` names the compute dtype ("float32" or "bfloat16"); parameters are float32. With
    `mesh`, the initialisation runs under `jax.jit` with the parameters' shardings as outputs, so
    each device only ever holds its share (the same draws as without a mesh, equal to float32
    rounding: XLA fuses the jitted initialisers differently from the eager ones). Extra
    keyword arguments (`attention_impl`, `remat`, `scan_layers`) go to `LlamaForCausalLM`; a
    scanned model draws each layer from its own split of the key, so its values differ from the
    unrolled model's of the same seed.
    """

    def build() -> LlamaForCausalLM:
        return LlamaForCausalLM(config, dtype=jnp.dtype(dtype), param_dtype=jnp.float32, rngs=nnx.Rngs(params=seed), **kwargs)

    if mesh is None:
        return build()
    graphdef, abstract = nnx.split(nnx.eval_shape(build))
    state = jax.jit(lambda: nnx.state(build()), out_shardings=state_shardings(abstract, mesh))()
    return nnx.merge(graphdef, state)


def is_stacked(path: tuple, scanned: bool) -> bool:
    """Whether the parameter at state `path` is stacked on a leading `layers` axis."""
    return scanned and path[0] == "layers"


def checkpoint_names(path: tuple, scanned: bool, num_layers: int) -> list[str]:
    """The dotted checkpoint name(s) of the parameter at state `path`: one name, or for a stacked
    parameter of a scanned model one per layer ("layers.{i}.mlp.up_proj.kernel")."""
    keys = [str(k) for k in path]
    if is_stacked(path, scanned):
        return [".".join(["layers", str(i), *keys[1:]]) for i in range(num_layers)]
    return [".".join(keys)]


def flat_params(model: LlamaForCausalLM) -> dict[str, jax.Array]:
    """Parameters keyed by checkpoint name ("layers.0.self_attn.q_proj.kernel") in either layout:
    a scanned model's stacked [layers, ...] arrays are split into one entry per layer."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var[...]
        names = checkpoint_names(path, model.scan_layers, model.config.num_layers)
        if is_stacked(path, model.scan_layers):
            out.update({name: value[i] for i, name in enumerate(names)})
        else:
            out[names[0]] = value
    return out
