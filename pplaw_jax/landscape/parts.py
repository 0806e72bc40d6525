"""On-disk layout of a landscape directory, writing parts and reading back completed ones.

    DIR/run_args.json                           arguments that define the rows (checked on resume)
    DIR/parts/host{h:03d}-part{k:05d}.parquet   rows: doc_id, chunk, n_tokens, sum_nll, ppl
    DIR/parts/host{h:03d}-part{k:05d}.done      JSON marker: the part is complete (docs, rows, ...)
    DIR/parts/host{h:03d}.done                  JSON marker: host h has finished all its parts
    DIR/parts/host{h:03d}.failed                JSON: host h stopped with an error (cleared on rerun)
    DIR/histogram.png, DIR/summary.json         written last; summary.json means "complete"

Every file is written under a temporary name and renamed into place (`pplaw_jax.fileio`), so a
reader (or a resumed run) never sees a half-written part; a part counts only once its ``.done``
marker exists. JSON files are written with sorted keys.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import TMP_SUFFIX, write_bytes, write_json

PART_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("chunk", pa.int64()),
        ("n_tokens", pa.int64()),
        ("sum_nll", pa.float64()),
        ("ppl", pa.float64()),
        ("n_bytes", pa.int64()),  # UTF-8 bytes of the chunk's text (data.chunking.window_bytes)
    ]
)
DEFAULT_DOCS_PER_PART = 1000  # documents per part: the unit of resumption
RUN_ARGS = "run_args.json"
SUMMARY = "summary.json"
HISTOGRAM = "histogram.png"
PARTS = "parts"
_PART_RE = re.compile(r"host(\d{3})-part(\d{5})\.done$")


def part_stem(out_dir: str | os.PathLike, host: int, part: int) -> Path:
    """Path of part `part` of host `host` without suffix (add .parquet / .done)."""
    return Path(out_dir) / PARTS / f"host{host:03d}-part{part:05d}"


def host_marker(out_dir: str | os.PathLike, host: int) -> Path:
    return Path(out_dir) / PARTS / f"host{host:03d}.done"


def host_failure(out_dir: str | os.PathLike, host: int) -> Path:
    """Written by a host whose scoring raised, so the other hosts stop waiting for it."""
    return Path(out_dir) / PARTS / f"host{host:03d}.failed"


def read_json(path: Path) -> Any:
    """Read a JSON file this module wrote; PplawError (naming it) if it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PplawError(f"{path}: cannot read ({e})") from e


def part_table(doc_ids: list[str], chunks: np.ndarray, n_tokens: np.ndarray, sum_nll: np.ndarray,
               n_bytes: np.ndarray) -> pa.Table:
    """The rows of one part in the landscape schema; ``ppl = exp(sum_nll / n_tokens)``."""
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    sum_nll = np.asarray(sum_nll, dtype=np.float64)
    ppl = np.exp(sum_nll / np.maximum(n_tokens, 1))
    return pa.Table.from_arrays(
        [pa.array(doc_ids, pa.string()), pa.array(np.asarray(chunks, np.int64)), pa.array(n_tokens),
         pa.array(sum_nll), pa.array(ppl), pa.array(np.asarray(n_bytes, np.int64))],
        schema=PART_SCHEMA,
    )


def write_part(out_dir: str | os.PathLike, host: int, part: int, table: pa.Table, marker: Mapping[str, Any]) -> None:
    """Write a part's rows, then its ``.done`` marker (each atomically, in that order)."""
    stem = part_stem(out_dir, host, part)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(stem.with_suffix(".parquet"), sink.getvalue().to_pybytes())
    write_json(stem.with_suffix(".done"), dict(marker), sort_keys=True)


def discard_unfinished(out_dir: str | os.PathLike, host: int, part: int) -> None:
    """Remove what a crashed attempt at a part may have left (temp files, a part without marker)."""
    stem = part_stem(out_dir, host, part)
    stem.with_suffix(".parquet").unlink(missing_ok=True)
    for tmp in stem.parent.glob(f"{stem.name}.*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def iter_done_parts(out_dir: str | os.PathLike) -> Iterator[tuple[int, int, Path]]:
    """(host, part, parquet path) of every completed part, sorted by host then part."""
    found = []
    for marker in (Path(out_dir) / PARTS).glob("host*-part*.done"):
        m = _PART_RE.search(marker.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), marker.with_suffix(".parquet")))
    yield from sorted(found)


def read_landscape(out_dir: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of the completed parts of a landscape directory, in (host, part, row) order."""
    paths = [p for _, _, p in iter_done_parts(out_dir)]
    if not paths:
        raise PplawError(f"{out_dir}: no completed landscape parts (expected {PARTS}/host*-part*.done)")
    tables = []
    for p in paths:
        try:
            tables.append(pq.read_table(p, columns=columns))
        except (OSError, pa.ArrowException) as e:
            raise PplawError(f"{p}: cannot read landscape part ({e})") from e
    return pa.concat_tables(tables).to_pandas()
