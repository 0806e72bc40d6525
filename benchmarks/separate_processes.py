"""Run JAX and PyTorch benchmark workers in separate processes, alternated, for a fair comparison.

In one process the two frameworks handicap each other: both thread pools compete for the cores,
and whichever framework loads second runs with the other's threads parked (or spinning) beside
it. Here every measurement is a fresh process running one framework with its default threading
(neither `torch.set_num_threads` nor OpenMP variables are touched), and processes alternate
jax, torch, jax, torch, ... so that background load on a shared machine hits both alike. A worker
is the calling script itself, started with `--worker FRAMEWORK --worker-out FILE`; it writes its
measurements as JSON to FILE.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

FRAMEWORKS = ("jax", "torch")


def run_alternating(
    script: str, args: list[str], frameworks: list[str], runs: int, work: Path
) -> dict[str, list[dict]]:
    """Run `python SCRIPT --worker F --worker-out FILE ARGS` for F in `frameworks`, `runs` rounds,
    alternating; returns {framework: [each run's JSON, in order]}. A failed worker stops the
    benchmark with its output."""
    results: dict[str, list[dict]] = {f: [] for f in frameworks}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for run in range(runs):
        for framework in frameworks:
            out = work / f"{framework}-{run}.json"
            cmd = [sys.executable, script, "--worker", framework, "--worker-out", str(out), *args]
            started, t0 = time.time(), time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{framework} worker (run {run}) exited {proc.returncode}:\n{proc.stderr[-4000:]}")
            result = json.loads(out.read_text())
            result.update(run=run, started_at=started, process_wall_s=time.perf_counter() - t0)
            results[framework].append(result)
            print(f"run {run} {framework}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return results


def machine() -> dict:
    """What the numbers were measured on (CPU model and vector extensions, cores, load at start)."""
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
        flags = next((line for line in info if line.startswith("flags")), "") + " "
    except OSError:
        pass
    isa = [x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {x} " in flags]
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "isa": isa, "loadavg_at_start": loadavg(),
            "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages (how busy the shared machine was), where the OS tells."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def best_time(fn, repeats: int) -> tuple[float, list[float]]:
    """(best, all) seconds of `repeats` calls of `fn` (which must block until its work is done)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def jax_matmul_peak(n: int, dtype: str, repeats: int) -> float:
    """FLOP/s of an n x n x n jnp matmul (best of `repeats`) in this process."""
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (n, n), dtype=jnp.dtype(dtype))
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype=jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()
    seconds, _ = best_time(lambda: matmul(a, b).block_until_ready(), repeats)
    return 2.0 * n**3 / seconds


def torch_matmul_peak(n: int, dtype: str, repeats: int) -> float:
    """FLOP/s of an n x n x n torch matmul (best of `repeats`) in this process."""
    import torch

    tdtype = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=tdtype), torch.randn(n, n, dtype=tdtype)
    a @ b
    seconds, _ = best_time(lambda: a @ b, repeats)
    return 2.0 * n**3 / seconds


def framework_info(framework: str) -> dict:
    """The worker's framework version and threading (as the framework set it by default), its
    process id, and whether the other framework was loaded into it (it must not be)."""
    other = "jax" if framework == "torch" else "torch"
    info = {"pid": os.getpid(), "other_framework_loaded": other in sys.modules}
    if framework == "torch":
        import torch

        return {
            **info,
            "version": torch.__version__,
            "torch_num_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        }
    import jax

    return {**info, "version": jax.__version__, "jax_devices": [str(d) for d in jax.local_devices()],
            "XLA_FLAGS": os.environ.get("XLA_FLAGS")}  # fmt: skip


def fmt_load(load: list[float] | None) -> str:
    return "n/a" if load is None else " / ".join(f"{x:.1f}" for x in load)


def spread(values: list[float]) -> str:
    """ "min–max" of a list, for the table (the run-to-run noise on a shared machine)."""
    return f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"
