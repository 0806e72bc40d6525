"""Synthetic perplexity landscapes with a known distribution, for tests and benchmarks.

Chunk ppl is log-normal (``exp(N(log_mean, log_std))``), scored tokens are uniform integers in
``[min_tokens, max_tokens]``, and documents hold ``chunks_per_doc`` consecutive chunks.
`write_landscape` lays a table out exactly as ``pplaw score`` does (parts, ``.done`` markers,
``summary.json`` last), so the selection stage can be exercised end to end without a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pplaw_jax.landscape.stats import ppl_stats

LANDSCAPE_SCHEMA = pa.schema([("doc_id", pa.string()), ("chunk", pa.int64()),
                              ("n_tokens", pa.int64()), ("sum_nll", pa.float64()),
                              ("ppl", pa.float64())])


def synthetic_landscape(n_chunks: int, seed: int = 0, log_mean: float = 3.0, log_std: float = 0.5,
                        min_tokens: int = 16, max_tokens: int = 2047,
                        chunks_per_doc: int = 4) -> pa.Table:
    """A landscape table with the contract's columns (``sum_nll`` consistent with ``ppl``)."""
    rng = np.random.default_rng(seed)
    ppl = np.exp(rng.normal(log_mean, log_std, n_chunks))
    n_tokens = rng.integers(min_tokens, max_tokens + 1, n_chunks)
    row = np.arange(n_chunks)
    doc_id = np.char.add("doc", (row // chunks_per_doc).astype(str))
    return pa.table({"doc_id": doc_id, "chunk": row % chunks_per_doc, "n_tokens": n_tokens,
                     "sum_nll": np.log(ppl) * n_tokens, "ppl": ppl}, schema=LANDSCAPE_SCHEMA)


def write_landscape(landscape_dir, table: pa.Table, rows_per_part: int,
                    complete: bool = True) -> Path:
    """Write `table` as ``pplaw score`` output in `landscape_dir` (host 0, parts of
    `rows_per_part` rows, each with its ``.done`` marker); ``summary.json`` only if `complete`."""
    out = Path(landscape_dir)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    starts = range(0, table.num_rows, rows_per_part)
    for k, start in enumerate(starts):
        part = table.slice(start, rows_per_part)
        name = f"host000-part{k:05d}"
        pq.write_table(part, parts / f"{name}.parquet")
        marker = {"rows": part.num_rows, "tokens": int(np.sum(part.column("n_tokens").to_numpy())),
                  "docs": len(set(part.column("doc_id").to_pylist()))}
        (parts / f"{name}.done").write_text(json.dumps(marker))
    if complete:
        summary = {"documents": len(set(table.column("doc_id").to_pylist())),
                   "chunks": table.num_rows, "parts": len(starts),
                   "tokens": int(np.sum(table.column("n_tokens").to_numpy())), "skipped": 0,
                   **ppl_stats(table.column("ppl").to_numpy(), table.column("sum_nll").to_numpy(),
                               table.column("n_tokens").to_numpy())}
        (out / "summary.json").write_text(json.dumps(summary))
    return out
