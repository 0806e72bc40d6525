"""`pplaw score`: the perplexity landscape of a corpus under a frozen model (see landscape.score)."""

from __future__ import annotations

import argparse
import json

from pplaw_jax.commands import ScoreCommand, add_command
from pplaw_jax.config import ScoreConfig

DEFAULT_BATCH_ROWS = 8  # chunks per step and host when --batch-size is not given


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, ScoreCommand)


def run(args: ScoreCommand) -> int:
    from pplaw_jax.distributed import initialize_distributed

    initialize_distributed()

    import jax

    from pplaw_jax.data import iter_documents
    from pplaw_jax.data.readers import corpus_fingerprint
    from pplaw_jax.distributed import make_host_mesh
    from pplaw_jax.errors import PplawError
    from pplaw_jax.fileio import discard_temporaries, output_lock
    from pplaw_jax.landscape.directory import HISTOGRAM, SUMMARY
    from pplaw_jax.landscape.score import make_score_fn, score_corpus
    from pplaw_jax.models import load_model
    from pplaw_jax.models.loading import model_fingerprint
    from pplaw_jax.models.sharded import data_parallel_size
    from pplaw_jax.paths import canonical

    cfg: ScoreConfig = args.cfg
    process_index, process_count = jax.process_index(), jax.process_count()
    with output_lock(args.out, host=process_index):  # one writer per host shard of --out
        if process_index == 0:  # a killed run's temporaries of the files process 0 alone writes
            discard_temporaries(args.out, owned=(SUMMARY, HISTOGRAM))
        documents = iter_documents(  # resolves the files now: a bad --data fails before the model loads
            args.data,
            text_field=args.text_field,
            id_field=args.id_field,
            process_index=process_index,
            process_count=process_count,
            max_docs=args.max_docs,
        )
        # Each host scores its own documents on its own devices: no cross-host collectives, so hosts
        # never wait for each other and may run different numbers of batches.
        # --mesh and --batch-size are global, as in every subcommand: each host takes its share
        mesh = make_host_mesh(cfg.mesh)
        dp = data_parallel_size(mesh)
        if cfg.batch_size is None:
            batch_size = -(-DEFAULT_BATCH_ROWS // dp) * dp
        elif cfg.batch_size % (dp * process_count):
            raise PplawError(
                f"--batch-size {cfg.batch_size} is not a multiple of the data x fsdp mesh size "
                f"{dp * process_count} ({cfg.mesh} over {process_count} host(s))"
            )
        else:
            batch_size = cfg.batch_size // process_count
        loaded = load_model(args.model, dtype=cfg.dtype, mesh=mesh, scan_layers=cfg.scan_layers)  # into the shards
        if cfg.seq_len > loaded.config.max_position_embeddings:
            raise PplawError(
                f"--seq-len {cfg.seq_len} exceeds the model's max_position_embeddings "
                f"{loaded.config.max_position_embeddings} ({loaded.source})"
            )
        summary = score_corpus(
            documents,
            out_dir=args.out,
            score_fn=make_score_fn(loaded.model, mesh),
            encode_batch=loaded.tokenizer.encode_batch_with_starts,
            start_id=loaded.tokenizer.doc_start_id,
            seq_len=cfg.seq_len,
            batch_size=batch_size,
            vocab_size=loaded.config.vocab_size,
            run_args={
                "model": canonical(args.model),
                "data": canonical(args.data),
                # what the files hold, not only where they are: new weights at the same path are another run
                "model_content": model_fingerprint(loaded.source),
                "data_content": corpus_fingerprint(args.data),
                "dtype": cfg.dtype,
                "scan_layers": cfg.scan_layers,
                "text_field": args.text_field,
                "id_field": args.id_field,
                "max_docs": args.max_docs,
            },
            process_index=process_index,
            process_count=process_count,
            docs_per_part=cfg.docs_per_part,
            summary_info={
                "mesh": dict(mesh.shape),
                "batch_size": batch_size * process_count,
                "devices_per_host": len(jax.local_devices()),
                "platform": jax.default_backend(),
            },
        )
    if summary is not None:
        keys = ("documents", "skipped", "chunks", "tokens", "corpus_ppl", "tokens_per_s")
        print(json.dumps({"out": args.out, **{k: summary[k] for k in keys}}))
    return 0
