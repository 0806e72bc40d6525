"""The sharded, resumable CPT loop.

The model is split once into a graph definition and two state pytrees, `params` (the
`nnx.Param`s, trained, float32 master weights) and `rest` (any other variables, frozen). The train
step is a pure function `(params, opt_state, rest, batch) -> (params, opt_state, metrics)` that
merges the model inside `jax.jit`, so shardings are explicit: parameters and their optimizer
moments follow `pplaw_jax.distributed`'s partition rules, batches are split by rows over
`data x fsdp`, and the old params/optimizer buffers are donated. Mixed precision is the model's
own: `load_model(..., dtype="bfloat16")` computes in bfloat16 on float32 parameters, so gradients
and the optimizer update are float32.

Resumption: `train_loop` restores the newest orbax checkpoint (if any), rewrites `metrics.jsonl` to that
step and replays the deterministic batch order from there, so a killed run, restarted with the
same command, reproduces an uninterrupted run's losses step for step.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pplaw_jax.config import TrainConfig
from pplaw_jax.errors import PplawError
from pplaw_jax.logs import get_logger, progress
from pplaw_jax.models.layers import remat_policy_name
from pplaw_jax.models.loss import token_nll
from pplaw_jax.models.sharded import ShardedLM, data_parallel_size, fetch, shared_jit, tree_key
from pplaw_jax.timing import Clock
from pplaw_jax.train.checkpoint import RunCheckpointer, abstract_like
from pplaw_jax.train.dataset import TokenSequences, batch_indices, eval_batches, gather
from pplaw_jax.train.metrics import MetricsLog
from pplaw_jax.train.optim import AdamW


def mean_loss(lm: ShardedLM, seqs: TokenSequences, batch_size: int) -> float:
    """Mean token NLL over every scored token of `seqs` (token-weighted, like the law's L)."""
    total, count = 0.0, 0
    for idx in eval_batches(len(seqs), batch_size):
        sum_nll, n = lm.nll(*gather(seqs, idx))
        total += float(np.sum(sum_nll, dtype=np.float64))
        count += int(np.sum(n))
    return total / max(count, 1)


class Trainer(ShardedLM):
    """ShardedLM plus an optimizer state and the jit-compiled train step.

    The step takes the learning rate as an argument (the run's schedule is evaluated on the host),
    so one compiled step serves every run of the same model, shardings and `optimizer` settings in
    a process (`models.sharded.shared_jit`)."""

    def __init__(self, model: nnx.Module, mesh, optimizer: AdamW):
        super().__init__(model, mesh)
        self.optimizer = optimizer
        replicated = NamedSharding(mesh, P())
        tx = optimizer.transform(0.0)  # the state's structure: the same at every learning rate
        abstract_opt = jax.eval_shape(tx.init, self.params)
        self.opt_shardings = optax.tree_map_params(
            tx, lambda _, s: s, abstract_opt, self.param_shardings, transform_non_params=lambda _: replicated
        )
        key = (optimizer, tree_key(self.opt_shardings), *self.state_key)
        init = shared_jit(("opt_init", *key), tx.init, out_shardings=self.opt_shardings)
        self.opt_state = init(self.params)
        graphdef = self.graphdef

        def train_step(params, opt_state, rest, input_ids, lengths, lr):
            def loss_fn(p):
                sum_nll, n = token_nll(nnx.merge(graphdef, p, rest)(input_ids), input_ids, lengths)
                total = jnp.sum(n)
                return jnp.sum(sum_nll) / jnp.maximum(total, 1), total

            (loss, n_tokens), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = optimizer.transform(lr).update(grads, opt_state, params)
            stats = {"train_loss": loss, "grad_norm": optax.tree.norm(grads), "n_tokens": n_tokens}
            return optax.apply_updates(params, updates), opt_state, stats

        self._train_step = shared_jit(
            ("train_step", *key),
            train_step,
            in_shardings=(
                self.param_shardings,
                self.opt_shardings,
                self.rest_shardings,
                self.tokens_sharding,
                self.rows_sharding,
                replicated,
            ),
            out_shardings=(self.param_shardings, self.opt_shardings, replicated),
            donate_argnums=(0, 1),
        )

    def state(self) -> dict:
        return {"params": self.params, "opt_state": self.opt_state}

    def abstract_state(self) -> dict:
        """Restore target: the state's shapes with this mesh's shardings."""
        return abstract_like(self.state(), {"params": self.param_shardings, "opt_state": self.opt_shardings})

    def load_state(self, state: dict) -> None:
        self.params, self.opt_state = state["params"], state["opt_state"]

    def step(self, input_ids: jax.Array, lengths: jax.Array, lr: float) -> dict:
        """One optimizer step on a placed batch at learning rate `lr`; returns device scalars
        (fetch when needed)."""
        self.params, self.opt_state, stats = self._train_step(
            self.params, self.opt_state, self.rest, input_ids, lengths, np.float32(lr)
        )
        return stats


# ---------------------------------------------------------------------- memory check
def _available_bytes() -> tuple[int, str] | None:
    """(bytes usable by one local device, what was measured), or None where nothing tells."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"{device.platform} device memory"
    # CPU devices share host RAM: each of n local devices gets 1/n of what is available.
    available = _available_host_bytes()
    if available is None:
        return None
    return available // len(jax.local_devices()), "available host RAM / local devices"


def _available_host_bytes() -> int | None:
    """Available host RAM: Linux's MemAvailable, else the POSIX count of free pages (other
    Unixes); None where the OS reports neither (macOS has no available-pages figure)."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_train_bytes(config, *, batch_size: int, seq_len: int, mesh, compute_bytes: int, remat: str | bool) -> int:
    """Rough per-device peak of a train step (bytes): state plus activations plus logits.

    State: float32 params, grads and two Adam moments (16 bytes/param), split over fsdp x tensor.
    Activations per layer (Korthikanti et al. 2022): `s*b*h*(17 + 5*a*s/h)` values kept for the
    backward pass, split over tensor. `remat` (`LlamaForCausalLM`'s policy, True = "full") keeps
    only each layer's input ("full") or its input and matmul outputs ("dots_saveable": q, k, v,
    attention scores and values, o, gate, up, down), plus one layer's full set while it is
    recomputed. Logits: float32 logits and their gradient, `2*s*b*V*4` bytes, plus a
    compute-dtype copy.
    """
    policy = remat_policy_name(remat)
    shard = mesh.shape["fsdp"] * mesh.shape["tensor"]
    b = batch_size / data_parallel_size(mesh)
    s, h, layers, a = seq_len, config.hidden_size, config.num_layers, config.num_heads
    q, kv, f = a * config.head_dim, config.num_kv_heads * config.head_dim, config.intermediate_size
    state = 16 * config.num_params() / shard
    per_layer = s * b * h * (17 + 5 * a * s / h) * compute_bytes / mesh.shape["tensor"]
    kept = {
        "none": per_layer,
        "full": s * b * h * compute_bytes,
        "dots_saveable": s * b * (h + (2 * q + 2 * kv + 2 * h + 2 * f + a * s) / mesh.shape["tensor"]) * compute_bytes,
    }[policy]
    acts = layers * kept + (0 if policy == "none" else per_layer)
    logits = s * b * config.vocab_size * (8 + compute_bytes)
    return int(state + acts + logits)


def check_memory(config, *, batch_size: int, seq_len: int, mesh, compute_bytes: int, remat: str | bool) -> None:
    """PplawError before training when the rough estimate exceeds what one device has."""
    need = estimate_train_bytes(
        config, batch_size=batch_size, seq_len=seq_len, mesh=mesh, compute_bytes=compute_bytes, remat=remat
    )
    available = _available_bytes()
    if available is None:
        get_logger("train").info(
            f"memory check skipped: this OS reports no available memory "
            f"(a train step needs roughly {need / 2**30:.1f} GiB per device)"
        )
        return
    have, what = available
    if need > have:
        raise PplawError(
            f"a train step needs roughly {need / 2**30:.1f} GiB per device but {what} is {have / 2**30:.1f} GiB "
            f"(batch {batch_size}, seq_len {seq_len}, {config.num_params() / 1e6:.0f}M params, "
            f"mesh {dict(mesh.shape)}); "
            "lower --batch-size or --seq-len, add --remat, use --dtype bfloat16, or shard over more fsdp devices"
        )


# ---------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs beyond the model and data (see `pplaw train --help`)."""

    num_steps: int
    batch_size: int
    seed: int
    eval_every: int = 0  # 0: evaluate only at the end
    eval_batch_size: int = 8
    save_every: int = 100
    keep: int = 2
    log_every: int = 10  # fetch the step metrics to the host every K steps (one device sync)

    @classmethod
    def from_config(cls, cfg: TrainConfig, *, num_steps: int, seed: int) -> LoopSettings:
        """The loop's settings of a `pplaw train` configuration (its step count is derived from
        the data, `optim.total_steps`)."""
        return cls(
            num_steps=num_steps,
            batch_size=cfg.batch_size,
            seed=seed,
            eval_every=cfg.eval_every,
            eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
            save_every=cfg.save_every,
            keep=cfg.keep,
            log_every=cfg.log_every,
        )


@dataclass(frozen=True)
class Hook:
    """A callback of the training loop (as Levanter's trainer hooks): ``fn(step)`` after every
    `every`-th step and after the last one (``every=0``: the last one only)."""

    every: int
    fn: Callable[[int], None]

    def due(self, step: int, last: bool) -> bool:
        return last or (self.every > 0 and step % self.every == 0)


def eval_losses(lm: ShardedLM, eval_sets: Mapping[str, TokenSequences], batch_size: int) -> dict[str, float]:
    """`{name}_loss` for each evaluation set (mean token loss over all its chunks)."""
    return {f"{name}_loss": mean_loss(lm, seqs, batch_size) for name, seqs in eval_sets.items()}


def train_loop(
    trainer: Trainer,
    train: TokenSequences,
    eval_sets: Mapping[str, TokenSequences],
    settings: LoopSettings,
    run_dir: str | os.PathLike,
    schedule: Callable[[np.ndarray], np.ndarray],
    on_checkpoint: Callable[[int], None] | None = None,
    hparams: dict | None = None,
    clock: Clock | None = None,
) -> dict:
    """Train to `settings.num_steps`, resuming from `run_dir/checkpoints`; returns final figures.

    Per step, `run_dir/metrics.jsonl` gets {step, tokens, train_loss, lr, grad_norm, tokens_per_s}
    (plus `{name}_loss` on evaluation steps: every `eval_every` steps and the last). Batch `s` is
    `batch_indices(seed, s, ...)`, so the data order does not depend on where a run resumed.
    Returns {"steps", "trained_tokens", "wall_time_s", **final eval losses}; `clock` (a new one if
    None) gets this session's seconds of `train` (steps and their metrics rows), `eval`,
    `checkpoint` (saves and the restore) and `compile`.
    With `on_checkpoint`, each save is waited for and then `on_checkpoint(step)` is called (the
    upload of a run whose ``--out`` is a URL, `pplaw_jax.train.remote`). `hparams` go to the
    TensorBoard events (`metrics.TensorBoardLog`).
    """
    run_dir = Path(run_dir)
    clock = Clock() if clock is None else clock
    is_main = jax.process_index() == 0
    checkpointer = RunCheckpointer(run_dir / "checkpoints", save_every=settings.save_every, keep=settings.keep)
    step, tokens, wall_before = 0, 0, 0.0
    latest = checkpointer.latest_step()
    if latest is not None:
        with clock("checkpoint"):
            state, meta = checkpointer.restore(latest, trainer.abstract_state())
            trainer.load_state(state)
        step, tokens, wall_before = int(meta["step"]), int(meta["tokens"]), float(meta["wall_time_s"])
    metrics = (
        MetricsLog(
            run_dir / "metrics.jsonl",
            keep_through_step=latest,
            tensorboard_dir=run_dir / "tensorboard",
            hparams=hparams,
        )
        if is_main
        else None
    )
    started = time.perf_counter()

    # every step's learning rate, an argument of the compiled step: the schedule (numpy, on the
    # host) over the whole run, so a resumed run passes the same rates
    lrs = np.asarray(schedule(np.arange(settings.num_steps)), dtype=np.float32)

    def place(s: int) -> tuple[jax.Array, jax.Array, float]:
        """Step `s`'s batch, placed, and its learning rate (0-based `s`)."""
        ids, lengths = gather(train, batch_indices(settings.seed, s, settings.batch_size, len(train)))
        return trainer.put(ids), trainer.put(lengths), float(lrs[s])

    bar = progress("train", total=settings.num_steps, initial=step, unit="step", disable=not is_main)
    final_eval = None
    pending: list[tuple[int, float, dict]] = []  # (step, its lr, its device scalars not fetched yet)
    window_start = time.perf_counter()

    def flush() -> None:
        """Fetch the pending steps' scalars in one go (one device sync) and write their rows."""
        nonlocal tokens, window_start
        if not pending:
            return
        fetched = [(s, lr, {k: fetch(v) for k, v in stats.items()}) for s, lr, stats in pending]
        now = time.perf_counter()
        rate = sum(int(st["n_tokens"]) for _, _, st in fetched) / max(now - window_start, 1e-9)
        for s, lr, st in fetched:
            tokens += int(st["n_tokens"])
            row = {
                "step": s,
                "tokens": tokens,
                "train_loss": float(st["train_loss"]),
                "lr": lr,
                "grad_norm": float(st["grad_norm"]),
                "tokens_per_s": rate,
            }
            if not math.isfinite(row["train_loss"]) and s == 1:  # computed with the loaded weights
                raise PplawError(
                    f"the model's loss on the first batch is {row['train_loss']}, before any update: "
                    "the model gives non-finite logits (check its weights and --dtype)"
                )
            if not math.isfinite(row["train_loss"]):
                raise PplawError(f"training diverged: loss is {row['train_loss']} at step {s} (lower --lr?)")
            row.update(evals.pop(s, {}))
            if metrics is not None:
                metrics.write(row)
        bar.update(len(fetched))
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", tok_s=f"{rate:.0f}")
        pending.clear()
        window_start = now

    evals: dict[int, dict] = {}

    def log(s: int) -> None:
        """Step `s`'s and earlier steps' metrics rows; the steps in flight are waited for."""
        with clock("train"):
            flush()
            jax.block_until_ready(trainer.state())

    def evaluate(s: int) -> None:
        """The evaluation sets' losses, written with step `s`'s metrics row."""
        nonlocal final_eval
        with clock("train"):  # the steps in flight are training's time, not the evaluation's
            jax.block_until_ready(trainer.state())
        with clock("eval"):
            evals[s] = eval_losses(trainer, eval_sets, settings.eval_batch_size)
        if s == settings.num_steps:
            final_eval = evals[s]
        log(s)

    def save(s: int) -> None:
        """A checkpoint of step `s`, after its metrics rows (whose token count it records, and
        after which a resume keeps exactly the rows written)."""
        log(s)
        with clock("checkpoint"):
            meta = {"step": s, "tokens": tokens, "wall_time_s": wall_before + time.perf_counter() - started}
            saved = checkpointer.save(s, trainer.state(), meta, force=s == settings.num_steps)
            if saved and on_checkpoint is not None:
                checkpointer.wait()
                on_checkpoint(s)

    # in this order where several are due at one step: the evaluation joins the step's row, and a
    # checkpoint follows the rows it counts
    hooks = [Hook(settings.eval_every, evaluate), Hook(settings.log_every, log), Hook(settings.save_every, save)]
    try:
        batch = place(step) if step < settings.num_steps else None
        while step < settings.num_steps:
            assert batch is not None  # placed for every step below num_steps
            with clock("train"):
                ids, lengths, lr = batch
                pending.append((step + 1, lr, trainer.step(ids, lengths, lr)))
                step += 1
                if step < settings.num_steps:
                    batch = place(step)  # overlaps the device computing this step
            for hook in hooks:
                if hook.due(step, last=step == settings.num_steps):
                    hook.fn(step)
        with clock("checkpoint"):
            checkpointer.wait()
    finally:
        bar.close()
        checkpointer.close()
        if metrics is not None:
            metrics.close()
    if final_eval is None:  # resumed after the last step: evaluate the restored final weights
        with clock("eval"):
            final_eval = eval_losses(trainer, eval_sets, settings.eval_batch_size)
    return {
        "steps": step,
        "trained_tokens": tokens,
        "wall_time_s": wall_before + time.perf_counter() - started,
        **final_eval,
    }
