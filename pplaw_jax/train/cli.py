"""`pplaw train`: continual pre-training on a selection (or a whole corpus), evaluated and exported.

RUN/ layout: `run.json` (the settings that define the trajectory; a restart must match them),
`data/` (cached token ids), `checkpoints/` (orbax), `metrics.jsonl` (per step), `hf/` (final
weights, HF format) and `eval.json` (final figures, written last: its presence means the run is
complete, and running the same command again then exits at once).

A URL `--out` trains in a local working copy mirrored to the URL (`pplaw_jax.train.remote`):
`run.json` and `eval.json` are written to the URL, checkpoints and logs uploaded after each save.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pplaw_jax.commands import TrainCommand, add_command
from pplaw_jax.config import TrainConfig
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import check_identity, discard_temporaries, file_sha256, output_lock, write_json
from pplaw_jax.paths import as_path, canonical, is_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, TrainCommand)


def _check_args(args) -> None:
    for flag, value in (
        ("--steps", args.steps),
        ("--eval-max-docs", args.eval_max_docs),
        ("--max-docs", args.max_docs),
    ):
        if value is not None and value < 1:
            raise PplawError(f"{flag} must be >= 1, got {value}")


def _check_run_identity(run_dir, identity: dict, partial: bool = False) -> None:
    """Record the trajectory-defining settings in ``RUN/run.json``, or refuse to resume a run made
    with others (`fileio.check_identity`; `partial`: a finished run compared before "nothing to do")."""
    check_identity(
        run_dir / "run.json",
        identity,
        f"{run_dir} holds a different run ({{changes}}); use a new --out",
        partial=partial,
    )


def run(args: TrainCommand) -> int:
    from pplaw_jax.distributed import initialize_distributed

    initialize_distributed()

    import jax

    if is_url(args.out):  # trains in a local working copy mirrored to the URL (train.remote)
        if jax.process_count() > 1:
            raise PplawError(
                f"--out {args.out}: training to an object store runs in one process (its "
                "checkpoints are staged locally); use a shared file system for multi-host training"
            )
        from pplaw_jax.train.remote import working_dir

        local = working_dir(args.out)  # locked: one writer per working copy on this machine
    else:
        local = Path(args.out)
    with output_lock(local, host=jax.process_index()):  # one writer per host shard of --out
        # what a killed run left: this host's data cache, and the files process 0 alone writes
        discard_temporaries(Path(local) / "data" / f"host{jax.process_index():03d}")
        if jax.process_index() == 0:
            discard_temporaries(local, owned=("metrics.jsonl", "eval.json", "hf"))
        return _train(args)


def _identity(args: TrainCommand, selection) -> tuple[dict, dict, dict]:
    """(model identity, data identity, settings identity) of a run: what its `run.json` records
    and a resume must match. The data identity keys the cached token ids too."""
    from pplaw_jax.data.readers import corpus_fingerprint
    from pplaw_jax.models.loading import model_fingerprint
    from pplaw_jax.train.scratch import SCRATCH_PREFIX

    cfg: TrainConfig = args.cfg
    # what the files hold, not only where they are: new weights or data at the same path are another run
    model_id = {
        "model": canonical(args.model),
        "tokenizer": canonical(args.tokenizer),
        "model_content": model_fingerprint(args.model.removeprefix(SCRATCH_PREFIX)),
        "tokenizer_content": model_fingerprint(args.tokenizer) if args.tokenizer else None,
    }
    train_key = dict(
        **model_id,
        data=canonical(args.data),
        data_content=corpus_fingerprint(args.data),
        selection=file_sha256(selection.path) if selection else None,
        seq_len=cfg.seq_len,
        max_docs=args.max_docs,
        text_field=args.text_field,
        id_field=args.id_field,
    )
    settings_key = dict(
        requested_steps=args.steps,
        requested_tokens=args.tokens,
        warmup=cfg.warmup,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        min_lr_ratio=cfg.min_lr_ratio,
        schedule=cfg.schedule,
        weight_decay=cfg.weight_decay,
        clip_norm=cfg.clip_norm,
        seed=args.seed,
        dtype=cfg.dtype,
        # orbax checkpoints hold one parameter layout; remat is left out: it changes memory, not the run
        scan_layers=cfg.scan_layers,
    )
    return model_id, train_key, settings_key


def _load_model(args: TrainCommand, mesh, selection):
    """The model and tokenizer, loaded into the mesh's shards, after the checks that need them:
    the selection's chunking, the context length, the memory a step needs."""
    from pplaw_jax.train.loop import check_memory
    from pplaw_jax.train.scratch import load_for_training

    cfg: TrainConfig = args.cfg
    loaded = load_for_training(
        args.model,
        tokenizer_dir=args.tokenizer,
        dtype=cfg.dtype,
        seed=args.seed,
        remat=cfg.remat,
        mesh=mesh,
        scan_layers=cfg.scan_layers,
    )
    if selection is not None:
        selection.check_chunking(cfg.seq_len, loaded.tokenizer.doc_start_id)
    if cfg.seq_len > loaded.config.max_position_embeddings:
        raise PplawError(
            f"--seq-len {cfg.seq_len} exceeds the model's max_position_embeddings "
            f"{loaded.config.max_position_embeddings} ({loaded.source})"
        )
    check_memory(
        loaded.config,
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        mesh=mesh,
        compute_bytes=2 if cfg.dtype == "bfloat16" else 4,
        remat=cfg.remat,
    )
    return loaded


def _datasets(args: TrainCommand, loaded, cache_dir: Path, model_id: dict, train_key: dict, selection):
    """(training sequences, {name: evaluation sequences}), tokenized once and cached under
    `cache_dir` by their identity; every token id must be inside the model's vocabulary."""
    from pplaw_jax.data.readers import corpus_fingerprint
    from pplaw_jax.train.dataset import build_sequences, cached_sequences, fingerprint

    cfg: TrainConfig = args.cfg
    tokenizer = loaded.tokenizer
    read: dict = {"text_field": args.text_field, "id_field": args.id_field}
    train = cached_sequences(
        cache_dir,
        "train",
        fingerprint(**train_key),
        lambda: build_sequences(args.data, tokenizer, cfg.seq_len, selection=selection, max_docs=args.max_docs, **read),
    )
    eval_sets = {}
    for name, spec in (
        ("domain", args.eval_data),
        ("general", args.general_eval_data),
        ("target", args.target_eval_data),
    ):
        if spec is not None:
            key = fingerprint(
                **model_id,
                data=canonical(spec),
                data_content=corpus_fingerprint(spec),
                seq_len=cfg.seq_len,
                max_docs=args.eval_max_docs,
                **read,
            )
            eval_sets[name] = cached_sequences(
                cache_dir,
                f"eval_{name}",
                key,
                lambda spec=spec: build_sequences(spec, tokenizer, cfg.seq_len, max_docs=args.eval_max_docs, **read),
            )
    max_id = max(int(s.tokens.max()) for s in (train, *eval_sets.values()))
    if max_id >= loaded.config.vocab_size:
        raise PplawError(
            f"token id {max_id} is outside the model's vocabulary of {loaded.config.vocab_size} ({loaded.source})"
        )
    return train, eval_sets


def _optimizer(args: TrainCommand, num_sequences: int):
    """(steps, warmup steps, learning-rate schedule, optimizer settings) of a run over
    `num_sequences` training sequences."""
    from pplaw_jax.train.optim import AdamW, make_schedule, total_steps, warmup_steps

    cfg: TrainConfig = args.cfg
    num_steps = total_steps(
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        num_sequences=num_sequences,
        steps=args.steps,
        tokens=args.tokens,
    )
    num_warmup = warmup_steps(cfg.warmup, num_steps)
    schedule = make_schedule(cfg.lr, num_steps, num_warmup, kind=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio)
    return (
        num_steps,
        num_warmup,
        schedule,
        AdamW(weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm),
    )


def _summary(args: TrainCommand, result: dict, subset: dict, train, train_key: dict, selection) -> dict:
    """`eval.json`: the final losses, the subset's moments and size, what was trained and how, and
    where this session's time went (`seconds`)."""
    cfg: TrainConfig = args.cfg
    return {
        "domain_loss": result.get("domain_loss"),
        "general_loss": result.get("general_loss"),
        "target_loss": result.get("target_loss"),
        **{k: subset.get(k) for k in ("mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl")},
        "tokens": subset["tokens"],
        "sequences": len(train),
        "steps": result["steps"],
        "trained_tokens": result["trained_tokens"],
        "epochs": result["trained_tokens"] / max(train.num_scored_tokens, 1),
        "wall_time_s": result["wall_time_s"],
        "seconds": result["seconds"],
        "model": train_key["model"],
        "data": train_key["data"],
        "selection": canonical(selection.path) if selection else None,
        "seed": args.seed,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "dtype": cfg.dtype,
    }


def _train(args: TrainCommand) -> int:
    """Identity, model, data, optimiser, then the loop into the run directory (each step above),
    the HF export and `eval.json`."""
    import jax

    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.select.io import read_selection
    from pplaw_jax.timing import Clock
    from pplaw_jax.train.export import export_hf
    from pplaw_jax.train.loop import LoopSettings, Trainer, data_parallel_size, train_loop
    from pplaw_jax.train.remote import RunMirror

    clock, started = Clock(), time.perf_counter()
    mirror = RunMirror(args.out) if is_url(args.out) else None
    record_dir = as_path(args.out)  # run.json and eval.json (on the URL itself for a remote run)
    run_dir = mirror.local if mirror else Path(args.out)  # everything else
    cfg: TrainConfig = args.cfg
    _check_args(args)
    with clock("load"):
        selection = read_selection(args.selection) if args.selection else None
        model_id, train_key, settings_key = _identity(args, selection)
    if (record_dir / "eval.json").exists():
        # compared before declaring "nothing to do": a finished run answers only for its own arguments
        _check_run_identity(record_dir, {**train_key, **settings_key}, partial=True)
        print(json.dumps({"out": str(record_dir), "note": "complete (eval.json exists); nothing to do"}))
        return 0
    mesh = make_mesh(cfg.mesh)
    dp = data_parallel_size(mesh)
    for flag, size in (("--batch-size", cfg.batch_size), ("--eval-batch-size", cfg.eval_batch_size or cfg.batch_size)):
        if size % dp:
            raise PplawError(f"{flag} {size} is not a multiple of the data x fsdp mesh size {dp} (--mesh {cfg.mesh})")

    with clock("load"):
        loaded = _load_model(args, mesh, selection)
        run_dir.mkdir(parents=True, exist_ok=True)
        cache_dir = run_dir / "data" / f"host{jax.process_index():03d}"
        train, eval_sets = _datasets(args, loaded, cache_dir, model_id, train_key, selection)
        num_steps, num_warmup, schedule, optimizer = _optimizer(args, len(train))
        _check_run_identity(record_dir, dict(**train_key, **settings_key, steps=num_steps, warmup_steps=num_warmup))
        if mirror is not None:
            mirror.pull()  # the URL's latest uploaded checkpoint and logs replace the working copy's
        trainer = Trainer(loaded.model, mesh, optimizer)
    subset = selection.stats() if selection else {"tokens": train.num_scored_tokens}
    hparams = {
        **{k: subset.get(k) for k in ("mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl")},
        "subset_tokens": subset["tokens"],
        "steps": num_steps,
        "seed": args.seed,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "schedule": cfg.schedule,
        "selection_sha256": train_key["selection"],
    }
    result = train_loop(
        trainer,
        train,
        eval_sets,
        LoopSettings.from_config(cfg, num_steps=num_steps, seed=args.seed),
        run_dir,
        schedule,
        on_checkpoint=mirror.push_checkpoint if mirror else None,
        hparams=hparams,
        clock=clock,
    )
    with clock("export"):
        export_hf(trainer, loaded.config, loaded.tokenizer, run_dir / "hf")
        if mirror is not None:
            mirror.push_final()
    # this session's seconds by kind of work (`timing.Clock`), `total` from the identity check on
    result["seconds"] = {**clock.rounded(), "total": round(time.perf_counter() - started, 3)}
    summary = _summary(args, result, subset, train, train_key, selection)
    if jax.process_index() == 0:
        write_json(record_dir / "eval.json", summary)
        if mirror is not None:
            mirror.discard_working_copy()
        print(
            json.dumps(
                {
                    "out": str(record_dir),
                    **{k: summary[k] for k in ("domain_loss", "general_loss", "steps", "trained_tokens")},
                }
            )
        )
    return 0
