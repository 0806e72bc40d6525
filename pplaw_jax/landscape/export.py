"""`pplaw landscape export`: the landscape as columns of the corpus, for pipelines that filter on it.

datatrove, data-juicer and `datasets.filter` work on documents with columns; the landscape is
chunks keyed by (doc_id, chunk). The export joins the two: one row per scored document with its
id and text and its perplexity under the base model (`ppl` = exp of the document's mean token NLL,
`logppl` = that mean NLL, `bits_per_byte`, `chunks`, `n_tokens`, `chunk_ppl_max`), written as
`OUT/landscape.parquet` (`--format parquet`) or a Hugging Face `datasets` directory `OUT/dataset`
(`--format hf`, `Dataset.save_to_disk`; needs the `datasets` package). Documents the landscape did
not score (empty, or past its `--max-docs`) are left out and counted.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pplaw_jax.commands import ExportCommand, add_command

COLUMNS = ["ppl", "logppl", "bits_per_byte", "chunks", "n_tokens", "chunk_ppl_max"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pplaw_jax.config import parser_options

    options = parser_options()
    options.pop("parser_class")
    modes = parser.add_subparsers(dest="mode", metavar="{export}", required=True)
    text = "the landscape as per-document columns of the corpus (Parquet or a datasets directory)"
    export = modes.add_parser(
        "export",
        help=text,
        description=text,
        **options,
        epilog=(
            "example:\n  pplaw landscape export --landscape land --data corpus/train.jsonl.gz --format hf "
            "--out land_export"
        ),
    )
    add_command(export, ExportCommand)


def document_scores(chunks: pd.DataFrame) -> pd.DataFrame:
    """Per-document figures of landscape rows (doc_id, n_tokens, sum_nll, ppl, n_bytes), indexed by doc_id."""
    grouped = chunks.groupby("doc_id", sort=False)
    out = pd.DataFrame(
        {
            "chunks": grouped.size(),
            "n_tokens": grouped["n_tokens"].sum(),
            "sum_nll": grouped["sum_nll"].sum(),
            "n_bytes": grouped["n_bytes"].sum(),
            "chunk_ppl_max": grouped["ppl"].max(),
        }
    )
    out["logppl"] = out["sum_nll"] / out["n_tokens"]
    out["ppl"] = np.exp(out["logppl"])
    out["bits_per_byte"] = out["sum_nll"] / math.log(2) / out["n_bytes"].where(out["n_bytes"] > 0)
    return out


def run(args: ExportCommand) -> int:
    from pplaw_jax.data import iter_documents
    from pplaw_jax.errors import PplawError
    from pplaw_jax.fileio import atomic_write
    from pplaw_jax.landscape.directory import read_landscape, read_parts
    from pplaw_jax.paths import as_path, is_url

    read_landscape(args.landscape)  # complete and consistent, or one line naming what is not
    scores = document_scores(read_parts(args.landscape, columns=["doc_id", "n_tokens", "sum_nll", "ppl", "n_bytes"]))
    rows, left_out = [], 0
    for doc in iter_documents(args.data, text_field=args.text_field, id_field=args.id_field):
        if doc.doc_id in scores.index:
            rows.append((doc.doc_id, doc.text))
        else:
            left_out += 1
    if len(rows) != len(scores):
        raise PplawError(
            f"{args.data}: {len(scores) - len(rows)} of the landscape's {len(scores)} documents "
            f"are not in this corpus (is it the corpus {args.landscape} scored?)"
        )
    table = pd.DataFrame(rows, columns=[args.id_field, args.text_field])
    table = table.join(scores[COLUMNS], on=args.id_field)
    out = as_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.format == "parquet":
        target = out / "landscape.parquet"
        atomic_write(target, lambda tmp: table.to_parquet(tmp, index=False))
    else:
        try:
            import datasets
        except ImportError:
            raise PplawError("--format hf needs the datasets package: pip install datasets") from None
        if is_url(args.out):
            raise PplawError(f"--out {args.out}: --format hf writes a local directory (use --format parquet on a URL)")
        target, partial = Path(args.out) / "dataset", Path(args.out) / ".dataset.partial"
        shutil.rmtree(partial, ignore_errors=True)  # what a killed export left
        datasets.Dataset.from_pandas(table, preserve_index=False).save_to_disk(str(partial))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    print(json.dumps({"out": str(target), "documents": len(table), "left_out": left_out, "format": args.format}))
    return 0
