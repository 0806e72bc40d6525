"""GGUF files (llama.cpp): dequantize with the `gguf` package, rename tensors, rebuild the config.

GGUF quantises each row (PyTorch layout [out, in], or [vocab, hidden]) in independent blocks, so
a tensor is read row by row: a device's slice dequantises only the rows it covers, straight from
the memory-mapped file (`GGUFSource`), and `weights.place_model` puts it in its shard.

llama.cpp's converter permutes the rows of the Llama Q and K projections within each head from
the HF "rotate half" RoPE layout to the interleaved (GPT-J) layout; `unpermute_rows` undoes that
so the weights run in our HF-layout decoder. Qwen2/Qwen3 GGUFs are written in the HF layout
(llama.cpp runs them with NEOX-style RoPE) and are left as they are.

`gemma3` files load the Gemma 3 decoder (`pplaw_jax.models.gemma3`: its config from the metadata,
its tensor names): their Q/K rows are in the HF layout too, and their norm weights are stored as
`1 + w` (the converter adds the 1 that Gemma3RMSNorm adds at run time), so 1 is subtracted as
each norm is read and the parameters hold HF's zero-centred `w`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pplaw_jax.errors import PplawError
from pplaw_jax.models import gemma3
from pplaw_jax.models.config import ModelConfig
from pplaw_jax.models.gemma3 import Gemma3Config, Gemma3ForCausalLM
from pplaw_jax.models.llama import LlamaForCausalLM
from pplaw_jax.models.weights import Shifted, TensorSource, Transposed, place_model

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
        raise PplawError(
            f"{path}: GGUF architecture {arch!r} is not supported (supported: {sorted([*_ARCHS, 'gemma3'])})"
        )
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


@dataclass(frozen=True)
class GGUFSource:
    """One GGUF tensor as a `weights.TensorSource` in PyTorch layout, read by rows: a slice
    dequantises only its rows (through `row_order`, HF row -> GGUF row, when llama.cpp permuted them)."""

    path: Path
    tensor: Any  # gguf.ReaderTensor: .data is a memory map [rows, bytes-or-values per row]
    row_order: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.tensor.name

    @property
    def shape(self) -> tuple[int, ...]:
        # GGUF lists dims fastest-first
        return tuple(int(d) for d in reversed(self.tensor.shape))

    def read(self, index) -> np.ndarray:
        import gguf

        rows = np.arange(self.shape[0])[index[0]]
        if self.row_order is not None:
            rows = self.row_order[rows]
        data = self.tensor.data
        block = data[rows] if len(self.shape) > 1 else data  # a vector is one row
        try:
            values = np.asarray(gguf.quants.dequantize(block, self.tensor.tensor_type), dtype=np.float32)
        except NotImplementedError as e:
            raise PplawError(
                f"{self.path}: tensor {self.name}: quantization {self.tensor.tensor_type.name} unsupported"
            ) from e
        if len(self.shape) == 1:
            return values.reshape(self.shape)[rows]
        return values.reshape(len(rows), *self.shape[1:])[(slice(None), *index[1:])]


def gguf_sources(reader, path: Path, config: ModelConfig | Gemma3Config) -> dict[str, TensorSource]:
    """The file's tensors as sources keyed by our parameter names (kernels transposed, Llama Q/K
    rows unpermuted, gemma3 norms read minus 1); PplawError naming a tensor the decoder has no
    place for or cannot dequantize."""
    arch = _field(reader, "general.architecture")
    is_gemma3 = arch == "gemma3"
    layer_names, global_names = (
        (gemma3.GGUF_LAYER_NAMES, gemma3.GGUF_GLOBAL_NAMES) if is_gemma3 else (_LAYER_NAMES, _GLOBAL_NAMES)
    )
    sources: dict[str, TensorSource] = {}
    for tensor in reader.tensors:
        match = _BLOCK.match(tensor.name)
        if match:
            sub = layer_names.get(match.group(2))
            name = None if sub is None else f"layers.{match.group(1)}.{sub}"
        else:
            name = global_names.get(tensor.name)
        if name is None:
            raise PplawError(f"{path}: unexpected GGUF tensor {tensor.name!r} for architecture {arch!r}")
        source = GGUFSource(path, tensor)
        heads = None
        if arch in _PERMUTED and ".q_proj." in name:
            heads = config.num_heads
        elif arch in _PERMUTED and ".k_proj." in name:
            heads = config.num_kv_heads
        if heads is not None:
            source = GGUFSource(path, tensor, unpermute_rows(np.arange(source.shape[0]), heads))
        source.read((slice(0, 1),) + tuple(slice(0, d) for d in source.shape[1:]))  # an unsupported type fails now
        if name.endswith("kernel"):
            sources[name] = Transposed(source)
        elif is_gemma3 and name.endswith(".scale"):
            sources[name] = Shifted(source, -1.0)
        else:
            sources[name] = source
    return sources


def load_gguf(
    path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32, mesh: Mesh | None = None, **model_kwargs
) -> tuple[ModelConfig | Gemma3Config, LlamaForCausalLM | Gemma3ForCausalLM]:
    """Read a GGUF file into (config, model): each device's slice of every tensor dequantized to
    float32, cast to `param_dtype` and placed in its shard on `mesh` (None: the default device); see
    `weights.place_model`. A `gemma3` file gives a `Gemma3ForCausalLM`. Extra keyword arguments
    (`attention_impl`, `remat`, `scan_layers`) go to the decoder class."""
    path = Path(path)
    reader = _open(path)
    config: ModelConfig | Gemma3Config
    if _field(reader, "general.architecture") == "gemma3":
        config = gemma3_gguf_config(reader, path)
    else:
        config = gguf_config(reader, path)
    model = place_model(
        config,
        gguf_sources(reader, path, config),
        dtype=dtype,
        param_dtype=param_dtype,
        mesh=mesh,
        source=str(path),
        **model_kwargs,
    )
    return config, model


def gemma3_gguf_config(reader, path) -> Gemma3Config:
    """A Gemma3Config from the metadata of a llama.cpp `gemma3` GGUF.

    What the file does not record is set as llama.cpp sets it: every 6th layer global, local RoPE
    base 10000, attention scale `head_dim ** -0.5` (`(hidden / heads) ** -0.5` for the 62-layer 27B).
    llama.cpp reads no soft-capping for gemma3, and neither does this.
    """

    def need(key):
        value = _field(reader, f"gemma3.{key}")
        if value is None:
            raise PplawError(f"{path}: GGUF metadata gemma3.{key} is missing")
        return value

    hidden, heads, layers = int(need("embedding_length")), int(need("attention.head_count")), int(need("block_count"))
    head_dim = int(_field(reader, "gemma3.attention.key_length", hidden // heads))
    names = {t.name for t in reader.tensors}
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if tokens is not None:
        vocab = len(tokens)
    else:
        embedding_rows = next((int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight"), None)
        if embedding_rows is None:
            raise PplawError(f"{path}: GGUF has neither tokenizer.ggml.tokens nor token_embd.weight")
        vocab = embedding_rows
    scaling_type = _field(reader, "gemma3.rope.scaling.type")
    rope_scaling = None
    if scaling_type and scaling_type != "none":
        if scaling_type != "linear":
            raise PplawError(f"{path}: GGUF rope scaling {scaling_type!r} is not supported for gemma3")
        rope_scaling = {"rope_type": "linear", "factor": float(need("rope.scaling.factor"))}
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return Gemma3Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(_field(reader, "gemma3.attention.head_count_kv", heads)),
        head_dim=head_dim,
        layer_types=tuple(
            gemma3.FULL if (i + 1) % gemma3.GGUF_SLIDING_PATTERN == 0 else gemma3.SLIDING for i in range(layers)
        ),
        sliding_window=int(need("attention.sliding_window")),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(_field(reader, "gemma3.rope.freq_base", 1_000_000.0)),
        rope_scaling=rope_scaling,
        rope_local_theta=gemma3.GGUF_LOCAL_ROPE_THETA,
        query_pre_attn_scalar=hidden // heads if layers == gemma3.GGUF_27B_LAYERS else head_dim,
        max_position_embeddings=int(_field(reader, "gemma3.context_length", 32768)),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if eos is None else int(eos),
    )


def gguf_tokenizer_fields(reader) -> tuple[str, dict]:
    """(architecture, tokenizer fields) of a GGUF: llama.cpp's `tokenizer.ggml.*` keys under the
    names transformers' GGUF tokenizer builders take (`GGUF_TOKENIZER_MAPPING`)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING

    fields = {}
    for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items():
        value = _field(reader, f"tokenizer.{key}")
        if value is not None:
            fields[name] = value
    return _field(reader, "general.architecture"), fields


def load_gguf_tokenizer(path: str | os.PathLike):
    """The tokenizer stored in the GGUF metadata, rebuilt without torch: the metadata is read with
    `gguf`, and transformers' builders (`convert_gguf_tokenizer`: byte-level BPE, SentencePiece-style
    BPE, Unigram, with each pre-tokenizer's split rule) assemble a `tokenizers.Tokenizer` from it.
    transformers' own `AutoTokenizer(gguf_file=...)` imports torch to read the same metadata."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    from pplaw_jax.models.tokenizer import Tokenizer

    path = Path(path)
    reader = _open(path)
    arch, fields = gguf_tokenizer_fields(reader)
    if "tokens" not in fields:
        raise PplawError(f"{path}: the GGUF has no tokenizer (no tokenizer.ggml.tokens in its metadata)")
    try:
        backend, _ = convert_gguf_tokenizer(arch, fields)
    except Exception as e:  # the builders raise ValueError/KeyError on vocabularies they do not know
        raise PplawError(f"{path}: cannot build the tokenizer from GGUF metadata: {' '.join(str(e).split())}") from e
    return Tokenizer(backend, bos_id=fields.get("bos_token_id"), eos_id=fields.get("eos_token_id"))
