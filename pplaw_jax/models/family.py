"""A model family: what reading one kind of HF checkpoint needs (registered in `models.registry`).

A family's own module defines its config class (with ``from_hf(config.json dict)``), its NNX
decoder, what its GGUF files hold (the config from their metadata, the tensor names) and a `Family`
naming them; `models.registry` lists the families. The loaders (`hf.read_hf_config`,
`hf.hf_sources`, `gguf.load_gguf`, `weights.place_model`) ask the registry, never a family by name,
so a new family is its module plus one registry entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# llama.cpp's tensor names that every family here shares -> the decoders' names: the block's
# attention and MLP projections (``blk.N.<name>``) and the global tensors. A family adds its norms.
LLAMA_CPP_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.scale",
    "attn_q.weight": "self_attn.q_proj.kernel",
    "attn_k.weight": "self_attn.k_proj.kernel",
    "attn_v.weight": "self_attn.v_proj.kernel",
    "attn_output.weight": "self_attn.o_proj.kernel",
    "attn_q_norm.weight": "self_attn.q_norm.scale",
    "attn_k_norm.weight": "self_attn.k_norm.scale",
    "ffn_gate.weight": "mlp.gate_proj.kernel",
    "ffn_up.weight": "mlp.up_proj.kernel",
    "ffn_down.weight": "mlp.down_proj.kernel",
}
LLAMA_CPP_GLOBAL_NAMES = {
    "token_embd.weight": "embed_tokens.embedding",
    "output_norm.weight": "norm.scale",
    "output.weight": "lm_head.kernel",
}


def same_name(name: str) -> str | None:
    """Checkpoint tensor names are the decoder's HF-style names as they are."""
    return name


class ConfigClass(Protocol):
    """A family's config class, as the loaders use it: it builds the config from config.json."""

    def from_hf(self, config: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Family:
    name: str
    config_class: ConfigClass  # `config_class.from_hf(config.json dict)` -> the family's config
    decoder_class: type  # the NNX decoder `weights.place_model` builds from that config
    hf_model_types: tuple[str, ...]  # the config.json `model_type` values it reads
    hf_tensor_name: Callable[[str], str | None] = same_name  # checkpoint name -> decoder's HF name; None: skip
    # GGUF (llama.cpp) files: the `general.architecture` values it reads; its config from the
    # metadata, `gguf_config(meta, path)` (`meta`: a `gguf.GGUFMetadata`)
    gguf_archs: tuple[str, ...] = ()
    gguf_config: Callable[[Any, Any], Any] | None = None
    # llama.cpp tensor names -> the decoder's: per block (``blk.N.<name>``) and global
    gguf_layer_names: Mapping[str, str] = field(default_factory=dict)
    gguf_global_names: Mapping[str, str] = field(default_factory=lambda: LLAMA_CPP_GLOBAL_NAMES)
    gguf_permuted_archs: tuple[str, ...] = ()  # architectures whose Q/K rows llama.cpp interleaved
    gguf_norm_offset: float = 0.0  # added to every norm scale as it is read (gemma3 files store 1 + w)
