"""Wall time of the README's main job (`pplaw run experiments/configs/quickstart.yaml`) from an
empty output directory, with JAX's persistent compilation cache as `pplaw run` sets it (under
``OUT/.jax_cache``, empty at the start, so only compilations repeated within the study hit it) and
with it disabled (``PPLAW_COMPILATION_CACHE=off``).

Each study is a separate process in its own fresh ``out_dir``; the two settings are alternated
(``off`` first) and every run's total and per-stage times (from the ``=== stage`` log lines) are
reported, with the best total of each setting.

    PYTHONPATH=. python benchmarks/quickstart_cache.py [--repeats 1] [--out benchmarks/results/quickstart_cache.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGE_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d) pplaw\.run: === stage (\w+)")


def stage_seconds(stderr: str, total: float) -> dict[str, float]:
    """Seconds from each ``=== stage NAME`` line to the next (the last one to the end of the run)."""
    marks = []
    for line in stderr.splitlines():
        m = STAGE_LINE.match(line)
        if m:
            h, mi, s, name = m.groups()
            marks.append((name, int(h) * 3600 + int(mi) * 60 + int(s)))
    out = {}
    for (name, t), (_, t_next) in zip(marks, marks[1:]):
        out[name] = (t_next - t) % 86400
    if marks:  # the last stage gets the rest of the total (start-up before the first stage included)
        out[marks[-1][0]] = max(0.0, round(total - sum(out.values()), 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--config", default="experiments/configs/quickstart.yaml")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="quickstart_cache_"))
    runs = []
    for r in range(args.repeats):
        for cache in ("off", "on"):
            out = work / f"{cache}_{r}"
            env = dict(os.environ)
            env.pop("PPLAW_COMPILATION_CACHE", None)
            if cache == "off":
                env["PPLAW_COMPILATION_CACHE"] = "off"
            cmd = [sys.executable, "-m", "pplaw_jax.cli", "run", args.config, f"out_dir={out}"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            total = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            entries = len(list((out / ".jax_cache").iterdir())) if (out / ".jax_cache").exists() else 0
            runs.append(
                {
                    "cache": cache,
                    "repeat": r,
                    "total_s": round(total, 1),
                    "stages_s": stage_seconds(proc.stderr, total),
                    "cache_entries": entries,
                }
            )
            print(f"cache {cache}, repeat {r}: {total:.1f} s, {entries} cache entries", file=sys.stderr)
            shutil.rmtree(out, ignore_errors=True)
    best = {c: min(x["total_s"] for x in runs if x["cache"] == c) for c in ("off", "on")}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": args.config,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "best_off_s": best["off"],
        "best_on_s": best["on"],
        "saved_s": round(best["off"] - best["on"], 1),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
