"""Synthetic perplexity landscapes with a known distribution, for tests and benchmarks.

Chunk ppl is log-normal (``exp(N(log_mean, log_std))``), scored tokens are uniform integers in
``[min_tokens, max_tokens]``, each chunk has 4 UTF-8 bytes per token, and documents hold
``chunks_per_doc`` consecutive chunks. `write_landscape` writes a table through the landscape
directory's own writers (`pplaw_jax.landscape.directory`: parts, ``.done`` markers, ``summary.json``
last), so the selection stage can be exercised end to end without a model, on exactly the files
``pplaw score`` writes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pplaw_jax.fileio import write_json
from pplaw_jax.landscape import directory
from pplaw_jax.paths import AnyPath, as_path

BYTES_PER_TOKEN = 4


def synthetic_landscape(
    n_chunks: int,
    seed: int = 0,
    log_mean: float = 3.0,
    log_std: float = 0.5,
    min_tokens: int = 16,
    max_tokens: int = 2047,
    chunks_per_doc: int = 4,
) -> pa.Table:
    """A landscape table in the parts' schema (``ppl = exp(sum_nll / n_tokens)``, as scored)."""
    rng = np.random.default_rng(seed)
    ppl = np.exp(rng.normal(log_mean, log_std, n_chunks))
    n_tokens = rng.integers(min_tokens, max_tokens + 1, n_chunks)
    row = np.arange(n_chunks)
    doc_id = np.char.add("doc", (row // chunks_per_doc).astype(str))
    return directory.part_table(
        list(doc_id), row % chunks_per_doc, n_tokens, np.log(ppl) * n_tokens, n_tokens * BYTES_PER_TOKEN
    )


def write_landscape(landscape_dir, table: pa.Table, rows_per_part: int, complete: bool = True) -> AnyPath:
    """Write `table` as host 0 of ``pplaw score`` would, in parts of `rows_per_part` rows, each
    with its ``.done`` marker; with `complete`, the host's marker and the summary too."""
    out = as_path(landscape_dir)
    (out / directory.PARTS).mkdir(parents=True, exist_ok=True)
    starts = range(0, table.num_rows, rows_per_part)
    for k, start in enumerate(starts):
        part = table.slice(start, rows_per_part)
        docs = part.column("doc_id").to_pylist()
        directory.write_part(
            out,
            0,
            k,
            part,
            {
                "part": k,
                "docs": len(set(docs)),
                "skipped": 0,
                "rows": part.num_rows,
                "tokens": int(np.sum(part.column("n_tokens").to_numpy())),
                "first_doc_id": docs[0],
                "last_doc_id": docs[-1],
                "seconds": 0.0,
            },
        )
    if complete:
        write_json(
            directory.host_marker(out, 0),
            {
                "parts": len(starts),
                "docs": len(set(table.column("doc_id").to_pylist())),
                "skipped": 0,
                "rows": table.num_rows,
                "tokens": int(np.sum(table.column("n_tokens").to_numpy())),
                "seconds": 0.0,
            },
            sort_keys=True,
        )
        directory.write_summary(out, 1, {"model": "synthetic", "data": "synthetic"})
    return out
