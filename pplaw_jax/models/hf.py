"""HF checkpoint directories: read `config.json` + safetensors (single or sharded), write them back.

Weights are read from the safetensors byte layout directly (8-byte header length, JSON header,
raw little-endian data), never through transformers models: each file's header is parsed once and
its data memory-mapped, so a tensor's slice is read from disk only when a device that holds it
asks (`pplaw_jax.models.weights`). BF16 data are viewed as `ml_dtypes.bfloat16` (numpy has none).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import publish_modes, staging_dir
from pplaw_jax.models import registry
from pplaw_jax.models.config import ModelConfig
from pplaw_jax.models.gemma3 import Gemma3Config, Gemma3ForCausalLM
from pplaw_jax.models.llama import LlamaForCausalLM, flat_params
from pplaw_jax.models.weights import TensorSource, Transposed, place_model

_PROJ = re.compile(r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|lm_head)$")
_NORM = re.compile(r"(input_layernorm|post_attention_layernorm|q_norm|k_norm|norm)$")


def hf_to_param_name(name: str) -> tuple[str, bool] | None:
    """Map an HF tensor name to (our dotted param path, transpose?); None for tensors we ignore."""
    if name.endswith("rotary_emb.inv_freq"):
        return None
    base = name[len("model.") :] if name.startswith("model.") else name
    module, _, kind = base.rpartition(".")
    if kind == "bias":
        return f"{module}.bias", False
    if kind != "weight":
        return base, False
    if module == "embed_tokens":
        return "embed_tokens.embedding", False
    if _PROJ.search(module):
        return f"{module}.kernel", True
    if _NORM.search(module):
        return f"{module}.scale", False
    return base, False


def param_to_hf_name(path: str) -> tuple[str, bool]:
    """Inverse of `hf_to_param_name`: (HF tensor name, transpose?)."""
    module, _, kind = path.rpartition(".")
    prefix = "" if module == "lm_head" else "model."
    if kind == "kernel":
        return f"{prefix}{module}.weight", True
    if kind in ("scale", "embedding"):
        return f"{prefix}{module}.weight", False
    return f"{prefix}{module}.{kind}", False


# ---------------------------------------------------------------------- reading
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}  # every safetensors dtype
_MAX_HEADER = 100 * 2**20  # the safetensors format's own limit on the JSON header


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise PplawError(f"{index}: not a safetensors index ({e})") from e
        files = [directory / f for f in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.exists():
                raise PplawError(f"{index}: shard {f.name} is missing")
        return files
    single = directory / "model.safetensors"
    if single.exists():
        return [single]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise PplawError(f"{directory}: no model.safetensors, model.safetensors.index.json or *.safetensors")
    return files


class SafetensorsFile:
    """One safetensors file: its header parsed (and checked against the file size) once, its data
    memory-mapped; `tensor(name)` is a zero-copy numpy view that reads from disk only what is sliced."""

    def __init__(self, path: Path):
        self.path = path
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise PplawError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > min(_MAX_HEADER, size - 8):
                    raise PplawError(f"{path}: not a safetensors file (header length {header_len} exceeds the file)")
                header = json.loads(f.read(header_len))
        except OSError as e:
            raise PplawError(f"{path}: cannot read safetensors file ({e.strerror})") from e
        except (ValueError, UnicodeDecodeError) as e:
            raise PplawError(f"{path}: not a safetensors file (header is not JSON: {e})") from e
        if not isinstance(header, dict):
            raise PplawError(f"{path}: not a safetensors file (header is not a JSON object)")
        header.pop("__metadata__", None)
        self._data_start = 8 + header_len
        data_len = size - self._data_start
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            try:
                dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
                begin, end = (int(offset) for offset in info["data_offsets"])
            except (TypeError, KeyError, ValueError) as e:
                raise PplawError(f"{path}: tensor {name}: malformed header entry {info!r}") from e
            if dtype not in _ITEMSIZE:
                raise PplawError(f"{path}: tensor {name}: unknown dtype {dtype!r}")
            if not 0 <= begin <= end <= data_len:
                raise PplawError(
                    f"{path}: tensor {name}: data offsets {[begin, end]} lie outside the file (truncated?)"
                )
            if end - begin != _ITEMSIZE[dtype] * int(np.prod(shape, dtype=np.int64)):
                raise PplawError(f"{path}: tensor {name}: {end - begin} bytes do not hold {dtype}{list(shape)}")
            self.entries[name] = (dtype, shape, begin, end)
        self._data = np.memmap(path, dtype=np.uint8, mode="r") if size > self._data_start else None

    def tensor(self, name: str) -> np.ndarray:
        """The tensor `name` as a read-only numpy view of the mapped file (no data read yet)."""
        dtype_name, shape, begin, end = self.entries[name]
        dtype = _DTYPES.get(dtype_name)
        if dtype is None:
            raise PplawError(f"{self.path}: tensor {name} has dtype {dtype_name} (supported: {sorted(_DTYPES)})")
        if end == begin:
            return np.zeros(shape, dtype)
        assert self._data is not None  # a file without data bytes holds only empty tensors (offsets checked)
        raw = self._data[self._data_start + begin : self._data_start + end]
        return raw.view(dtype).reshape(shape)


@dataclass(frozen=True)
class SafetensorsSource:
    """A tensor of a safetensors file as a `weights.TensorSource` (in the file's layout)."""

    file: SafetensorsFile
    name: str

    def __post_init__(self):
        self.file.tensor(self.name)  # an unsupported dtype fails here, before any placement

    @property
    def shape(self) -> tuple[int, ...]:
        return self.file.entries[self.name][1]

    def read(self, index) -> np.ndarray:
        return self.file.tensor(self.name)[index]


def read_hf_config(directory: str | os.PathLike) -> ModelConfig | Gemma3Config:
    """The config of a checkpoint's config.json, by the family that reads its `model_type`
    (`models.registry`: `ModelConfig` for the Llama family, `gemma3.Gemma3Config`, ...)."""
    path = Path(directory) / "config.json"
    if not path.exists():
        raise PplawError(f"{directory}: not an HF checkpoint directory (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise PplawError(f"{path}: invalid JSON ({e})") from e
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    family = registry.by_model_type(model_type)
    if family is None:
        raise PplawError(f"{path}: model_type {model_type!r} is not supported (supported: {registry.model_types()})")
    return family.config_class.from_hf(raw)


def hf_sources(directory: Path, config: ModelConfig | Gemma3Config) -> dict[str, TensorSource]:
    """The checkpoint's tensors as sources keyed by our parameter names (kernels transposed; only
    the tensors the family's `hf_tensor_name` maps: a Gemma 3 multimodal checkpoint's text decoder)."""
    tensor_name = registry.of_config(config).hf_tensor_name
    sources: dict[str, TensorSource] = {}
    for file in _safetensors_files(directory):
        opened = SafetensorsFile(file)
        for name in opened.entries:
            text_name = tensor_name(name)
            mapped = None if text_name is None else hf_to_param_name(text_name)
            if mapped is None:
                continue
            path, transpose = mapped
            if path == "lm_head.kernel" and config.tie_word_embeddings:
                continue  # some tied checkpoints store the shared matrix twice
            tensor = SafetensorsSource(opened, name)
            sources[path] = Transposed(tensor) if transpose else tensor
    return sources


def load_hf_checkpoint(
    directory: str | os.PathLike,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    mesh: Mesh | None = None,
    **model_kwargs,
) -> tuple[ModelConfig | Gemma3Config, LlamaForCausalLM | Gemma3ForCausalLM]:
    """Read an HF checkpoint directory into (config, model); weights cast to `param_dtype` and
    placed straight into their shards on `mesh` (None: the default device); see `weights.place_model`.
    A Gemma 3 checkpoint (`gemma3_text`, or `gemma3` multimodal: its text decoder) gives a
    `Gemma3ForCausalLM`. Extra keyword arguments (`attention_impl`, `remat`, `scan_layers`) go to
    the decoder class."""
    directory = Path(directory)
    config = read_hf_config(directory)
    model = place_model(
        config,
        hf_sources(directory, config),
        dtype=dtype,
        param_dtype=param_dtype,
        mesh=mesh,
        source=str(directory),
        **model_kwargs,
    )
    return config, model


# ---------------------------------------------------------------------- writing
def save_hf_checkpoint(
    model: LlamaForCausalLM | Gemma3ForCausalLM,
    config: ModelConfig | Gemma3Config,
    tokenizer,
    out_dir: str | os.PathLike,
) -> None:
    """Write `config.json`, `model.safetensors` and tokenizer files that transformers loads.

    Float32 parameters are written as F32 and float16 as F16; bfloat16 parameters are written as
    float32 (exact). A tied embedding is written once (`model.embed_tokens.weight`). The directory
    is assembled under a temporary name and renamed into place, so `out_dir` is either absent,
    the previous complete checkpoint, or the new complete one. An existing `out_dir` is replaced
    only if it is an HF checkpoint directory (has config.json) or empty.
    """
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and not (
        out_dir.is_dir() and ((out_dir / "config.json").exists() or not any(out_dir.iterdir()))
    ):
        raise PplawError(f"{out_dir}: exists and is not an HF checkpoint directory; refusing to overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for path, value in flat_params(model).items():
        name, transpose = param_to_hf_name(path)
        array = np.asarray(value)
        if array.dtype not in (np.float32, np.float16):
            array = array.astype(np.float32)
        tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    tmp = staging_dir(out_dir)
    try:
        hf_config = config.to_hf()
        hf_config["dtype"] = "float16" if all(t.dtype == np.float16 for t in tensors.values()) else "float32"
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        publish_modes(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
