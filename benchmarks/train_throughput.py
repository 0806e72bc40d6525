"""Training throughput of `pplaw train`'s jitted step vs an equivalent PyTorch step, and MFU.

    PYTHONPATH=. python benchmarks/train_throughput.py [--models small,smollm2-135m-instruct]
        [--batch-size 4] [--seq-len 256] [--steps 3] [--dtype float32] [--matmul-size 2048]
        [--no-torch] [--out results.json]

Per model, both frameworks take the same optimizer steps from the same weights on the same random
full-length batches: forward, mean next-token cross-entropy (float32 log-softmax), backward,
global-norm clipping to 1.0, AdamW (b1 0.9, b2 0.95, weight decay 0.1). The JAX side is exactly
`pplaw_jax.train.loop.Trainer.step` on a mesh over the local devices (batch copied from host each
step, loss fetched each step, as in `fit`). The PyTorch side is transformers'
`AutoModelForCausalLM` on the same weights (the JAX model exported with `save_hf_checkpoint`),
`torch.optim.AdamW`, all CPU threads. `small` is a randomly initialised 4-layer Llama;
`smollm2-135m-instruct` is the real model (GGUF, dequantized to dense float32).

Step times are the median of `--steps` timed steps after one warm-up step (which includes JAX
compilation), alternating JAX and PyTorch so background load hits both alike. Tokens/s counts
`batch * seq_len` tokens per step. MFU = `flops_per_token(seq_len, training=True)` (the PaLM
6N + 12LHQT count) x tokens/s divided by the peak FLOP/s of a square matmul of the same dtype timed
in the same process (the larger of the JAX and PyTorch figures). The first-step losses of both
frameworks are printed: they agree when the two compute the same step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

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


def matmul_peak(n: int, dtype: str, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of an n x n x n matmul in JAX and in PyTorch (best of `repeats`)."""
    import torch

    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (n, n), dtype=jnp.dtype(dtype))
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype=jnp.dtype(dtype))
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    ta, tb = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    ta @ tb
    out = {}
    for name, fn in (("jax", lambda: mm(a, b).block_until_ready()), ("torch", lambda: ta @ tb)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = 2.0 * n**3 / best
    return out


def load(name: str, dtype: str):
    """(config, JAX model in `dtype` compute with float32 weights, HF dir of the same weights, tempdir)."""
    from pplaw_jax.models import ModelConfig, init_model, load_hf_checkpoint, load_model, save_hf_checkpoint

    tmp = tempfile.TemporaryDirectory(prefix="train_throughput_")
    hf_dir = os.path.join(tmp.name, "hf")
    if name == "small":
        config = ModelConfig.from_hf(SMALL)
        save_hf_checkpoint(init_model(config, seed=0), config, None, hf_dir)
    else:
        loaded = load_model(name)
        config = loaded.config
        save_hf_checkpoint(loaded.model, config, None, hf_dir)  # dense float32 copy for both sides
    _, model = load_hf_checkpoint(hf_dir, dtype=jnp.dtype(dtype), param_dtype=jnp.float32)
    return config, model, hf_dir, tmp


def jax_stepper(model, ids: np.ndarray):
    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.train.loop import Trainer
    from pplaw_jax.train.optim import make_optimizer

    mesh = make_mesh("data=-1,fsdp=1,tensor=1", devices=jax.local_devices())
    trainer = Trainer(model, mesh, make_optimizer(lambda _: LR, weight_decay=WD, b1=BETAS[0], b2=BETAS[1], clip_norm=CLIP))
    lengths = np.full(ids.shape[0], ids.shape[1], dtype=np.int32)

    def step() -> float:
        stats = trainer.step(trainer.put(ids), trainer.put(lengths))
        return float(stats["train_loss"])

    return step


def torch_stepper(hf_dir: str, ids: np.ndarray, dtype: str):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD, eps=1e-8)
    x = torch.from_numpy(ids.astype(np.int64))

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(os.cpu_count())
    devices = jax.local_devices()
    env = {
        "platform": jax.default_backend(),
        "device": str(devices[0].device_kind),
        "n_devices": len(devices),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "batch": args.batch_size,
        "seq_len": args.seq_len,
        "dtype": args.dtype,
        "timed_steps": args.steps,
    }
    print(json.dumps(env), file=sys.stderr)
    peaks = matmul_peak(args.matmul_size, args.dtype)
    peak = max(peaks.values())
    rows = []
    for name in args.models.split(","):
        config, model, hf_dir, tmp = load(name, args.dtype)
        rng = np.random.default_rng(0)
        ids = rng.integers(0, config.vocab_size, size=(args.batch_size, args.seq_len), dtype=np.int32)
        steppers = {"jax": jax_stepper(model, ids)}
        if not args.no_torch:
            steppers["torch"] = torch_stepper(hf_dir, ids, args.dtype)
        first = {k: timed(s) for k, s in steppers.items()}  # warm-up (JAX compiles here)
        times = {k: [] for k in steppers}
        for _ in range(args.steps):
            for k, s in steppers.items():
                times[k].append(timed(s)[0])
        tokens = args.batch_size * args.seq_len
        flops = config.flops_per_token(args.seq_len, training=True) * tokens
        row = {"model": name, "params_M": config.num_params() / 1e6, "flops_per_step": flops}
        for k in steppers:
            sec = statistics.median(times[k])
            row.update({f"{k}_step_s": sec, f"{k}_tok_s": tokens / sec, f"{k}_mfu": flops / sec / peak,
                        f"{k}_first_step_s": first[k][0], f"{k}_first_loss": first[k][1]})  # fmt: skip
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        del steppers, model
        tmp.cleanup()

    print(f"\n{env['platform']} ({env['device']} x{env['n_devices']}, {env['cpu_count']} CPUs), {args.dtype}, "
          f"batch {args.batch_size} x seq {args.seq_len}, median of {args.steps} steps")  # fmt: skip
    print("matmul peak: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()))
    print("| model | params | JAX tok/s | PyTorch tok/s | JAX/PyTorch | JAX MFU | PyTorch MFU | first loss JAX / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = (f"{r['torch_tok_s']:,.0f} | {r['jax_tok_s'] / r['torch_tok_s']:.2f}x | {r['jax_mfu']:.1%} | "
             f"{r['torch_mfu']:.1%} | {r['jax_first_loss']:.5f} / {r['torch_first_loss']:.5f}"
             if "torch_tok_s" in r else f"- | - | {r['jax_mfu']:.1%} | - | {r['jax_first_loss']:.5f}")  # fmt: skip
        print(f"| {r['model']} | {r['params_M']:.1f}M | {r['jax_tok_s']:,.0f} | {t} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": env, "matmul_peak_flops": peaks, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
