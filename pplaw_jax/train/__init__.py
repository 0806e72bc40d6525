"""Continual pre-training (optax AdamW, orbax checkpoints, sharded jit steps), evaluation, HF export.

    from pplaw_jax.train import Trainer, train_loop, train_tokenizer
    pplaw train --model M --data D --selection SEL/selection.parquet --out RUN --tokens N
    pplaw eval --model RUN/hf --tasks tasks.jsonl --out results.json

Submodules: `optim` (schedule rule, AdamW), `dataset` (selection -> cached token ids -> batch
order), `loop` (sharded train step, resumable loop, memory check; the forward and loss it shares
with scoring are `models.sharded` and `models.loss`),
`checkpoint` (orbax), `metrics` (metrics.jsonl), `evaluate` (eval loss, multiple choice),
`export` (RUN/hf), `scratch` (random init, tokenizer training).
"""

import importlib

# name -> submodule; imported on first use (PEP 562), so `pplaw train --help` (which imports
# pplaw_jax.train.cli) does not load JAX
_EXPORTS = {
    "TokenSequences": "dataset",
    "batch_indices": "dataset",
    "build_sequences": "dataset",
    "mc_metrics": "evaluate",
    "read_tasks": "evaluate",
    "wilson_interval": "evaluate",
    "LoopSettings": "loop",
    "Trainer": "loop",
    "train_loop": "loop",
    "mean_loss": "loop",
    "AdamW": "optim",
    "make_optimizer": "optim",
    "make_schedule": "optim",
    "total_steps": "optim",
    "warmup_steps": "optim",
    "load_for_training": "scratch",
    "train_tokenizer": "scratch",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
