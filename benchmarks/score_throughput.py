"""Throughput of `pplaw score`'s jitted forward vs transformers/PyTorch, and model FLOP utilisation.

    PYTHONPATH=. python benchmarks/score_throughput.py [--model smollm2-135m-instruct]
        [--shapes 4x128,2x512] [--dtypes float32] [--runs 3] [--repeats 3] [--matmul-size 1024]
        [--no-torch] [--out results.json]

For each batch shape B x T, both frameworks compute the same thing on the same random token ids:
per-row summed next-token NLL (log-softmax in float32) of a full (unpadded) batch. The JAX side
is exactly the function `pplaw score` runs (`landscape.score.make_score_fn` on a mesh over the local
devices, inputs copied from host each call, results fetched to host). The PyTorch side is
`AutoModelForCausalLM` on the very same weights (the model exported once with
`save_hf_checkpoint` to a temporary HF directory that both load, so both run dense weights) +
`cross_entropy`, under `inference_mode`.

Fairness: each framework runs in its own process with its default threading, processes
alternating jax, torch, jax, torch, ... for `--runs` rounds (`separate_processes.py`). In a
process, each shape is called once to warm up (JAX compiles there), then timed `--repeats` times;
a shape's figure is the best call over all rounds, and the table also gives the range of the
per-round JAX/PyTorch ratios (each round's best against the same round's), which shows the noise.
Model FLOPs per token come from `ModelConfig.flops_per_token(T, training=False)`; MFU divides
achieved model FLOP/s by the best square matmul rate of the same dtype (`--matmul-size`) that
either framework reached in any of its processes, i.e. what this hardware demonstrably reaches.
The two NLLs are compared (max relative difference), so the table also shows the frameworks agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from separate_processes import (  # noqa: E402
    FRAMEWORKS,
    best_time,
    fmt_load,
    framework_info,
    jax_matmul_peak,
    loadavg,
    machine,
    run_alternating,
    spread,
    torch_matmul_peak,
)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in s.lower().split("x")) for s in text.split(",") if s]


def token_ids(batch: int, seq_len: int, vocab_size: int) -> np.ndarray:
    """The benchmark's input for a shape: the same in every worker."""
    return np.random.default_rng(batch * 10007 + seq_len).integers(0, vocab_size, size=(batch, seq_len), dtype=np.int32)


# ---------------------------------------------------------------------------------- workers
def jax_worker(hf_dir: str, dtype: str, shapes, repeats: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.landscape.score import make_score_fn
    from pplaw_jax.models import load_model

    loaded = load_model(hf_dir, dtype=dtype)
    score_fn = make_score_fn(loaded.model, make_mesh("data=-1,fsdp=1,tensor=1"))
    rows, nlls = [], {}
    for batch, seq_len in shapes:
        ids = token_ids(batch, seq_len, loaded.config.vocab_size)
        mask = np.ones_like(ids)

        def run(ids=ids, mask=mask):
            return np.asarray(score_fn(ids, mask)[0])

        first, _ = best_time(run, 1)  # compiles
        best, times = best_time(run, repeats)
        nlls[f"{batch}x{seq_len}"] = run()
        rows.append({"batch": batch, "seq_len": seq_len, "first_s": first, "best_s": best, "times_s": times})
    return rows, nlls


def torch_worker(hf_dir: str, dtype: str, shapes, repeats: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    import torch
    import transformers

    # dense weights: transformers 5 would keep GGUF weights packed and dequantize in every matmul
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, dtype)).eval()
    rows, nlls = [], {}
    for batch, seq_len in shapes:
        ids = torch.from_numpy(token_ids(batch, seq_len, model.config.vocab_size).astype(np.int64))

        def run(ids=ids):  # per-row summed NLL, log-softmax in float32: the twin of `sequence_nll`
            with torch.inference_mode():
                logits = model(ids).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
                return nll.sum(-1).numpy()

        first, _ = best_time(run, 1)
        best, times = best_time(run, repeats)
        nlls[f"{batch}x{seq_len}"] = run()
        rows.append({"batch": batch, "seq_len": seq_len, "first_s": first, "best_s": best, "times_s": times})
    return rows, nlls


def worker(args: argparse.Namespace) -> int:
    """One framework, one process: the matmul peak per dtype, then every shape per dtype."""
    shapes = parse_shapes(args.shapes)
    peak_fn = jax_matmul_peak if args.worker == "jax" else torch_matmul_peak
    run = jax_worker if args.worker == "jax" else torch_worker
    out = {"framework": args.worker, "info": framework_info(args.worker), "dtypes": {}}
    for dtype in args.dtypes.split(","):
        peak = peak_fn(args.matmul_size, dtype, args.repeats)
        rows, nlls = run(args.hf_dir, dtype, shapes, args.repeats)
        peak = max(peak, peak_fn(args.matmul_size, dtype, args.repeats))  # again after: one busy moment
        nll_file = f"{args.worker_out}.{dtype}.npz"
        np.savez(nll_file, **nlls)
        out["dtypes"][dtype] = {"matmul_peak": peak, "rows": rows, "nll_file": nll_file}
    Path(args.worker_out).write_text(json.dumps(out))
    return 0


# ---------------------------------------------------------------------------------- parent
def combine(results: dict[str, list[dict]], config, dtypes: list[str], shapes) -> tuple[list[dict], dict]:
    """Per dtype and shape: best time per framework over all runs, the per-run ratios, MFU
    against the best matmul peak of either framework, and the NLL agreement (last run's)."""
    rows, peaks = [], {}
    for dtype in dtypes:
        peaks[dtype] = {f: max(r["dtypes"][dtype]["matmul_peak"] for r in runs) for f, runs in results.items()}
        peak = max(peaks[dtype].values())
        nll = {f: np.load(runs[-1]["dtypes"][dtype]["nll_file"]) for f, runs in results.items()}
        for i, (batch, seq_len) in enumerate(shapes):
            key = f"{batch}x{seq_len}"
            flops = config.flops_per_token(seq_len, training=False) * batch * seq_len
            row = {"dtype": dtype, "batch": batch, "seq_len": seq_len, "model_flops": flops}
            for f, runs in results.items():
                per_run = [r["dtypes"][dtype]["rows"][i]["best_s"] for r in runs]
                best = min(per_run)
                row.update({f"{f}_s": best, f"{f}_s_per_run": per_run, f"{f}_tok_s": batch * seq_len / best,
                            f"{f}_mfu": flops / best / peak,
                            f"{f}_first_s": results[f][0]["dtypes"][dtype]["rows"][i]["first_s"]})  # fmt: skip
            if "torch" in results:
                row["speedup"] = row["torch_s"] / row["jax_s"]
                row["speedup_per_run"] = [t / j for j, t in zip(row["jax_s_per_run"], row["torch_s_per_run"])]
                ref = nll["torch"][key]
                row["max_rel_diff"] = float(np.max(np.abs(nll["jax"][key] - ref) / np.abs(ref)))
            rows.append(row)
    return rows, peaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--shapes", default="4x128,2x512", help="comma-separated BxT")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--runs", type=int, default=3, help="rounds of (jax process, torch process)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per shape in each process")
    parser.add_argument("--matmul-size", type=int, default=1024)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--hf-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    from pplaw_jax.models import load_model, save_hf_checkpoint

    shapes, dtypes = parse_shapes(args.shapes), args.dtypes.split(",")
    frameworks = ["jax"] if args.no_torch else list(FRAMEWORKS)
    env = {**machine(), "model": args.model, "runs": args.runs, "repeats": args.repeats,
           "matmul_size": args.matmul_size, "frameworks": frameworks}  # fmt: skip
    print(json.dumps(env), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="score_throughput_") as work:
        hf_dir = os.path.join(work, "hf")
        loaded = load_model(args.model, dtype="float32")
        save_hf_checkpoint(loaded.model, loaded.config, loaded.tokenizer, hf_dir)  # same weights, dense
        config = loaded.config
        del loaded
        worker_args = ["--hf-dir", hf_dir, "--shapes", args.shapes, "--dtypes", args.dtypes,
                       "--repeats", str(args.repeats), "--matmul-size", str(args.matmul_size)]  # fmt: skip
        results = run_alternating(os.path.abspath(__file__), worker_args, frameworks, args.runs, Path(work))
        rows, peaks = combine(results, config, dtypes, shapes)
    env["frameworks_info"] = {f: runs[0]["info"] for f, runs in results.items()}
    env["loadavg_at_end"] = loadavg()
    env["order"] = [(r["run"], f, r["started_at"]) for f, runs in results.items() for r in runs]
    print_table(rows, peaks, env)
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "matmul_peak_flops": peaks, "rows": rows}, indent=1))
    return 0


def print_table(rows, peaks, env) -> None:
    print(
        f"\n{env['model']} on {env['cpu']} ({env['cpu_count']} CPUs); separate processes, {env['runs']} "
        f"alternating rounds, best of {env['repeats']} calls per round; load average (1, 5, 15 min) "
        f"{fmt_load(env['loadavg_at_start'])} at the start, {fmt_load(env['loadavg_at_end'])} at the end"
    )
    for dtype, p in peaks.items():
        print(f"matmul peak {dtype}: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in p.items()))
    header = ("| dtype | BxT | JAX tok/s | PyTorch tok/s | JAX/PyTorch (best) | JAX/PyTorch per round | JAX MFU | "
              "PyTorch MFU | max rel diff |")  # fmt: skip
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        torch_cols = (
            f"{r['torch_tok_s']:,.0f} | {r['speedup']:.2f}x | {spread(r['speedup_per_run'])} | {r['jax_mfu']:.1%} | "
            f"{r['torch_mfu']:.1%} | {r['max_rel_diff']:.1e}"
            if "torch_s" in r
            else f"- | - | - | {r['jax_mfu']:.1%} | - | -"
        )
        print(f"| {r['dtype']} | {r['batch']}x{r['seq_len']} | {r['jax_tok_s']:,.0f} | {torch_cols} |")


if __name__ == "__main__":
    sys.exit(main())
