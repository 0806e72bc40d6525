"""Gemma 3 text decoder (`gemma3_text`) in Flax NNX, beside the Llama-family one in `llama.py`.

Gemma 3 differs from the Llama blocks in ways that do not fit `ModelConfig`'s switches, so it has
its own config and modules; it shares `layers.py`'s RoPE tables, rotate-half RoPE, linear layers
(same parameter names, [in, out] kernels and logical axis names, so `distributed.LOGICAL_AXIS_RULES`
places it and the HF name mapping covers it unchanged), remat policies and attention through
`jax.nn.dot_product_attention`. Checkpoints load through `weights.place_model` like the Llama
family's (straight into their shards with `mesh=`): `hf.py` reads its safetensors (the multimodal
key prefixes removed by `gemma3_text_name`), `gguf.py` its GGUF tensors (names from
`GGUF_LAYER_NAMES`, config from `gguf_config`). Following HF `Gemma3ForCausalLM`
(transformers 5), the reference the tests compare with:

- layers alternate sliding-window (local) and full (global) attention (`layer_types`); each kind
  has its own RoPE base: `rope_local_base_freq` for sliding layers, `rope_theta` (+ `rope_scaling`)
  for full ones;
- per-head RMSNorm of q and k, and four norms per block:
  `x + post_attention_norm(attn(input_norm(x)))`, then `x + post_ffw_norm(mlp(pre_ffw_norm(x)))`;
- RMSNorm weights are zero-centred and applied as `(1 + w)`, in float32 before the cast back
  (Gemma3RMSNorm); parameters store `w` as HF does (GGUF files store `1 + w`; the loader subtracts 1);
- GeGLU feed-forward with tanh-approximate GELU (`gelu_pytorch_tanh`);
- embeddings multiplied by `sqrt(hidden_size)` rounded to the compute dtype (as HF rounds it to
  the model dtype);
- attention scale `query_pre_attn_scalar ** -0.5` instead of `head_dim ** -0.5`;
- optional final logit soft-capping `cap * tanh(logits / cap)`;
- tied embeddings by default.

`attn_logit_softcapping` (a Gemma 2 feature) is refused: transformers' Gemma 3 and llama.cpp's
gemma3 both ignore it, so a checkpoint that sets it has no reference behaviour to match. There is no
scanned layout (`scan_layers=True` is refused): layers differ in attention window and RoPE base, so
one traced layer cannot run them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from pplaw_jax.errors import PplawError
from pplaw_jax.models.config import ModelConfig, first_id
from pplaw_jax.models.family import LLAMA_CPP_BLOCK_NAMES, Family
from pplaw_jax.models.layers import (
    INIT_STD,
    MLP,
    REMAT_POLICIES,
    apply_rope,
    linear,
    logical_axes,
    remat_policy_name,
    rope_cos_sin,
)

GEMMA3_MODEL_TYPES = ("gemma3", "gemma3_text")  # config.json model_type values read by Gemma3Config.from_hf
SLIDING, FULL = "sliding_attention", "full_attention"
ACTIVATION = "gelu_pytorch_tanh"
_ROPE_TYPES = ("default", "linear")
# llama.cpp's gemma3 hyper-parameters that GGUF metadata does not carry (llama-model.cpp, LLM_ARCH_GEMMA3)
GGUF_SLIDING_PATTERN = 6  # every 6th layer is global
GGUF_LOCAL_ROPE_THETA = 10000.0
GGUF_27B_LAYERS = 62  # the 27B model scales attention by (hidden/heads)^-0.5, the others by head_dim^-0.5


@dataclass(frozen=True)
class RopeSpec:
    """What `llama.rope_cos_sin` reads from a config: one RoPE variant (Gemma has one per layer type)."""

    head_dim: int
    rope_theta: float
    rope_scaling: dict | None
    max_position_embeddings: int

    __hash__ = ModelConfig.__hash__


@dataclass(frozen=True)
class Gemma3Config:
    """Gemma 3 text-decoder hyper-parameters (HF `Gemma3TextConfig` names in brackets where they differ).

    `layer_types[i]` is "sliding_attention" (each query sees the last `sliding_window` keys, itself
    included) or "full_attention" (causal over the whole sequence). `rope_theta`/`rope_scaling`
    apply to full layers, `rope_local_theta` (`rope_local_base_freq`) to sliding ones.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int  # num_hidden_layers
    num_heads: int  # num_attention_heads
    num_kv_heads: int  # num_key_value_heads
    head_dim: int
    layer_types: tuple[str, ...]
    sliding_window: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: dict | None = None  # {"rope_type": "linear", "factor": ...}, full layers only
    rope_local_theta: float = 10_000.0  # rope_local_base_freq
    query_pre_attn_scalar: int = 256
    final_logit_softcapping: float | None = None
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    model_type: str = "gemma3_text"

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise PplawError(
                f"num_attention_heads={self.num_heads} is not a multiple of num_key_value_heads={self.num_kv_heads}"
            )
        if len(self.layer_types) != self.num_layers or set(self.layer_types) - {SLIDING, FULL}:
            raise PplawError(
                f"layer_types must list {self.num_layers} entries of {SLIDING!r} / {FULL!r}, "
                f"got {list(self.layer_types)}"
            )
        if self.sliding_window < 1:
            raise PplawError(f"sliding_window must be >= 1, got {self.sliding_window}")
        if self.rope_scaling is not None and self.rope_scaling.get("rope_type") not in _ROPE_TYPES:
            raise PplawError(
                f"Gemma 3 rope_scaling type {self.rope_scaling.get('rope_type')!r} is not supported "
                f"(supported: {_ROPE_TYPES})"
            )

    __hash__ = ModelConfig.__hash__  # hashes the rope_scaling dict by its items
    # The PaLM MFU numerator reads only sizes and num_params(), so the Llama formula applies as it is.
    flops_per_token = ModelConfig.flops_per_token

    def rope(self, layer_type: str) -> RopeSpec:
        """The RoPE variant of one layer type, in the form `llama.rope_cos_sin` takes."""
        if layer_type == SLIDING:
            return RopeSpec(self.head_dim, self.rope_local_theta, None, self.max_position_embeddings)
        return RopeSpec(self.head_dim, self.rope_theta, self.rope_scaling, self.max_position_embeddings)

    def num_params(self) -> int:
        """Number of parameters (a tied embedding counted once)."""
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h + 2 * self.head_dim  # projections + q/k norms
        if self.attention_bias:
            attn += q + 2 * kv + h
        layer = attn + 3 * h * self.intermediate_size + 4 * h
        embed = self.vocab_size * h
        return self.num_layers * layer + h + embed * (1 if self.tie_word_embeddings else 2)

    # ------------------------------------------------------------------ HF config.json
    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> Gemma3Config:
        """Build from an HF `config.json` dict of model_type `gemma3_text`, or `gemma3` (multimodal:
        its `text_config` is used; the vision tower is not loaded).

        Fields the file leaves out take transformers' `Gemma3TextConfig` defaults (the Hub's
        multimodal configs list only what differs from them); both the transformers-5
        `rope_parameters` layout and the older `rope_theta`/`rope_local_base_freq`/`rope_scaling`
        and `sliding_window_pattern` are read, by that class.
        """
        import transformers

        c = dict(config)
        if c.get("model_type") == "gemma3":
            text = c.get("text_config")
            if not isinstance(text, Mapping):
                raise PplawError("config.json: model_type 'gemma3' needs a text_config object")
            tie = c.get("tie_word_embeddings")
            c = {**text, "model_type": "gemma3_text"}
            if tie is not None:  # the multimodal model ties its LM head by the top-level flag
                c["tie_word_embeddings"] = tie
        for key, ok in (
            ("use_bidirectional_attention", lambda v: not v),
            ("attn_logit_softcapping", lambda v: v is None),
            ("hidden_activation", lambda v: v in (None, ACTIVATION)),
        ):
            if not ok(c.get(key)):
                raise PplawError(f"config.json: {key}={c[key]!r} is not supported for Gemma 3")
        try:
            hf = transformers.Gemma3TextConfig(**{k: v for k, v in c.items() if k != "model_type"})
        except Exception as e:  # huggingface_hub's StrictDataclassError (not a ValueError), TypeError, ValueError
            raise PplawError(f"config.json: invalid Gemma 3 config: {' '.join(str(e).split())}") from e

        rope = hf.rope_parameters
        assert rope is not None and hf.layer_types is not None  # Gemma3TextConfig's __post_init__ fills them
        local, full = dict(rope[SLIDING]), dict(rope[FULL])
        if local.get("rope_type", "default") != "default":
            raise PplawError(f"config.json: rope type {local['rope_type']!r} for sliding layers is not supported")
        full_type = full.pop("rope_type", "default")
        full_theta = float(full.pop("rope_theta"))
        if full_type not in _ROPE_TYPES:
            raise PplawError(
                f"config.json: rope type {full_type!r} is not supported for Gemma 3 (supported: {_ROPE_TYPES})"
            )
        if hf.sliding_window is None:
            raise PplawError("config.json: sliding_window is null; Gemma 3's sliding layers need a window size")
        return cls(
            vocab_size=int(hf.vocab_size),
            hidden_size=int(hf.hidden_size),
            intermediate_size=int(hf.intermediate_size),
            num_layers=int(hf.num_hidden_layers),
            num_heads=int(hf.num_attention_heads),
            num_kv_heads=int(hf.num_key_value_heads),
            head_dim=int(hf.head_dim),
            layer_types=tuple(hf.layer_types),
            sliding_window=int(hf.sliding_window),
            rms_norm_eps=float(hf.rms_norm_eps),
            rope_theta=full_theta,
            rope_scaling=None if full_type == "default" else {**full, "rope_type": full_type},
            rope_local_theta=float(local["rope_theta"]),
            query_pre_attn_scalar=int(hf.query_pre_attn_scalar),
            final_logit_softcapping=None if hf.final_logit_softcapping is None else float(hf.final_logit_softcapping),
            max_position_embeddings=int(hf.max_position_embeddings),
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            attention_bias=bool(hf.attention_bias),
            bos_token_id=first_id(hf.bos_token_id),
            eos_token_id=first_id(hf.eos_token_id),
        )

    def to_hf(self) -> dict:
        """An HF `config.json` dict (transformers-5 layout) that `Gemma3ForCausalLM` loads."""
        full = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            full = {**self.rope_scaling, "rope_theta": self.rope_theta}
        return {
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_activation": ACTIVATION,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {SLIDING: {"rope_type": "default", "rope_theta": self.rope_local_theta}, FULL: full},
            "layer_types": list(self.layer_types),
            "sliding_window": self.sliding_window,
            "query_pre_attn_scalar": self.query_pre_attn_scalar,
            "final_logit_softcapping": self.final_logit_softcapping,
            "attn_logit_softcapping": None,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "use_bidirectional_attention": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }


# ---------------------------------------------------------------------- modules
class GemmaRMSNorm(nnx.Module):
    """RMSNorm with a zero-centred weight applied as `(1 + w)`, all in float32, then cast (HF
    Gemma3RMSNorm; Llama's RMSNorm casts before scaling, which differs in bfloat16). `axis` is the
    logical name of its dim (`norm` over the model width, `head_dim` for the per-head q/k norms)."""

    def __init__(self, dim: int, *, eps: float, dtype, param_dtype, axis: str = "norm"):
        self.scale = nnx.Param(jnp.zeros((dim,), param_dtype), **logical_axes(axis))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * (1.0 + self.scale[...].astype(jnp.float32))).astype(self.dtype)


class GeGLU(MLP):
    """Gated feed-forward with tanh-approximate GELU: down(gelu_tanh(gate(x)) * up(x))."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.gelu(self.gate_proj(x), approximate=True) * self.up_proj(x))


class Gemma3Attention(nnx.Module):
    """Grouped-query attention with per-head q/k RMSNorm, scale `query_pre_attn_scalar ** -0.5`,
    and, on sliding layers, a window of `sliding_window` keys (the query's own included)."""

    def __init__(self, config: Gemma3Config, sliding: bool, *, dtype, param_dtype, attention_impl, rngs: nnx.Rngs):
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        q, kv, bias = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.attention_bias
        self.q_proj = linear(c.hidden_size, q, bias, dtype, param_dtype, rngs, ("embed", "heads"))
        self.k_proj = linear(c.hidden_size, kv, bias, dtype, param_dtype, rngs, ("embed", "kv_heads"))
        self.v_proj = linear(c.hidden_size, kv, bias, dtype, param_dtype, rngs, ("embed", "kv_heads"))
        self.o_proj = linear(
            q, c.hidden_size, bias, dtype, param_dtype, rngs, ("heads", "embed"), bias_axis="embed_bias"
        )
        norm = dict(eps=c.rms_norm_eps, dtype=dtype, param_dtype=param_dtype, axis="head_dim")
        self.q_norm = GemmaRMSNorm(c.head_dim, **norm)
        self.k_norm = GemmaRMSNorm(c.head_dim, **norm)
        self.window = (c.sliding_window - 1, 0) if sliding else None
        self.scale = float(c.query_pre_attn_scalar) ** -0.5
        self.attention_impl = attention_impl

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim))
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = jax.nn.dot_product_attention(
            q, k, v, scale=self.scale, is_causal=True, local_window_size=self.window, implementation=self.attention_impl
        )
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim))


class Gemma3DecoderLayer(nnx.Module):
    """x + post_attention_norm(attn(input_norm(x))), then x + post_ffw_norm(GeGLU(pre_ffw_norm(x)))."""

    def __init__(self, config: Gemma3Config, layer_type: str, *, dtype, param_dtype, attention_impl, rngs: nnx.Rngs):
        norm = dict(eps=config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        h = config.hidden_size
        self.layer_type = layer_type
        self.input_layernorm = GemmaRMSNorm(h, **norm)
        self.self_attn = Gemma3Attention(
            config,
            layer_type == SLIDING,
            dtype=dtype,
            param_dtype=param_dtype,
            attention_impl=attention_impl,
            rngs=rngs,
        )
        self.post_attention_layernorm = GemmaRMSNorm(h, **norm)
        self.pre_feedforward_layernorm = GemmaRMSNorm(h, **norm)
        self.mlp = GeGLU(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_feedforward_layernorm = GemmaRMSNorm(h, **norm)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


def _layer_forward(layer: Gemma3DecoderLayer, x, cos, sin):
    return layer(x, cos, sin)


class Gemma3ForCausalLM(nnx.Module):
    """Gemma 3 causal LM: token ids int32[B, T] -> logits [B, T, vocab] in the compute dtype.

    Same calling convention and constructor keywords as `LlamaForCausalLM` (positions 0..T-1 for
    every row; `dtype` compute, `param_dtype` storage; `attention_impl` for
    `jax.nn.dot_product_attention`; `remat` one of `llama.REMAT_POLICIES`, True/False meaning
    "full"/"none"). `scan_layers` is accepted so that callers can pass it for any model, but only
    False: Gemma's layers differ in window and RoPE base, so there is no stacked layout
    (PplawError). Parameters carry the Llama decoder's logical axis names.
    """

    def __init__(
        self,
        config: Gemma3Config,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        attention_impl: str | None = None,
        remat: str | bool = "none",
        scan_layers: bool = False,
    ):
        if scan_layers:
            raise PplawError(
                "scan_layers=True is not supported for Gemma 3 (its layers differ in attention window and "
                "RoPE base, so they cannot be stacked under one scanned layer); use scan_layers=False"
            )
        self.config = config
        self.dtype = dtype
        self.remat = remat_policy_name(remat)
        self.scan_layers = False  # read by `flat_params` and `weights.place_model`
        self.embed_tokens = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(INIT_STD),
            rngs=rngs,
            embedding_metadata=logical_axes("vocab", "embed"),
        )
        self.layers = nnx.List(
            [
                Gemma3DecoderLayer(
                    config, layer_type, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, rngs=rngs
                )
                for layer_type in config.layer_types
            ]
        )
        self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = linear(
                config.hidden_size, config.vocab_size, False, dtype, param_dtype, rngs, ("embed", "vocab")
            )

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        t = input_ids.shape[1]
        tables = {
            kind: tuple(jnp.asarray(a) for a in rope_cos_sin(self.config.rope(kind), t))
            for kind in sorted(set(self.config.layer_types))
        }
        # HF multiplies by sqrt(hidden) rounded to the model dtype (55.5, not 55.43, in bfloat16 for 3072)
        x = self.embed_tokens(input_ids) * jnp.asarray(math.sqrt(self.config.hidden_size), self.dtype)
        forward = _layer_forward
        if self.remat != "none":
            forward = nnx.remat(_layer_forward, policy=REMAT_POLICIES[self.remat], prevent_cse=True)
        for layer in self.layers:
            x = forward(layer, x, *tables[layer.layer_type])
        x = self.norm(x)
        logits = self.embed_tokens.attend(x) if self.lm_head is None else self.lm_head(x)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = jnp.tanh(logits / cap) * cap
        return logits


# ---------------------------------------------------------------------- HF checkpoints
_LANGUAGE_PREFIXES = ("model.language_model.", "language_model.model.")  # transformers 5, older multimodal files
_SKIPPED_PREFIXES = ("model.vision_tower.", "vision_tower.", "model.multi_modal_projector.", "multi_modal_projector.")


def gemma3_text_name(name: str) -> str | None:
    """The text-decoder name of a Gemma 3 checkpoint tensor, in the text-only layout that
    `hf.hf_to_param_name` maps: text-only checkpoints' names as they are; multimodal ones
    (`Gemma3ForConditionalGeneration`) with their language-model prefix removed, and None for
    their vision tower and projector (not loaded)."""
    if name.startswith(_SKIPPED_PREFIXES):
        return None
    for prefix in _LANGUAGE_PREFIXES:
        if name.startswith(prefix):
            name = "model." + name[len(prefix) :]
    if name == "language_model.lm_head.weight":
        name = "lm_head.weight"
    return name


# ---------------------------------------------------------------------- GGUF files
# llama.cpp gemma3 tensor names -> ours (read by `gguf.gguf_sources`; norms are stored as 1 + w there)
GGUF_LAYER_NAMES = {
    **LLAMA_CPP_BLOCK_NAMES,
    "post_attention_norm.weight": "post_attention_layernorm.scale",
    "ffn_norm.weight": "pre_feedforward_layernorm.scale",
    "post_ffw_norm.weight": "post_feedforward_layernorm.scale",
}


def gguf_config(meta, path) -> Gemma3Config:
    """A Gemma3Config from the metadata of a llama.cpp `gemma3` GGUF (`meta`: a `gguf.GGUFMetadata`).

    What the file does not record is set as llama.cpp sets it: every 6th layer global, local RoPE
    base 10000, attention scale `head_dim ** -0.5` (`(hidden / heads) ** -0.5` for the 62-layer 27B).
    llama.cpp reads no soft-capping for gemma3, and neither does this.
    """

    def need(key):
        value = meta.get(f"gemma3.{key}")
        if value is None:
            raise PplawError(f"{path}: GGUF metadata gemma3.{key} is missing")
        return value

    hidden, heads, layers = int(need("embedding_length")), int(need("attention.head_count")), int(need("block_count"))
    head_dim = int(meta.get("gemma3.attention.key_length", hidden // heads))
    names = set(meta.tensor_shapes)
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is not None:
        vocab = len(tokens)
    else:
        embedding_rows = meta.tensor_shapes.get("token_embd.weight", (None,))[0]
        if embedding_rows is None:
            raise PplawError(f"{path}: GGUF has neither tokenizer.ggml.tokens nor token_embd.weight")
        vocab = embedding_rows
    scaling_type = meta.get("gemma3.rope.scaling.type")
    rope_scaling = None
    if scaling_type and scaling_type != "none":
        if scaling_type != "linear":
            raise PplawError(f"{path}: GGUF rope scaling {scaling_type!r} is not supported for gemma3")
        rope_scaling = {"rope_type": "linear", "factor": float(need("rope.scaling.factor"))}
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return Gemma3Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(meta.get("gemma3.attention.head_count_kv", heads)),
        head_dim=head_dim,
        layer_types=tuple(FULL if (i + 1) % GGUF_SLIDING_PATTERN == 0 else SLIDING for i in range(layers)),
        sliding_window=int(need("attention.sliding_window")),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(meta.get("gemma3.rope.freq_base", 1_000_000.0)),
        rope_scaling=rope_scaling,
        rope_local_theta=GGUF_LOCAL_ROPE_THETA,
        query_pre_attn_scalar=hidden // heads if layers == GGUF_27B_LAYERS else head_dim,
        max_position_embeddings=int(meta.get("gemma3.context_length", 32768)),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if eos is None else int(eos),
    )


FAMILY = Family(
    "gemma3",
    Gemma3Config,
    Gemma3ForCausalLM,
    GEMMA3_MODEL_TYPES,
    hf_tensor_name=gemma3_text_name,
    gguf_archs=("gemma3",),
    gguf_config=gguf_config,
    gguf_layer_names=GGUF_LAYER_NAMES,
    gguf_norm_offset=-1.0,  # the files store 1 + w; the parameters hold HF's w
)


__all__ = [
    "GEMMA3_MODEL_TYPES",
    "Gemma3Config",
    "Gemma3ForCausalLM",
    "gemma3_text_name",
]
