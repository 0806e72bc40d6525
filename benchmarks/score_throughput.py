"""Throughput of `pplaw score`'s jitted forward vs transformers/PyTorch, and model FLOP utilisation.

    PYTHONPATH=. python benchmarks/score_throughput.py [--model smollm2-135m-instruct]
        [--shapes 1x512,4x512,8x1024] [--dtypes float32,bfloat16] [--bf16-shapes 1x512]
        [--repeats 3] [--matmul-size 2048] [--no-torch] [--out results.json]

For each batch shape B x T, both frameworks compute the same thing on the same random token ids:
per-row summed next-token NLL (log-softmax in float32) of a full (unpadded) batch. The JAX side
is exactly the function `pplaw score` runs (`landscape.score.make_score_fn` on a mesh over the local
devices, inputs copied from host each call, results fetched to host). The PyTorch side is
`AutoModelForCausalLM` on the very same weights (the JAX model exported with `save_hf_checkpoint`
to a temporary HF directory, so both run dense float32 / bfloat16 weights) + `cross_entropy`, under
`inference_mode`, with all CPU threads.

Times are the best of `--repeats` calls after one warm-up call (which includes compilation), JAX
and PyTorch alternating so background load hits both alike. Model FLOPs per token come from
`ModelConfig.flops_per_token(T, training=False)`; MFU divides achieved model FLOP/s by the matmul
peak of the same dtype timed in the same process: the faster of a square jnp matmul and a square
torch matmul (`--matmul-size`), i.e. what this hardware demonstrably reaches. The two NLLs are
compared (max relative difference) so the table also shows the frameworks agree.

The matmul peak is re-measured before every shape and the best value kept: on a shared machine a
single measurement can land in a busy moment and inflate MFU. PyTorch runs with
``OMP_WAIT_POLICY=PASSIVE`` unless set otherwise: with spinning OpenMP workers it was 3x slower here
on a loaded 2-core machine (and its spinning threads also slow the XLA threads in the same process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by libgomp when torch loads

import jax
import jax.numpy as jnp
import numpy as np


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in s.lower().split("x")) for s in text.split(",") if s]


def best_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def jax_matmul_peak(n: int, dtype: str, repeats: int) -> float:
    """FLOP/s of an n x n x n jnp matmul (best of `repeats`), the MFU denominator."""
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (n, n), dtype=jnp.dtype(dtype))
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype=jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()
    seconds, _ = best_time(lambda: matmul(a, b).block_until_ready(), repeats)
    return 2.0 * n**3 / seconds


def torch_matmul_peak(n: int, dtype: str, repeats: int) -> float:
    import torch

    tdtype = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=tdtype), torch.randn(n, n, dtype=tdtype)
    a @ b
    seconds, _ = best_time(lambda: a @ b, repeats)
    return 2.0 * n**3 / seconds


def load_torch_model(hf_dir: str, dtype: str):
    """Dense transformers model from an HF directory (transformers 5 keeps GGUF weights packed and
    dequantizes inside every matmul, which is not the dense float32 baseline we want)."""
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, dtype)).eval()


def torch_score(model, ids):
    """Per-row summed NLL, log-softmax in float32: the PyTorch twin of `sequence_nll`."""
    import torch

    with torch.inference_mode():
        logits = model(ids).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        return nll.sum(-1).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--shapes", default="1x512,4x512,8x1024", help="comma-separated BxT")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--bf16-shapes", default=None, help="shapes for bfloat16 (default: the first of --shapes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.landscape.score import make_score_fn
    from pplaw_jax.models import load_model, save_hf_checkpoint

    shapes = parse_shapes(args.shapes)
    bf16_shapes = parse_shapes(args.bf16_shapes) if args.bf16_shapes else shapes[:1]
    threads = os.cpu_count()
    if not args.no_torch:
        import torch

        torch.set_num_threads(threads)
    devices = jax.local_devices()
    mesh = make_mesh("data=-1,fsdp=1,tensor=1", devices=devices)
    env = {
        "platform": jax.default_backend(),
        "device": str(devices[0].device_kind),
        "n_devices": len(devices),
        "cpu_count": threads,
        "jax": jax.__version__,
        "torch": None if args.no_torch else __import__("torch").__version__,
        "model": args.model,
        "repeats": args.repeats,
    }
    print(json.dumps(env), file=sys.stderr)
    rows, peaks = [], {}
    first = load_model(args.model, dtype="float32")
    export = tempfile.TemporaryDirectory(prefix="score_throughput_")
    hf_dir = os.path.join(export.name, "hf")
    save_hf_checkpoint(first.model, first.config, first.tokenizer, hf_dir)  # same weights, dense
    for dtype in args.dtypes.split(","):
        loaded = first if dtype == "float32" else load_model(hf_dir, dtype=dtype)
        score_fn = make_score_fn(loaded.model, mesh)
        torch_model = None if args.no_torch else load_torch_model(hf_dir, dtype)
        peaks[dtype] = {"jax": 0.0, **({} if torch_model is None else {"torch": 0.0})}

        def update_peaks():
            peaks[dtype]["jax"] = max(peaks[dtype]["jax"], jax_matmul_peak(args.matmul_size, dtype, args.repeats))
            if torch_model is not None:
                peaks[dtype]["torch"] = max(peaks[dtype]["torch"], torch_matmul_peak(args.matmul_size, dtype, args.repeats))

        dtype_rows = []
        for batch, seq_len in bf16_shapes if dtype == "bfloat16" else shapes:
            update_peaks()
            rng = np.random.default_rng(batch * 10007 + seq_len)
            ids = rng.integers(0, loaded.config.vocab_size, size=(batch, seq_len), dtype=np.int32)
            mask = np.ones_like(ids)

            def run_jax():
                nll, _ = score_fn(ids, mask)
                return np.asarray(nll)

            def run_torch():
                return torch_score(torch_model, torch.from_numpy(ids.astype(np.int64)))

            t0 = time.perf_counter()
            jax_nll = run_jax()  # compile + first run
            compile_s = time.perf_counter() - t0
            torch_nll = None if torch_model is None else run_torch()
            jax_times, torch_times = [], []
            for _ in range(args.repeats):  # alternate, so background load hits both alike
                jax_times.append(best_time(run_jax, 1)[0])
                if torch_model is not None:
                    torch_times.append(best_time(run_torch, 1)[0])
            row = {
                "dtype": dtype,
                "batch": batch,
                "seq_len": seq_len,
                "model_flops": loaded.config.flops_per_token(seq_len, training=False) * batch * seq_len,
                "jax_s": min(jax_times),
                "jax_tok_s": batch * seq_len / min(jax_times),
                "jax_compile_and_first_s": compile_s,
            }
            if torch_model is not None:
                row.update(
                    torch_s=min(torch_times),
                    torch_tok_s=batch * seq_len / min(torch_times),
                    speedup=min(torch_times) / min(jax_times),
                    max_rel_diff=float(np.max(np.abs(jax_nll - torch_nll) / np.abs(torch_nll))),
                )
            dtype_rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        update_peaks()
        peak = max(peaks[dtype].values())  # the best matmul rate either framework reached here
        for row in dtype_rows:
            row["jax_mfu"] = row["model_flops"] / row["jax_s"] / peak
            if "torch_s" in row:
                row["torch_mfu"] = row["model_flops"] / row["torch_s"] / peak
        rows.extend(dtype_rows)
        del loaded, score_fn, torch_model
    del first
    export.cleanup()

    print_table(rows, peaks, env)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": env, "matmul_peak_flops": peaks, "rows": rows}, f, indent=2)
    return 0


def print_table(rows, peaks, env) -> None:
    print(f"\n{env['model']} on {env['platform']} ({env['device']} x{env['n_devices']}, {env['cpu_count']} CPUs); "
          f"best of {env['repeats']}")
    for dtype, p in peaks.items():
        print(f"matmul peak {dtype}: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in p.items()))
    header = "| dtype | BxT | JAX tok/s | PyTorch tok/s | JAX/PyTorch | JAX MFU | PyTorch MFU | max rel diff |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        torch_cols = (
            f"{r['torch_tok_s']:,.0f} | {r['speedup']:.2f}x | {r['jax_mfu']:.1%} | {r['torch_mfu']:.1%} | {r['max_rel_diff']:.1e}"
            if "torch_s" in r
            else f"- | - | {r['jax_mfu']:.1%} | - | -"
        )
        print(f"| {r['dtype']} | {r['batch']}x{r['seq_len']} | {r['jax_tok_s']:,.0f} | {torch_cols} |")


if __name__ == "__main__":
    sys.exit(main())
