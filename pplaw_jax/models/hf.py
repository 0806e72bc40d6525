"""HF checkpoint directories: read `config.json` + safetensors (single or sharded), write them back.

Weights are read with `safetensors` (numpy), never through transformers models. numpy has no
bfloat16, so BF16 tensors are read from the file's byte layout into `ml_dtypes.bfloat16`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import publish_modes, staging_dir
from pplaw_jax.models.config import ARCHITECTURES, ModelConfig
from pplaw_jax.models.llama import LlamaForCausalLM, flat_params, model_from_params

_PROJ = re.compile(r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|lm_head)$")
_NORM = re.compile(r"(input_layernorm|post_attention_layernorm|q_norm|k_norm|norm)$")


def hf_to_param_name(name: str) -> tuple[str, bool] | None:
    """Map an HF tensor name to (our dotted param path, transpose?); None for tensors we ignore."""
    if name.endswith("rotary_emb.inv_freq"):
        return None
    base = name[len("model."):] if name.startswith("model.") else name
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


def _read_raw(path: Path, name: str, dtype: np.dtype) -> np.ndarray:
    """Read one tensor from the safetensors byte layout (8-byte header length, JSON header, data)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        info = json.loads(f.read(header_len))[name]
        start, end = info["data_offsets"]
        f.seek(8 + header_len + start)
        data = f.read(end - start)
    return np.frombuffer(data, dtype=dtype).reshape(info["shape"])


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of one safetensors file as numpy arrays (BF16 as ml_dtypes.bfloat16)."""
    from safetensors import SafetensorError, safe_open

    out = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                if f.get_slice(name).get_dtype() == "BF16":
                    out[name] = _read_raw(path, name, np.dtype(ml_dtypes.bfloat16))
                else:
                    out[name] = f.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as e:
        raise PplawError(f"{path}: cannot read safetensors file: {e}") from e
    return out


def read_hf_config(directory: str | os.PathLike):
    """The `ModelConfig` (Llama family) or `gemma3.Gemma3Config` of a checkpoint's config.json."""
    path = Path(directory) / "config.json"
    if not path.exists():
        raise PplawError(f"{directory}: not an HF checkpoint directory (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise PplawError(f"{path}: invalid JSON ({e})") from e
    from pplaw_jax.models.gemma3 import GEMMA3_MODEL_TYPES, Gemma3Config

    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type in GEMMA3_MODEL_TYPES:
        return Gemma3Config.from_hf(raw)
    if model_type not in ARCHITECTURES:
        supported = sorted([*ARCHITECTURES, *GEMMA3_MODEL_TYPES])
        raise PplawError(f"{path}: model_type {model_type!r} is not supported (supported: {supported})")
    return ModelConfig.from_hf(raw)


def load_hf_checkpoint(
    directory: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32, **model_kwargs
) -> tuple[ModelConfig, LlamaForCausalLM]:
    """Read an HF checkpoint directory into (config, model); weights cast to `param_dtype`.

    A Gemma 3 checkpoint gives a `gemma3.Gemma3ForCausalLM` (text decoder only)."""
    from pplaw_jax.models import gemma3

    directory = Path(directory)
    config = read_hf_config(directory)
    is_gemma3 = isinstance(config, gemma3.Gemma3Config)
    to_param_name = gemma3.gemma3_hf_to_param_name if is_gemma3 else hf_to_param_name
    params: dict[str, np.ndarray] = {}
    for file in _safetensors_files(directory):
        for name, array in read_safetensors(file).items():
            mapped = to_param_name(name)
            if mapped is None:
                continue
            path, transpose = mapped
            if path == "lm_head.kernel" and config.tie_word_embeddings:
                continue  # some tied checkpoints store the shared matrix twice
            params[path] = array.T if transpose else array
    model = model_from_params(
        config, params, dtype=dtype, param_dtype=param_dtype, source=str(directory),
        decoder_cls=gemma3.Gemma3ForCausalLM if is_gemma3 else LlamaForCausalLM, **model_kwargs
    )
    return config, model


# ---------------------------------------------------------------------- writing
def save_hf_checkpoint(model: LlamaForCausalLM, config: ModelConfig, tokenizer, out_dir: str | os.PathLike) -> None:
    """Write `config.json`, `model.safetensors` and tokenizer files that transformers loads.

    Float32 parameters are written as F32 and float16 as F16; bfloat16 parameters are written as
    float32 (exact). A tied embedding is written once (`model.embed_tokens.weight`). The directory
    is assembled under a temporary name and renamed into place, so `out_dir` is either absent,
    the previous complete checkpoint, or the new complete one. An existing `out_dir` is replaced
    only if it is an HF checkpoint directory (has config.json) or empty.
    """
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and ((out_dir / "config.json").exists() or not any(out_dir.iterdir()))):
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
