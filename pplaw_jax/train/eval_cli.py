"""`pplaw eval`: multiple-choice accuracy of a model on a JSONL task file (see train.evaluate)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF checkpoint directory (e.g. RUN/hf), .gguf file, or smollm2-135m-instruct")
    parser.add_argument("--tasks", required=True, help='JSONL rows {"question", "choices": [...], "answer": i, ["context"]}')
    parser.add_argument("--out", default=None, help="results JSON (default: print the summary only)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--max-examples", type=int, default=None, help="evaluate the first N tasks only")
    parser.add_argument("--max-length", type=int, default=None, help="longest sequence (default: the model's context, at most 2048)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    parser.add_argument("--mesh", default="data=-1,fsdp=1,tensor=1", help="device mesh (axes data, fsdp, tensor)")


def run(args: argparse.Namespace) -> int:
    from pplaw_jax.distributed import initialize_distributed

    initialize_distributed()

    import jax

    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.logs import progress
    from pplaw_jax.models import load_model
    from pplaw_jax.train.evaluate import build_requests, mc_metrics, read_tasks, score_requests
    from pplaw_jax.train.loop import ShardedLM, data_parallel_size

    if args.max_examples is not None and args.max_examples < 1:
        raise PplawError(f"--max-examples must be >= 1, got {args.max_examples}")
    tasks = read_tasks(args.tasks, args.max_examples)
    mesh = make_mesh(args.mesh)
    if args.batch_size < 1 or args.batch_size % data_parallel_size(mesh):
        raise PplawError(
            f"--batch-size {args.batch_size} is not a positive multiple of the data x fsdp mesh size {data_parallel_size(mesh)}"
        )
    loaded = load_model(args.model, dtype=args.dtype)
    context = loaded.config.max_position_embeddings
    max_length = args.max_length or min(context, 2048)
    if not 2 <= max_length <= context:
        raise PplawError(f"--max-length {max_length} must be in [2, {context}] (the model's context)")
    requests = build_requests(tasks, loaded.tokenizer, max_length, source=args.tasks)
    lm = ShardedLM(loaded.model, mesh)
    with progress("eval", total=len(requests), unit="choice", disable=jax.process_index() != 0) as bar:
        logliks = score_requests(lm.nll, requests, args.batch_size, max_length, progress=bar.update)
    results = {"model": loaded.source, "tasks": os.path.abspath(args.tasks), **mc_metrics(tasks, logliks)}
    if jax.process_index() == 0:
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(out, results)
        keys = ("n", "acc", "acc_ci95", "acc_norm", "acc_norm_ci95")
        print(json.dumps({k: results[k] for k in keys}))
    return 0
