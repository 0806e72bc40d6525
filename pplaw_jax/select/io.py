"""The selection directory: its schema, its writer and its validated reader.

A selection is made from a landscape (`pplaw_jax.landscape.directory.read_landscape`, whose row
order is the landscape row index every selection method uses).

Selection (``OUT/``): ``selection.parquet`` with ``doc_id, chunk, n_tokens, ppl`` of the selected
rows in landscape order, then ``summary.json``; `read_selection` (what ``pplaw train --selection``
reads) accepts it only with its ``summary.json`` and a matching row count.  Any old ``summary.json``
is removed first and
every file is written under a temporary name and renamed, so a directory with ``summary.json``
is always complete and consistent, and the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import atomic_write, write_json
from pplaw_jax.landscape.directory import CHUNK_SCHEMA, Landscape
from pplaw_jax.moments import subset_moments
from pplaw_jax.paths import AnyPath, as_path, source

SELECTION_SCHEMA = CHUNK_SCHEMA  # a selection's rows are landscape rows
SELECTION_PARQUET = "selection.parquet"
SUMMARY_JSON = "summary.json"


def aliased_methods(select_root, seeds) -> dict[str, str]:
    """``{"dos-point": "dos-posterior"}`` when the two DOS targets selected byte-identical subsets
    for every seed in `seeds` (under ``SELECT_ROOT/<method>/seed<k>/``), else ``{}``: the study
    then trains and reports them once."""
    root = as_path(select_root)
    paths = [
        (root / "dos-posterior" / f"seed{k}" / SELECTION_PARQUET, root / "dos-point" / f"seed{k}" / SELECTION_PARQUET)
        for k in seeds
    ]
    if paths and all(a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes() for a, b in paths):
        return {"dos-point": "dos-posterior"}
    return {}


def write_selection(out_dir, landscape: Landscape, indices: np.ndarray, summary: dict) -> AnyPath:
    """Write ``selection.parquet`` (rows `indices` of `landscape`) and then ``summary.json``."""
    out = as_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_JSON).unlink(missing_ok=True)
    rows = landscape.table.take(pa.array(np.asarray(indices, dtype=np.int64)))
    rows = rows.replace_schema_metadata(None)
    atomic_write(out / SELECTION_PARQUET, lambda tmp: pq.write_table(rows, tmp))
    write_json(out / SUMMARY_JSON, summary)
    return out


@dataclass(frozen=True)
class SelectedChunks:
    """The rows of a `selection.parquet`: which chunks to train on, and their landscape statistics."""

    path: str
    doc_ids: np.ndarray  # object (str) [K]
    chunks: np.ndarray  # int64 [K]
    n_tokens: np.ndarray  # int64 [K]
    ppl: np.ndarray  # float64 [K]
    chunking: dict  # the landscape's {"seq_len", "start_id"} (None where an older summary.json lacks them)

    def __len__(self) -> int:
        return len(self.chunks)

    def check_chunking(self, seq_len: int, start_id: int) -> None:
        """A selection's (document, chunk) rows name the same text only under its landscape's chunk
        length and tokenizer: refuse a run whose `--seq-len` or document-start token differs."""
        recorded = self.chunking.get("seq_len")
        if recorded is not None and recorded != seq_len:
            raise PplawError(
                f"{self.path}: the selection's chunks were cut by its landscape with seq_len {recorded}, "
                f"this run has --seq-len {seq_len} (landscape.seq_len and train.seq_len must be equal)"
            )
        recorded = self.chunking.get("start_id")
        if recorded is not None and recorded != start_id:
            raise PplawError(
                f"{self.path}: the landscape's tokenizer starts chunks with token id {recorded}, this "
                f"model's with {start_id}: another tokenizer, whose chunks are other text"
            )

    def stats(self) -> dict:
        """The law's subset statistics: both kinds of moments (``mu_ppl, sigma_ppl, mu_logppl,
        sigma_logppl``, see `pplaw_jax.moments`), tokens and chunks."""
        return {**subset_moments(self.ppl), "tokens": int(self.n_tokens.sum()), "chunks": len(self)}


def read_selection(path: str | os.PathLike) -> SelectedChunks:
    """Read `selection.parquet` (or a selection directory holding one); PplawError on bad content."""
    import pandas as pd

    p = as_path(path)
    if p.is_dir():
        p = p / "selection.parquet"
    if not p.is_file():
        raise PplawError(f"{p}: selection file not found")
    # `pplaw select` writes summary.json last (and removes it first): without it the parquet
    # beside it is a stale or unfinished selection, never one to train on
    summary_path = p.parent / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        raise PplawError(
            f"{p}: no summary.json beside it: the selection is incomplete (was `pplaw select` "
            "interrupted?) or was not written by `pplaw select`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PplawError(f"{summary_path}: cannot read ({e})") from None
    try:
        df = pd.read_parquet(source(p))
    except Exception as e:  # pyarrow raises several types for a corrupt or non-parquet file
        raise PplawError(f"{p}: cannot read as parquet ({e})") from e
    if not isinstance(summary, dict) or summary.get("n_chunks") != len(df):
        recorded = summary.get("n_chunks") if isinstance(summary, dict) else None
        raise PplawError(
            f"{p}: {len(df)} rows, but {summary_path.name} records n_chunks={recorded!r} "
            "(the two files come from different selections)"
        )
    missing = [c for c in SELECTION_SCHEMA.names if c not in df.columns]
    if missing:
        raise PplawError(f"{p}: missing column(s) {missing} (expected {list(SELECTION_SCHEMA.names)})")
    if len(df) == 0:
        raise PplawError(f"{p}: the selection is empty")
    dup = df.duplicated(["doc_id", "chunk"])
    if dup.any():
        row = df[dup].iloc[0]
        raise PplawError(f"{p}: {int(dup.sum())} duplicated (doc_id, chunk) rows, e.g. ({row.doc_id!r}, {row.chunk})")
    if (df["n_tokens"] < 1).any() or not np.isfinite(df["ppl"]).all():
        raise PplawError(f"{p}: n_tokens must be >= 1 and ppl finite in every row")
    return SelectedChunks(
        path=str(p),
        doc_ids=df["doc_id"].astype(str).to_numpy(dtype=object),
        chunks=df["chunk"].to_numpy(dtype=np.int64),
        n_tokens=df["n_tokens"].to_numpy(dtype=np.int64),
        ppl=df["ppl"].to_numpy(dtype=np.float64),
        chunking={"seq_len": summary.get("landscape_seq_len"), "start_id": summary.get("landscape_start_id")},
    )
