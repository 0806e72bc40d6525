"""GGUF files (llama.cpp): dequantize with the `gguf` package, rename tensors, rebuild the config.

GGUF quantises each row (PyTorch layout [out, in], or [vocab, hidden]) in independent blocks, so
a tensor is read row by row: a device's slice dequantises only the rows it covers, straight from
the memory-mapped file (`GGUFSource`), and `weights.place_model` puts it in its shard.

llama.cpp's converter permutes the rows of the Llama Q and K projections within each head from
the HF "rotate half" RoPE layout to the interleaved (GPT-J) layout; `unpermute_rows` undoes that
so the weights run in our HF-layout decoder. Qwen2/Qwen3 GGUFs are written in the HF layout
(llama.cpp runs them with NEOX-style RoPE) and are left as they are.

`gemma3` files load the Gemma 3 decoder: their Q/K rows are in the HF layout too, and their norm
weights are stored as `1 + w` (the converter adds the 1 that Gemma3RMSNorm adds at run time), so 1
is subtracted as each norm is read and the parameters hold HF's zero-centred `w`.

What is particular to a family (the config from the metadata, the tensor names, the permuted
architectures, the norm offset) is in its module's `Family` (`models.registry`); this module reads
the format.
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
from pplaw_jax.models import registry
from pplaw_jax.models.config import ModelConfig
from pplaw_jax.models.family import Family
from pplaw_jax.models.gemma3 import Gemma3Config, Gemma3ForCausalLM
from pplaw_jax.models.llama import LlamaForCausalLM
from pplaw_jax.models.weights import Shifted, TensorSource, Transposed, place_model

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


class GGUFMetadata:
    """What a family's `gguf_config` reads of a GGUF file: its metadata fields and its tensors'
    names and shapes (PyTorch order)."""

    def __init__(self, reader):
        self._reader = reader
        self.tensor_shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}

    def get(self, key: str, default=None):
        return _field(self._reader, key, default)


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


def gguf_sources(reader, path: Path, config, family: Family) -> dict[str, TensorSource]:
    """The file's tensors as sources keyed by our parameter names (kernels transposed, Q/K rows
    unpermuted where the family's architecture was permuted, norms shifted by the family's
    offset); PplawError naming a tensor the decoder has no place for or cannot dequantize."""
    arch = _field(reader, "general.architecture")
    permuted = arch in family.gguf_permuted_archs
    sources: dict[str, TensorSource] = {}
    for tensor in reader.tensors:
        match = _BLOCK.match(tensor.name)
        if match:
            sub = family.gguf_layer_names.get(match.group(2))
            name = None if sub is None else f"layers.{match.group(1)}.{sub}"
        else:
            name = family.gguf_global_names.get(tensor.name)
        if name is None:
            raise PplawError(f"{path}: unexpected GGUF tensor {tensor.name!r} for architecture {arch!r}")
        source = GGUFSource(path, tensor)
        heads = None
        if permuted and ".q_proj." in name:
            heads = config.num_heads
        elif permuted and ".k_proj." in name:
            heads = config.num_kv_heads
        if heads is not None:
            source = GGUFSource(path, tensor, unpermute_rows(np.arange(source.shape[0]), heads))
        source.read((slice(0, 1),) + tuple(slice(0, d) for d in source.shape[1:]))  # an unsupported type fails now
        if name.endswith("kernel"):
            sources[name] = Transposed(source)
        elif family.gguf_norm_offset and name.endswith(".scale"):
            sources[name] = Shifted(source, family.gguf_norm_offset)
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
    arch = _field(reader, "general.architecture")
    family = registry.by_gguf_arch(arch)
    if family is None or family.gguf_config is None:
        raise PplawError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {registry.gguf_archs()})")
    config: ModelConfig | Gemma3Config = family.gguf_config(GGUFMetadata(reader), path)
    model = place_model(
        config,
        gguf_sources(reader, path, config, family),
        dtype=dtype,
        param_dtype=param_dtype,
        mesh=mesh,
        source=str(path),
        **model_kwargs,
    )
    return config, model


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
