"""`pplaw eval`: multiple-choice accuracy of a model on a JSONL task file (see train.evaluate),
or any log-likelihood task of lm-evaluation-harness (`--lm-eval-tasks`, see train.harness)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from pplaw_jax.commands import LM_EVAL_INSTALL, EvalCommand, add_command
from pplaw_jax.config import EvalConfig
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import write_json
from pplaw_jax.paths import as_path, is_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, EvalCommand)


def run(args: EvalCommand) -> int:
    from pplaw_jax.distributed import initialize_distributed

    initialize_distributed()

    import jax

    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.logs import progress
    from pplaw_jax.models import load_model
    from pplaw_jax.models.sharded import ShardedLM, data_parallel_size
    from pplaw_jax.train.evaluate import build_requests, mc_metrics, read_tasks, score_requests

    cfg: EvalConfig = args.cfg
    for flag in ("lm_eval_include", "lm_eval_num_fewshot"):
        if getattr(args, flag) is not None and not args.lm_eval_tasks:
            raise PplawError(f"--{flag.replace('_', '-')} needs --lm-eval-tasks")
    if args.lm_eval_num_fewshot is not None and args.lm_eval_num_fewshot < 0:
        raise PplawError(f"--lm-eval-num-fewshot must be >= 0, got {args.lm_eval_num_fewshot}")
    if args.lm_eval_tasks:
        harness = _import_harness()
        suite = harness.load_suite(
            [n.strip() for n in args.lm_eval_tasks.split(",") if n.strip()], args.lm_eval_include
        )
    else:
        assert args.tasks is not None  # argparse: --tasks or --lm-eval-tasks
        tasks = read_tasks(args.tasks, cfg.max_examples)
    mesh = make_mesh(cfg.mesh)
    if cfg.batch_size < 1 or cfg.batch_size % data_parallel_size(mesh):
        raise PplawError(
            f"--batch-size {cfg.batch_size} is not a positive multiple of the data x fsdp mesh size "
            f"{data_parallel_size(mesh)}"
        )
    loaded = load_model(args.model, dtype=cfg.dtype, mesh=mesh)  # read straight into the shards
    context = loaded.config.max_position_embeddings
    max_length = cfg.max_length or min(context, 2048)
    if not 2 <= max_length <= context:
        raise PplawError(f"--max-length {max_length} must be in [2, {context}] (the model's context)")
    keys = ("n", "acc", "acc_ci95", "acc_norm", "acc_norm_ci95")
    if args.lm_eval_tasks:
        lm = harness.PplawLM(loaded, mesh, batch_size=cfg.batch_size, max_length=max_length)
        results = harness.evaluate_suite(lm, suite, limit=cfg.max_examples, num_fewshot=args.lm_eval_num_fewshot)
        summary = {
            name: {k: t[k] for k in keys if k in t} for name, t in {**results["tasks"], **results["groups"]}.items()
        }
    else:
        assert args.tasks is not None
        requests = build_requests(tasks, loaded.tokenizer, max_length, source=args.tasks)
        lm = ShardedLM(loaded.model, mesh)
        with progress("eval", total=len(requests), unit="choice", disable=jax.process_index() != 0) as bar:
            logliks = score_requests(lm.nll, requests, cfg.batch_size, max_length, progress=bar.update)
        results = {
            "model": loaded.source,
            "tasks": args.tasks if is_url(args.tasks) else os.path.abspath(args.tasks),
            **mc_metrics(tasks, logliks, args.tasks),
        }
        summary = {k: results[k] for k in keys}
    results["settings"] = dataclasses.asdict(cfg)  # what produced these numbers
    if jax.process_index() == 0:
        if args.out:
            out = as_path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(out, results)
        print(json.dumps(summary))
    return 0


def _import_harness():
    """pplaw_jax.train.harness, or one PplawError naming the extra when lm-eval is not installed."""
    try:
        import lm_eval  # noqa: F401  (only whether it imports)
    except ImportError:
        raise PplawError(
            f"--lm-eval-tasks needs lm-evaluation-harness (lm_eval); install it with: {LM_EVAL_INSTALL}"
        ) from None
    from pplaw_jax.train import harness

    return harness
