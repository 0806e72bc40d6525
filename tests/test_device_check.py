"""benchmarks/device_check.sh, the prepared accelerator check, run on CPU in small mode.

The whole command runs (set-up logic with `PYTHON` given, so nothing is installed; the probe
child; one model child) on one small shape, and its JSON must hold every field with sane values:
positive throughput, MFU in (0, 1] against the matmul peak measured in the same run, the model
FLOPs the project's `ModelConfig.flops_per_token` gives. The parent's bookkeeping (what a killed
child never reported, the targets, the published-peak table, job planning) is checked on
synthetic records.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pplaw_jax.models import ModelConfig

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("device_check", REPO / "benchmarks" / "device_check.py")
dc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dc)


def test_device_check_small_on_cpu(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "XLA_FLAGS")}
    env.update(PYTHON=sys.executable, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), str(out),
                             "--models", "qwen2.5-0.5b", "--shapes", "2x64"],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    log = (out / "device_check.log").read_text() if (out / "device_check.log").exists() else ""
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{log[-3000:]}"
    assert f"python: {sys.executable}" in (out / "device_check_setup.log").read_text()  # nothing installed

    data = json.loads((out / "device_check.json").read_text())
    assert data["complete"] and data["small"] and data["dtype"] == "bfloat16"
    assert data["env"]["platform"] == "cpu" and data["env"]["jax"]
    peak = data["peak_flops"]
    assert peak["published"] is None  # a CPU has no entry in the table
    assert len(peak["matmul_runs"]) == 3  # probe; model child's start and end
    assert peak["measured_matmul"] == max(peak["matmul_runs"]) > 1e8

    rows = {(r["mode"], r["batch"], r["seq_len"]): r for r in data["results"]}
    assert set(rows) == {("forward", 2, 64), ("train", 2, 64)}
    config = ModelConfig.from_hf(dc.small_config(dc.MODELS["qwen2.5-0.5b"]))
    assert config.attention_bias and config.tie_word_embeddings and config.num_kv_heads == 2
    for (mode, batch, seq_len), r in rows.items():
        assert r["status"] == "ok", r
        assert r["model"] == "qwen2.5-0.5b" and r["weights"] == "random-init" and r["attention"] == "xla"
        assert r["params"] == config.num_params()
        flops = config.flops_per_token(seq_len, training=mode == "train") * batch * seq_len
        assert r["model_flops_per_call"] == pytest.approx(flops)
        assert len(r["times_s"]) == 3 and r["best_s"] == min(r["times_s"]) > 0
        assert r["first_call_s"] >= r["best_s"] and r["compile_s"] == pytest.approx(r["first_call_s"] - r["best_s"])
        assert r["tokens_per_s"] == pytest.approx(batch * seq_len / r["best_s"])
        assert 0 < r["mfu_measured_peak"] <= 1, r
        assert r["mfu_measured_peak"] == pytest.approx(r["achieved_flops"] / peak["measured_matmul"])
        assert r["mfu_published_peak"] is None
    assert rows[("train", 2, 64)]["remat"] is False  # no device memory figure on CPU: no remat
    assert [t["status"] for t in data["targets"]] == ["not measured (small mode)"] * 2
    table = (out / "device_check.md").read_text()
    assert "| qwen2.5-0.5b | xla | train | 2x64 |" in table and "| qwen2.5-0.5b | xla | forward | 2x64 |" in table


def test_published_peaks_by_device_kind():
    assert dc.published_peak_flops("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert dc.published_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert dc.published_peak_flops("NVIDIA H200") == 989e12
    assert dc.published_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert dc.published_peak_flops("TPU v4") == 275e12
    assert dc.published_peak_flops("TPU v5 lite") == 197e12
    assert dc.published_peak_flops("TPU v5p") == 459e12
    assert dc.published_peak_flops("TPU v6 lite") == 918e12
    assert dc.published_peak_flops("cpu") is None
    assert dc.published_peak_flops("NVIDIA GeForce RTX 4090") is None


def test_shapes_and_job_plan():
    assert dc.parse_shapes("4x2048,16X2048") == [(4, 2048), (16, 2048)]
    for bad in ("4x", "x2048", "0x64", "4*64", "4x1"):
        with pytest.raises(ValueError, match="BATCHxSEQ_LEN"):
            dc.parse_shapes(bad)
    everything = list(dc.MODELS)
    gpu = dc.plan_jobs({"platform": "gpu"}, False, everything)
    assert [j["id"] for j in gpu] == ["qwen2.5-0.5b/xla", "qwen2.5-0.5b/cudnn", "smollm2-135m/xla", "qwen2.5-1.5b/xla"]
    # the targets' shape first, then forward and train shapes in growing size
    assert gpu[0]["measurements"] == [["forward", 16, 2048], ["train", 16, 2048], ["forward", 4, 2048],
                                      ["forward", 8, 4096], ["train", 4, 2048], ["train", 8, 4096]]  # fmt: skip
    assert gpu[2]["measurements"] == [["forward", 4, 2048], ["forward", 16, 2048], ["forward", 8, 4096],
                                      ["train", 4, 2048], ["train", 16, 2048], ["train", 8, 4096]]  # fmt: skip
    assert gpu[1]["measurements"] == [["forward", 16, 2048], ["train", 16, 2048]]
    assert gpu[1]["remat"] == "try-without" and gpu[0]["remat"] == "estimate"
    tpu = dc.plan_jobs({"platform": "tpu"}, False, everything)
    assert "qwen2.5-0.5b/cudnn" not in [j["id"] for j in tpu]  # cuDNN only on NVIDIA GPUs
    small = dc.plan_jobs({"platform": "gpu"}, True, ["smollm2-135m"], [(2, 32)])
    assert [(j["id"], j["measurements"]) for j in small] == [
        ("smollm2-135m/xla", [["forward", 2, 32], ["train", 2, 32]])
    ]


def test_report_marks_unreported_work_and_targets(tmp_path):
    report = dc.Report(tmp_path, small=False, budget_s=100.0)
    job = dc.plan_jobs({"platform": "tpu"}, False, ["qwen2.5-0.5b"])[0]
    report.jobs.append(job)
    records = [
        {"job": "probe", "kind": "env", "platform": "tpu", "device_kind": "TPU v5 lite", "jax": "x"},
        {"job": "probe", "kind": "matmul_peak", "flops": 150e12},
        {"job": job["id"], "kind": "matmul_peak", "flops": 160e12},
    ]
    ok = {"job": job["id"], "kind": "measurement", "model": "qwen2.5-0.5b", "attention": "xla", "status": "ok",
          "tokens_per_s": 1.0, "compile_s": 1.0, "peak_bytes_in_use": 2**30}  # fmt: skip
    records.append({**ok, "mode": "forward", "batch": 16, "seq_len": 2048, "achieved_flops": 120e12})
    records.append({**ok, "mode": "train", "batch": 16, "seq_len": 2048, "achieved_flops": 59.1e12})
    report.results.write_text("".join(json.dumps(r) + "\n" for r in records))

    data = report.build(complete=False)
    assert data["peak_flops"]["published"] == 197e12 and data["peak_flops"]["measured_matmul"] == 160e12
    fwd = [r for r in data["results"] if r["mode"] == "forward" and r["batch"] == 16][0]
    assert fwd["mfu_published_peak"] == pytest.approx(120 / 197) and fwd["mfu_measured_peak"] == pytest.approx(0.75)
    assert len(data["results"]) == 2  # the child is still running: nothing marked yet
    forward_target, train_target = data["targets"]
    assert forward_target["met"] is True and train_target["met"] is False  # 59.1/197 = 30% < 35%

    job["finished"] = "killed at its deadline (time budget)"
    data = report.write()
    not_run = sorted((r["mode"], r["batch"], r["seq_len"]) for r in data["results"] if r["status"] == "not_run")
    assert not_run == [("forward", 4, 2048), ("forward", 8, 4096), ("train", 4, 2048), ("train", 8, 4096)]
    assert json.loads((tmp_path / "device_check.json").read_text())["results"] == data["results"]
    assert "NOT met" in (tmp_path / "device_check.md").read_text()
