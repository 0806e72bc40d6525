"""Wall time of a short `pplaw train` in a fresh process, with an empty and with a warm persistent
compilation cache (``PPLAW_COMPILATION_CACHE``): what the second and later CPT runs of a study save.

The run is the quickstart's CPT run (its scratch Llama, seq_len 128, batch 8) for a few steps, so
compilation is a large share of it, as in the short law-fitting runs of a study. Each measurement
is a separate process; cold (cache directory emptied first) and warm runs are alternated, and the
best of ``--repeats`` is reported for each.

    PYTHONPATH=. python benchmarks/compile_cache.py [--repeats 3] [--steps 5] \
        [--out benchmarks/results/compile_cache.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    from pplaw_jax.data.cpython_docs import write_cpython_docs
    from pplaw_jax.train.scratch import train_tokenizer

    quickstart = yaml.safe_load(Path("experiments/configs/quickstart.yaml").read_text())
    scratch = quickstart["scratch"]
    work = Path(tempfile.mkdtemp(prefix="compile_cache_"))
    data = write_cpython_docs(work / "data")
    train_tokenizer(data["general_train"], scratch["vocab_size"], work / "tok", max_docs=200)
    (work / "cfg.json").write_text(
        json.dumps({**scratch["hf_config"], "vocab_size": scratch["vocab_size"], "max_position_embeddings": 512})
    )
    cache = work / "cache"
    times: dict[str, list[float]] = {"cold": [], "warm": []}
    for r in range(args.repeats):
        for kind in ("cold", "warm"):
            if kind == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            out = work / f"run_{kind}_{r}"
            cmd = [
                sys.executable,
                "-m",
                "pplaw_jax.cli",
                "train",
                "--model",
                f"scratch:{work / 'cfg.json'}",
                "--tokenizer",
                str(work / "tok"),
                "--data",
                data["domain_train"],
                "--out",
                str(out),
                "--steps",
                str(args.steps),
                "--seq-len",
                "128",
                "--batch-size",
                "8",
                "--lr",
                "1e-3",
            ]
            env = {**os.environ, "PPLAW_COMPILATION_CACHE": str(cache)}
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[kind].append(time.perf_counter() - t0)
            print(f"{kind} run {r}: {times[kind][-1]:.2f} s", file=sys.stderr)
    result = {
        "command": " ".join(sys.argv),
        "steps": args.steps,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cold_s": times["cold"],
        "warm_s": times["warm"],
        "best_cold_s": min(times["cold"]),
        "best_warm_s": min(times["warm"]),
        "saved_s": min(times["cold"]) - min(times["warm"]),
        "cache_entries": len(list(cache.iterdir())) if cache.exists() else 0,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
