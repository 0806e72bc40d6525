"""The Llama-family and Gemma 3 decoders (Flax NNX), their configurations, checkpoint loaders and tokenizer.

from pplaw_jax.models import load_model
loaded = load_model("path/to/hf_dir" | "model.gguf" | "smollm2-135m-instruct", dtype="bfloat16")
logits = loaded.model(input_ids)            # int32[B, T] -> [B, T, vocab]
sharded = load_model(spec, mesh=make_mesh("fsdp=-1"), scan_layers=True, remat="dots_saveable")
"""

from pplaw_jax.models.config import ModelConfig
from pplaw_jax.models.gemma3 import Gemma3Config, Gemma3ForCausalLM
from pplaw_jax.models.gguf import load_gguf
from pplaw_jax.models.hf import load_hf_checkpoint, save_hf_checkpoint
from pplaw_jax.models.layers import REMAT_POLICIES
from pplaw_jax.models.llama import LlamaForCausalLM, flat_params, init_model
from pplaw_jax.models.loading import LoadedModel, load_model
from pplaw_jax.models.tokenizer import Tokenizer, train_bpe_tokenizer
from pplaw_jax.models.weights import model_from_params, place_model

__all__ = [
    "Gemma3Config",
    "Gemma3ForCausalLM",
    "LlamaForCausalLM",
    "LoadedModel",
    "ModelConfig",
    "REMAT_POLICIES",
    "Tokenizer",
    "flat_params",
    "init_model",
    "load_gguf",
    "load_hf_checkpoint",
    "load_model",
    "model_from_params",
    "place_model",
    "save_hf_checkpoint",
    "train_bpe_tokenizer",
]
