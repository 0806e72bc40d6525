"""Training throughput of `pplaw train`'s jitted step vs an equivalent PyTorch step, and MFU.

    PYTHONPATH=. python benchmarks/train_throughput.py [--models small,smollm2-135m-instruct]
        [--batch-size 4] [--seq-len 256] [--steps 3] [--runs 3] [--dtype float32] [--matmul-size 1024]
        [--no-torch] [--out results.json]

Per model, both frameworks take the same optimizer steps from the same weights on the same random
full-length batch: forward, mean next-token cross-entropy (float32 log-softmax), backward,
global-norm clipping to 1.0, AdamW (b1 0.9, b2 0.95, weight decay 0.1). The JAX side is exactly
`pplaw_jax.train.loop.Trainer.step` on a mesh over the local devices (batch copied from host each
step, loss fetched each step, as in `fit`). The PyTorch side is transformers'
`AutoModelForCausalLM` on the same weights (exported once with `save_hf_checkpoint` to a temporary
HF directory both load) and `torch.optim.AdamW`. `small` is a randomly initialised 4-layer Llama;
`smollm2-135m-instruct` is the real model (GGUF, dequantized to dense float32).

Fairness: each framework runs in its own process with its default threading, processes
alternating jax, torch, jax, torch, ... for `--runs` rounds (`separate_processes.py`). In a
process, a model takes one warm-up step (JAX compiles there) and `--steps` timed steps; the
process's figure is their median, and a model's figure is the best process over all rounds (the
table also gives the range of the per-round JAX/PyTorch ratios). Tokens/s counts
`batch * seq_len` tokens per step. MFU = `flops_per_token(seq_len, training=True)` (the PaLM
6N + 12LHQT count) x tokens/s divided by the best square matmul rate of the same dtype that
either framework reached in any of its processes. The first-step losses of both frameworks are
printed: they agree when the two compute the same step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from separate_processes import (  # noqa: E402
    FRAMEWORKS,
    fmt_load,
    framework_info,
    jax_matmul_peak,
    loadavg,
    machine,
    run_alternating,
    spread,
    torch_matmul_peak,
)

SMALL = {
    "model_type": "llama",
    "vocab_size": 8192,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
LR, CLIP, WD, BETAS = 1e-4, 1.0, 0.1, (0.9, 0.95)


def token_ids(batch: int, seq_len: int, vocab_size: int) -> np.ndarray:
    """The benchmark's batch: the same in every worker."""
    return np.random.default_rng(0).integers(0, vocab_size, size=(batch, seq_len), dtype=np.int32)


def export(name: str, hf_dir: str):
    """Write model `name` as a dense float32 HF checkpoint to `hf_dir`; returns its ModelConfig."""
    from pplaw_jax.models import ModelConfig, init_model, load_model, save_hf_checkpoint

    if name == "small":
        config = ModelConfig.from_hf(SMALL)
        save_hf_checkpoint(init_model(config, seed=0), config, None, hf_dir)
    else:
        loaded = load_model(name)
        config = loaded.config
        save_hf_checkpoint(loaded.model, config, None, hf_dir)
    return config


# ---------------------------------------------------------------------------------- workers
def jax_stepper(hf_dir: str, dtype: str, batch: int, seq_len: int):
    import jax.numpy as jnp

    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.models import load_hf_checkpoint
    from pplaw_jax.train.loop import Trainer
    from pplaw_jax.train.optim import AdamW

    config, model = load_hf_checkpoint(hf_dir, dtype=jnp.dtype(dtype), param_dtype=jnp.float32)
    trainer = Trainer(
        model,
        make_mesh("data=-1,fsdp=1,tensor=1"),
        AdamW(weight_decay=WD, b1=BETAS[0], b2=BETAS[1], clip_norm=CLIP),
    )
    ids = token_ids(batch, seq_len, config.vocab_size)
    lengths = np.full(batch, seq_len, dtype=np.int32)

    def step() -> float:
        stats = trainer.step(trainer.put(ids), trainer.put(lengths), LR)
        return float(stats["train_loss"])

    return step


def torch_stepper(hf_dir: str, dtype: str, batch: int, seq_len: int):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD, eps=1e-8)
    x = torch.from_numpy(token_ids(batch, seq_len, model.config.vocab_size).astype(np.int64))

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            logits = model(x).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def timed(step) -> tuple[float, float]:
    t0 = time.perf_counter()
    loss = step()
    return time.perf_counter() - t0, loss


def worker(args: argparse.Namespace) -> int:
    """One framework, one process: the matmul peak, then every model's steps."""
    peak_fn = jax_matmul_peak if args.worker == "jax" else torch_matmul_peak
    make = jax_stepper if args.worker == "jax" else torch_stepper
    peak = peak_fn(args.matmul_size, args.dtype, 5)
    models = {}
    for name, hf_dir in zip(args.models.split(","), args.hf_dirs.split(",")):
        step = make(hf_dir, args.dtype, args.batch_size, args.seq_len)
        first_s, first_loss = timed(step)  # warm-up; JAX compiles here
        times = [timed(step)[0] for _ in range(args.steps)]
        models[name] = {"first_step_s": first_s, "first_loss": first_loss, "step_s": statistics.median(times),
                        "times_s": times}  # fmt: skip
        del step
    peak = max(peak, peak_fn(args.matmul_size, args.dtype, 5))  # again after: one busy moment
    out = {"framework": args.worker, "info": framework_info(args.worker), "matmul_peak": peak, "models": models}
    Path(args.worker_out).write_text(json.dumps(out))
    return 0


# ---------------------------------------------------------------------------------- parent
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step, per process")
    parser.add_argument("--runs", type=int, default=3, help="rounds of (jax process, torch process)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--matmul-size", type=int, default=1024)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--hf-dirs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    names = args.models.split(",")
    frameworks = ["jax"] if args.no_torch else list(FRAMEWORKS)
    env = {
        **machine(),
        "batch": args.batch_size,
        "seq_len": args.seq_len,
        "dtype": args.dtype,
        "timed_steps": args.steps,
        "runs": args.runs,
        "matmul_size": args.matmul_size,
        "frameworks": frameworks,
    }
    print(json.dumps(env), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as work:
        hf_dirs = [os.path.join(work, f"hf{i}") for i in range(len(names))]
        configs = {name: export(name, d) for name, d in zip(names, hf_dirs)}
        worker_args = ["--models", args.models, "--hf-dirs", ",".join(hf_dirs), "--batch-size", str(args.batch_size),
                       "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--dtype", args.dtype,
                       "--matmul-size", str(args.matmul_size)]  # fmt: skip
        results = run_alternating(os.path.abspath(__file__), worker_args, frameworks, args.runs, Path(work))
    env["frameworks_info"] = {f: runs[0]["info"] for f, runs in results.items()}
    env["loadavg_at_end"] = loadavg()
    env["order"] = [(r["run"], f, r["started_at"]) for f, runs in results.items() for r in runs]
    peaks = {f: max(r["matmul_peak"] for r in runs) for f, runs in results.items()}
    peak = max(peaks.values())
    tokens = args.batch_size * args.seq_len
    rows = []
    for name in names:
        config = configs[name]
        flops = config.flops_per_token(args.seq_len, training=True) * tokens
        row = {"model": name, "params_M": config.num_params() / 1e6, "flops_per_step": flops}
        for f, runs in results.items():
            per_run = [r["models"][name]["step_s"] for r in runs]
            sec = min(per_run)
            row.update({f"{f}_step_s": sec, f"{f}_step_s_per_run": per_run, f"{f}_tok_s": tokens / sec,
                        f"{f}_mfu": flops / sec / peak, f"{f}_first_step_s": runs[0]["models"][name]["first_step_s"],
                        f"{f}_first_loss": runs[0]["models"][name]["first_loss"]})  # fmt: skip
        if "torch" in results:
            row["speedup_per_run"] = [t / j for j, t in zip(row["jax_step_s_per_run"], row["torch_step_s_per_run"])]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    print(f"\n{env['cpu']} ({env['cpu_count']} CPUs), {args.dtype}, batch {args.batch_size} x seq {args.seq_len}; "
          f"separate processes, {args.runs} alternating rounds, median of {args.steps} steps per round, best round; "
          f"load average (1, 5, 15 min) {fmt_load(env['loadavg_at_start'])} at the start, "
          f"{fmt_load(env['loadavg_at_end'])} at the end")  # fmt: skip
    print("matmul peak: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()))
    print("| model | params | JAX tok/s | PyTorch tok/s | JAX/PyTorch (best) | JAX/PyTorch per round | JAX MFU | "
          "PyTorch MFU | first loss JAX / PyTorch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = (f"{r['torch_tok_s']:,.0f} | {r['jax_tok_s'] / r['torch_tok_s']:.2f}x | {spread(r['speedup_per_run'])} | "
             f"{r['jax_mfu']:.1%} | {r['torch_mfu']:.1%} | {r['jax_first_loss']:.5f} / {r['torch_first_loss']:.5f}"
             if "torch_tok_s" in r else f"- | - | - | {r['jax_mfu']:.1%} | - | {r['jax_first_loss']:.5f}")  # fmt: skip
        print(f"| {r['model']} | {r['params_M']:.1f}M | {r['jax_tok_s']:,.0f} | {t} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "matmul_peak_flops": peaks, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
