"""`pplaw eval`: multiple-choice accuracy of a model on a JSONL task file (see train.evaluate)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pplaw_jax.config import EvalConfig, add_settings
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF checkpoint directory (e.g. RUN/hf), .gguf file, or smollm2-135m-instruct")
    parser.add_argument("--tasks", required=True, help='JSONL rows {"question", "choices": [...], "answer": i, ["context"]}')
    parser.add_argument("--out", default=None, help="results JSON (default: print the summary only)")
    add_settings(parser, EvalConfig)


def run(args: argparse.Namespace) -> int:
    from pplaw_jax.distributed import initialize_distributed

    initialize_distributed()

    import jax

    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.logs import progress
    from pplaw_jax.models import load_model
    from pplaw_jax.train.evaluate import build_requests, mc_metrics, read_tasks, score_requests
    from pplaw_jax.train.loop import ShardedLM, data_parallel_size

    cfg: EvalConfig = args.cfg
    tasks = read_tasks(args.tasks, cfg.max_examples)
    mesh = make_mesh(cfg.mesh)
    if cfg.batch_size < 1 or cfg.batch_size % data_parallel_size(mesh):
        raise PplawError(
            f"--batch-size {cfg.batch_size} is not a positive multiple of the data x fsdp mesh size {data_parallel_size(mesh)}"
        )
    loaded = load_model(args.model, dtype=cfg.dtype, mesh=mesh)  # read straight into the shards
    context = loaded.config.max_position_embeddings
    max_length = cfg.max_length or min(context, 2048)
    if not 2 <= max_length <= context:
        raise PplawError(f"--max-length {max_length} must be in [2, {context}] (the model's context)")
    requests = build_requests(tasks, loaded.tokenizer, max_length, source=args.tasks)
    lm = ShardedLM(loaded.model, mesh)
    with progress("eval", total=len(requests), unit="choice", disable=jax.process_index() != 0) as bar:
        logliks = score_requests(lm.nll, requests, cfg.batch_size, max_length, progress=bar.update)
    results = {"model": loaded.source, "tasks": os.path.abspath(args.tasks), **mc_metrics(tasks, logliks)}
    if jax.process_index() == 0:
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(out, results)
        keys = ("n", "acc", "acc_ci95", "acc_norm", "acc_norm_ci95")
        print(json.dumps({k: results[k] for k in keys}))
    return 0
