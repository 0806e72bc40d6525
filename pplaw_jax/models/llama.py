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

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from pplaw_jax.distributed import state_shardings
from pplaw_jax.errors import PplawError
from pplaw_jax.models.config import ARCHITECTURES, ModelConfig
from pplaw_jax.models.family import LLAMA_CPP_BLOCK_NAMES, Family
from pplaw_jax.models.layers import (
    INIT_STD,
    LAYERS,
    MLP,
    REMAT_POLICIES,
    RMSNorm,
    apply_rope,
    linear,
    logical_axes,
    remat_policy_name,
    rope_cos_sin,
)

if TYPE_CHECKING:
    from pplaw_jax.models.gemma3 import Gemma3ForCausalLM


class Attention(nnx.Module):
    """Multi-head attention with grouped KV heads, optional qkv bias and per-head q/k RMSNorm."""

    def __init__(self, config: ModelConfig, *, dtype, param_dtype, attention_impl, rngs: nnx.Rngs):
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.q_proj = linear(c.hidden_size, q, c.attention_bias, dtype, param_dtype, rngs, ("embed", "heads"))
        self.k_proj = linear(c.hidden_size, kv, c.attention_bias, dtype, param_dtype, rngs, ("embed", "kv_heads"))
        self.v_proj = linear(c.hidden_size, kv, c.attention_bias, dtype, param_dtype, rngs, ("embed", "kv_heads"))
        self.o_proj = linear(
            q, c.hidden_size, c.attention_out_bias, dtype, param_dtype, rngs, ("heads", "embed"), bias_axis="embed_bias"
        )
        self.q_norm: RMSNorm | None
        self.k_norm: RMSNorm | None
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
        if self.q_norm is not None and self.k_norm is not None:  # (both or neither: config.qk_norm)
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = jax.nn.dot_product_attention(
            q, k, v, is_causal=True, local_window_size=self.window, implementation=self.attention_impl
        )
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim))


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
            embedding_metadata=logical_axes("vocab", "embed"),
        )

        def layer(rngs):
            return DecoderLayer(config, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, rngs=rngs)

        if self.scan_layers:
            stacked = nnx.vmap(
                layer,
                in_axes=0,
                out_axes=0,
                axis_size=config.num_layers,
                transform_metadata={nnx.PARTITION_NAME: LAYERS},
            )
            self.layers = nnx.split_rngs(splits=config.num_layers)(stacked)(rngs)
        else:
            self.layers = nnx.List([layer(rngs) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = linear(
                config.hidden_size, config.vocab_size, False, dtype, param_dtype, rngs, ("embed", "vocab")
            )

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
        return LlamaForCausalLM(
            config, dtype=jnp.dtype(dtype), param_dtype=jnp.float32, rngs=nnx.Rngs(params=seed), **kwargs
        )

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


def flat_params(model: LlamaForCausalLM | Gemma3ForCausalLM) -> dict[str, jax.Array]:
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


# ---------------------------------------------------------------------- GGUF files
# llama.cpp tensor names -> ours (read by `gguf.gguf_sources`)
GGUF_LAYER_NAMES = {
    **LLAMA_CPP_BLOCK_NAMES,
    "ffn_norm.weight": "post_attention_layernorm.scale",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
}


def gguf_config(meta, path) -> ModelConfig:
    """A ModelConfig from the metadata of a llama.cpp `llama` / `qwen2` / `qwen3` GGUF
    (`{arch}.block_count`, `.attention.head_count`, ...; `meta`: a `gguf.GGUFMetadata`)."""
    arch = meta.get("general.architecture")
    names = set(meta.tensor_shapes)
    if "rope_freqs.weight" in names:
        raise PplawError(f"{path}: GGUF per-frequency RoPE factors (rope_freqs, Llama 3.1 style) are not supported")
    scaling_type = meta.get(f"{arch}.rope.scaling.type")
    rope_scaling = None
    if scaling_type and scaling_type != "none":
        if scaling_type != "linear":
            raise PplawError(f"{path}: GGUF rope scaling {scaling_type!r} is not supported")
        rope_scaling = {"rope_type": "linear", "factor": float(meta.get(f"{arch}.rope.scaling.factor"))}

    def need(key):
        value = meta.get(f"{arch}.{key}")
        if value is None:
            raise PplawError(f"{path}: GGUF metadata {arch}.{key} is missing")
        return value

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = meta.get(f"{arch}.vocab_size") or (len(tokens) if tokens is not None else None)
    if vocab is None:
        vocab = meta.tensor_shapes["token_embd.weight"][0]
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return ModelConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=int(need("block_count")),
        num_heads=heads,
        num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(meta.get(f"{arch}.attention.key_length", hidden // heads)),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=rope_scaling,
        max_position_embeddings=int(meta.get(f"{arch}.context_length", 2048)),
        tie_word_embeddings="output.weight" not in names,
        attention_bias=any(n.endswith("attn_q.bias") for n in names),
        qk_norm=arch == "qwen3",
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if eos is None else int(eos),
        model_type=arch,
    )


FAMILY = Family(
    "llama",
    ModelConfig,
    LlamaForCausalLM,
    tuple(ARCHITECTURES),
    gguf_archs=("llama", "qwen2", "qwen3"),
    gguf_config=gguf_config,
    gguf_layer_names=GGUF_LAYER_NAMES,
    # llama.cpp's converter interleaves Llama's Q/K rows for GPT-J style RoPE; Qwen files keep HF's
    gguf_permuted_archs=("llama",),
)
