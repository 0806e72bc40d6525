"""benchmarks/score_throughput.py and benchmarks/train_throughput.py on a tiny model (slow).

What makes the comparison fair is checked, not just that the scripts run: every measurement is a
separate process (distinct pids) that never loaded the other framework, processes alternate
jax, torch, jax, torch in time, both frameworks compute the same numbers (scoring NLLs agree,
first training losses agree), and the figures are the best over the runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_hf import save_tiny_llama

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_benchmark(script: str, args: list[str], out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the workers' default devices
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "| JAX tok/s |" in result.stdout
    return json.loads(out.read_text())


def check_separate_alternating(env: dict, runs: int) -> None:
    order = sorted(env["order"], key=lambda x: x[2])
    assert [(run, f) for run, f, _ in order] == [(r, f) for r in range(runs) for f in ("jax", "torch")]
    for framework, info in env["frameworks_info"].items():
        assert info["other_framework_loaded"] is False, framework
    assert env["frameworks_info"]["jax"]["pid"] != env["frameworks_info"]["torch"]["pid"]
    assert env["frameworks_info"]["torch"]["torch_num_threads"] >= 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("bench") / "model", seed=5)


def test_score_throughput_separate_processes(tiny_model, tmp_path):
    data = run_benchmark(
        "score_throughput.py",
        ["--model", str(tiny_model), "--shapes", "2x32,4x32", "--runs", "2", "--repeats", "2", "--matmul-size", "256"],
        tmp_path / "s.json",
    )
    check_separate_alternating(data["env"], runs=2)
    assert [(r["batch"], r["seq_len"]) for r in data["rows"]] == [(2, 32), (4, 32)]
    for row in data["rows"]:
        assert row["max_rel_diff"] < 1e-4  # the same forward in both frameworks
        for f in ("jax", "torch"):
            assert len(row[f"{f}_s_per_run"]) == 2 and row[f"{f}_s"] == min(row[f"{f}_s_per_run"]) > 0
            assert 0 < row[f"{f}_mfu"] < 1
        assert row["speedup"] == pytest.approx(row["torch_s"] / row["jax_s"])


def test_train_throughput_separate_processes(tiny_model, tmp_path):
    data = run_benchmark("train_throughput.py", ["--models", str(tiny_model), "--batch-size", "2", "--seq-len", "32",
                                                 "--steps", "2", "--runs", "1", "--matmul-size", "256"],
                         tmp_path / "t.json")  # fmt: skip
    check_separate_alternating(data["env"], runs=1)
    (row,) = data["rows"]
    assert row["jax_first_loss"] == pytest.approx(row["torch_first_loss"], rel=1e-4)  # the same step
    for f in ("jax", "torch"):
        assert row[f"{f}_step_s"] > 0 and 0 < row[f"{f}_mfu"] < 1
