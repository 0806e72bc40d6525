"""Export of the trained weights as an HF checkpoint directory (`RUN/hf/`).

The directory (config.json, model.safetensors, tokenizer files) is what transformers'
`AutoModelForCausalLM.from_pretrained` and `pplaw score --model RUN/hf` load. Parameters are
gathered to host memory (never replicated on devices, so a model sharded because it does not fit
one device can still be exported) and written by process 0 only, atomically.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx

from pplaw_jax.models import save_hf_checkpoint


def to_host(tree):
    """A pytree of (possibly sharded, possibly multi-host) arrays as numpy arrays on every host."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def export_hf(lm, config, tokenizer, out_dir: str | os.PathLike) -> None:
    """Write a `ShardedLM`'s current weights with `config` and `tokenizer` to `out_dir`."""
    model = nnx.merge(lm.graphdef, to_host(lm.params), to_host(lm.rest))
    if jax.process_index() == 0:
        save_hf_checkpoint(model, config, tokenizer, out_dir)
