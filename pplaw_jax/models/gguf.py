"""GGUF files (llama.cpp): dequantize with the `gguf` package, rename tensors, rebuild the config.

llama.cpp's converter permutes the rows of the Llama Q and K projections within each head from
the HF "rotate half" RoPE layout to the interleaved (GPT-J) layout; `unpermute_rows` undoes that
so the weights run in our HF-layout decoder. Qwen2/Qwen3 GGUFs are written in the HF layout
(llama.cpp runs them with NEOX-style RoPE) and are left as they are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.models.config import ModelConfig
from pplaw_jax.models.llama import LlamaForCausalLM, model_from_params

# GGUF architecture -> our model_type; which ones carry llama.cpp's Q/K row permutation
_ARCHS = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
_PERMUTED = {"llama"}

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.scale",
    "ffn_norm.weight": "post_attention_layernorm.scale",
    "attn_q.weight": "self_attn.q_proj.kernel",
    "attn_k.weight": "self_attn.k_proj.kernel",
    "attn_v.weight": "self_attn.v_proj.kernel",
    "attn_output.weight": "self_attn.o_proj.kernel",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.scale",
    "attn_k_norm.weight": "self_attn.k_norm.scale",
    "ffn_gate.weight": "mlp.gate_proj.kernel",
    "ffn_up.weight": "mlp.up_proj.kernel",
    "ffn_down.weight": "mlp.down_proj.kernel",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "embed_tokens.embedding",
    "output_norm.weight": "norm.scale",
    "output.weight": "lm_head.kernel",
}
_BLOCK = re.compile(r"blk\.(\d+)\.(.+)$")


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row interleave of a Q/K weight [n_heads*head_dim, ...] (or bias).

    The converter maps HF row `h*D + a*D/2 + b` to GGUF row `h*D + 2*b + a` (a in {0, 1});
    this applies the inverse.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _open(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError/struct errors/IndexError on garbage
        raise PplawError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_config(reader, path: Path) -> ModelConfig:
    """A ModelConfig from GGUF metadata (`{arch}.block_count`, `.attention.head_count`, ...)."""
    arch = _field(reader, "general.architecture")
    if arch not in _ARCHS:
        raise PplawError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {sorted([*_ARCHS, 'gemma3'])})")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise PplawError(f"{path}: GGUF per-frequency RoPE factors (rope_freqs, Llama 3.1 style) are not supported")
    scaling_type = _field(reader, f"{arch}.rope.scaling.type")
    rope_scaling = None
    if scaling_type and scaling_type != "none":
        if scaling_type != "linear":
            raise PplawError(f"{path}: GGUF rope scaling {scaling_type!r} is not supported")
        rope_scaling = {"rope_type": "linear", "factor": float(_field(reader, f"{arch}.rope.scaling.factor"))}

    def need(key):
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise PplawError(f"{path}: GGUF metadata {arch}.{key} is missing")
        return value

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = _field(reader, f"{arch}.vocab_size") or (len(tokens) if tokens is not None else None)
    if vocab is None:
        vocab = next(t.shape[1] for t in reader.tensors if t.name == "token_embd.weight")
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return ModelConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=int(need("block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(_field(reader, f"{arch}.attention.key_length", hidden // heads)),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=rope_scaling,
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 2048)),
        tie_word_embeddings="output.weight" not in names,
        attention_bias=any(n.endswith("attn_q.bias") for n in names),
        qk_norm=arch == "qwen3",
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if eos is None else int(eos),
        model_type=_ARCHS[arch],
    )


def load_gguf(
    path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32, **model_kwargs
) -> tuple[ModelConfig, LlamaForCausalLM]:
    """Read a GGUF file into (config, model): every tensor dequantized to float32, then cast.
    A `gemma3` file is read by `gemma3.load_gemma3_gguf`."""
    import gguf

    path = Path(path)
    reader = _open(path)
    arch = _field(reader, "general.architecture")
    if arch == "gemma3":
        from pplaw_jax.models.gemma3 import load_gemma3_gguf

        return load_gemma3_gguf(reader, path, dtype=dtype, param_dtype=param_dtype, **model_kwargs)
    config = gguf_config(reader, path)
    params: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        match = _BLOCK.match(tensor.name)
        if match:
            sub = _LAYER_NAMES.get(match.group(2))
            name = None if sub is None else f"layers.{match.group(1)}.{sub}"
        else:
            name = _GLOBAL_NAMES.get(tensor.name)
        if name is None:
            raise PplawError(f"{path}: unexpected GGUF tensor {tensor.name!r}")
        try:
            array = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        except NotImplementedError as e:
            raise PplawError(f"{path}: tensor {tensor.name}: quantization {tensor.tensor_type.name} unsupported") from e
        # GGUF lists dims fastest-first; numpy data come out as PyTorch's [out, in] (or [vocab, hidden]).
        array = array.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        if arch in _PERMUTED and ".q_proj." in name:
            array = unpermute_rows(array, config.num_heads)
        elif arch in _PERMUTED and ".k_proj." in name:
            array = unpermute_rows(array, config.num_kv_heads)
        params[name] = array.T if name.endswith("kernel") else array
    model = model_from_params(config, params, dtype=dtype, param_dtype=param_dtype, source=str(path), **model_kwargs)
    return config, model


def load_gguf_tokenizer(path: str | os.PathLike):
    """The tokenizer stored in the GGUF metadata, rebuilt by transformers (offline, local file)."""
    from transformers import AutoTokenizer

    from pplaw_jax.models.tokenizer import Tokenizer

    path = Path(path)
    try:
        hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True,
                                           trust_remote_code=False)
    except Exception as e:  # transformers raises many types for unusable metadata
        raise PplawError(f"{path}: cannot build the tokenizer from GGUF metadata: {e}") from e
    return Tokenizer(hf)
