"""Compile time of the jitted forward pass, unrolled vs scanned decoder layers, at 4 and 32 layers.

An unrolled model traces and compiles one copy of the layer per layer, so its compile time grows
with depth; `scan_layers=True` traces one layer and XLA compiles one loop body. The model is tiny
(width 64, 4 heads, 2 KV heads, MLP 128, vocab 256; batch 8 x 128 tokens) so compilation, not
arithmetic, is what is measured. Each measurement runs in a fresh Python process (nothing cached
in memory, no persistent compilation cache), built abstractly (`nnx.eval_shape`, no weights), and
times `jax.jit(forward).lower(...)` (tracing to StableHLO) and `.compile()` (XLA) separately; the
best of `--repeats` processes is reported per configuration (by total).

    PYTHONPATH=. python benchmarks/compile_time.py [--layers 4 32] [--repeats 3] [--remat none] \
        [--out benchmarks/results/compile_time.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

WIDTH, HEADS, KV_HEADS, MLP, VOCAB, BATCH, SEQ = 64, 4, 2, 128, 256, 8, 128


def measure(layers: int, scan: bool, remat: str) -> dict:
    """Lower and compile the forward of a `layers`-deep tiny model in this process (seconds)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from pplaw_jax.models import LlamaForCausalLM, ModelConfig

    config = ModelConfig(VOCAB, WIDTH, MLP, layers, HEADS, KV_HEADS, WIDTH // HEADS)
    abstract = nnx.eval_shape(lambda: LlamaForCausalLM(config, rngs=nnx.Rngs(0), scan_layers=scan, remat=remat))
    graphdef, state = nnx.split(abstract)
    ids = jax.ShapeDtypeStruct((BATCH, SEQ), jnp.int32)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    t0 = time.perf_counter()
    lowered = forward.lower(state, ids)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "total_s": t2 - t0,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }


def _cpu_model() -> str:
    """The CPU model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--remat", default="none", help="the models' remat policy (none, full, dots_saveable)")
    parser.add_argument("--out", default=None, help="write the results as a markdown table here")
    parser.add_argument("--worker", nargs=2, metavar=("LAYERS", "SCAN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(int(args.worker[0]), args.worker[1] == "1", args.remat)))
        return

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XLA_FLAGS", "PPLAW_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")
    }
    rows = []
    for layers in args.layers:
        for scan in (False, True):
            runs = []
            for r in range(args.repeats):
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", str(layers), "1" if scan else "0", "--remat", args.remat],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
                print(
                    f"layers {layers} {'scanned' if scan else 'unrolled'} run {r}: {runs[-1]['total_s']:.2f} s",
                    file=sys.stderr,
                )
            best = min(runs, key=lambda m: m["total_s"])
            rows.append(
                {
                    "layers": layers,
                    "layout": "scanned" if scan else "unrolled",
                    **best,
                    "all_total_s": [m["total_s"] for m in runs],
                }
            )

    first = rows[0]
    lines = [
        "# Compile time of the jitted forward: unrolled vs scanned decoder layers",
        "",
        "Produced by (in the repository root, with the venv active):",
        "",
        f"    PYTHONPATH=. python benchmarks/compile_time.py {' '.join(sys.argv[1:])}".rstrip(),
        "",
        f"Machine: {_cpu_model()}, {os.cpu_count()} CPU cores, 1-minute load average at the end "
        f"{os.getloadavg()[0]:.1f} (above the core count: the machine was shared with other jobs, so absolute "
        f"times are inflated and noisy); JAX {first['jax']} on {first['backend']} "
        f"({first['device']}). Model: width {WIDTH}, {HEADS} heads ({KV_HEADS} KV), MLP {MLP}, vocab {VOCAB}, "
        f"remat {args.remat}; input {BATCH} x {SEQ} tokens. "
        f"Each run is a fresh process; best of {args.repeats} by total.",
        "*lower*: tracing to StableHLO (`jit(...).lower`); *compile*: XLA (`.compile()`).",
        "",
        "| layers | layout | lower (s) | compile (s) | total (s) | all runs, total (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        runs = ", ".join(f"{t:.2f}" for t in row["all_total_s"])
        lines.append(
            f"| {row['layers']} | {row['layout']} | {row['lower_s']:.2f} | {row['compile_s']:.2f} | "
            f"{row['total_s']:.2f} | {runs} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
