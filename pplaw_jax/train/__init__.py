"""Continual pre-training (optax AdamW, orbax checkpoints, sharded jit steps), evaluation, HF export.

    from pplaw_jax.train import Trainer, fit, train_tokenizer
    pplaw train --model M --data D --selection SEL/selection.parquet --out RUN --tokens N
    pplaw eval --model RUN/hf --tasks tasks.jsonl --out results.json

Submodules: `optim` (schedule rule, AdamW), `dataset` (selection -> cached token ids -> batch
order), `loss` (masked token NLL), `loop` (sharded train step, resumable loop, memory check),
`checkpoint` (orbax), `metrics` (metrics.jsonl), `evaluate` (eval loss, multiple choice),
`export` (RUN/hf), `scratch` (random init, tokenizer training).
"""

from pplaw_jax.train.dataset import TokenSequences, batch_indices, build_sequences, read_selection
from pplaw_jax.train.evaluate import mc_metrics, read_tasks, wilson_interval
from pplaw_jax.train.loop import LoopSettings, ShardedLM, Trainer, fit
from pplaw_jax.train.loss import token_nll
from pplaw_jax.train.optim import make_optimizer, make_schedule, total_steps, warmup_steps
from pplaw_jax.train.scratch import load_for_training, train_tokenizer

__all__ = [
    "LoopSettings",
    "ShardedLM",
    "TokenSequences",
    "Trainer",
    "batch_indices",
    "build_sequences",
    "fit",
    "load_for_training",
    "make_optimizer",
    "make_schedule",
    "mc_metrics",
    "read_selection",
    "read_tasks",
    "token_nll",
    "total_steps",
    "train_tokenizer",
    "warmup_steps",
    "wilson_interval",
]
