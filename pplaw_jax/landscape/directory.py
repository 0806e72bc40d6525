"""The landscape directory: its schema, its writers and its one validated reader.

    DIR/run_args.json                           arguments that define the rows (checked on resume)
    DIR/parts/host{h:03d}-part{k:05d}.parquet   rows: doc_id, chunk, n_tokens, sum_nll, ppl, n_bytes
    DIR/parts/host{h:03d}-part{k:05d}.done      JSON marker: the part is complete (docs, rows, ...)
    DIR/parts/host{h:03d}.done                  JSON marker: host h has finished all its parts
    DIR/parts/host{h:03d}.failed                JSON: host h stopped with an error (cleared on rerun)
    DIR/histogram.png, DIR/summary.json         written last; summary.json means "complete"

Every file is written under a temporary name and renamed into place (`pplaw_jax.fileio`), so a
reader (or a resumed run) never sees a half-written part; a part counts only once its ``.done``
marker exists. JSON files are written with sorted keys.

Writers: `write_part` (rows and their marker), `write_summary` (the histogram and summary.json from
every host's completed parts; what `pplaw score` and the synthetic landscapes of
`select.synthetic` both call). Readers: `read_landscape` checks a finished landscape (summary,
markers, row and token counts, column types and values) and is what every stage downstream of
scoring reads; `read_parts` reads the completed parts of a landscape still being written (the
summary writer, resume checks).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import TMP_SUFFIX, write_bytes, write_json
from pplaw_jax.landscape.stats import bits_per_byte, plot_log_ppl_histogram, ppl_stats
from pplaw_jax.moments import chunk_values
from pplaw_jax.paths import AnyPath, PathSpec, as_path, read_parquet_table

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
# what a downstream stage reads of each chunk (and a selection's rows are): `read_landscape`'s table
CHUNK_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("chunk", pa.int64()), ("n_tokens", pa.int64()), ("ppl", pa.float64())]
)
DEFAULT_DOCS_PER_PART = 1000  # documents per part: the unit of resumption
RUN_ARGS = "run_args.json"
SUMMARY = "summary.json"
HISTOGRAM = "histogram.png"
PARTS = "parts"
_PART_RE = re.compile(r"host(\d{3})-part(\d{5})\.done$")


def part_stem(out_dir: PathSpec, host: int, part: int) -> AnyPath:
    """Path of part `part` of host `host` without suffix (add .parquet / .done)."""
    return as_path(out_dir) / PARTS / f"host{host:03d}-part{part:05d}"


def host_marker(out_dir: PathSpec, host: int) -> AnyPath:
    return as_path(out_dir) / PARTS / f"host{host:03d}.done"


def host_failure(out_dir: PathSpec, host: int) -> AnyPath:
    """Written by a host whose scoring raised, so the other hosts stop waiting for it."""
    return as_path(out_dir) / PARTS / f"host{host:03d}.failed"


def read_json(path: AnyPath) -> Any:
    """Read a JSON file this module wrote; PplawError (naming it) if it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PplawError(f"{path}: cannot read ({e})") from e


def part_table(
    doc_ids: list[str], chunks: np.ndarray, n_tokens: np.ndarray, sum_nll: np.ndarray, n_bytes: np.ndarray
) -> pa.Table:
    """The rows of one part in the landscape schema; ``ppl = exp(sum_nll / n_tokens)``."""
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    sum_nll = np.asarray(sum_nll, dtype=np.float64)
    ppl = np.exp(sum_nll / np.maximum(n_tokens, 1))
    return pa.Table.from_arrays(
        [
            pa.array(doc_ids, pa.string()),
            pa.array(np.asarray(chunks, np.int64)),
            pa.array(n_tokens),
            pa.array(sum_nll),
            pa.array(ppl),
            pa.array(np.asarray(n_bytes, np.int64)),
        ],
        schema=PART_SCHEMA,
    )


def write_part(out_dir: PathSpec, host: int, part: int, table: pa.Table, marker: Mapping[str, Any]) -> None:
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


def iter_done_parts(out_dir: PathSpec) -> Iterator[tuple[int, int, AnyPath]]:
    """(host, part, parquet path) of every completed part, sorted by host then part."""
    found = []
    for marker in (as_path(out_dir) / PARTS).glob("host*-part*.done"):
        m = _PART_RE.search(marker.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), marker.with_suffix(".parquet")))
    yield from sorted(found)


def read_parts(out_dir: PathSpec, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of the completed parts of a landscape directory, in (host, part, row) order, without
    the checks of `read_landscape` (the summary may not exist yet)."""
    paths = [p for _, _, p in iter_done_parts(out_dir)]
    if not paths:
        raise PplawError(f"{out_dir}: no completed landscape parts (expected {PARTS}/host*-part*.done)")
    tables = []
    for p in paths:
        try:
            tables.append(read_parquet_table(p, columns=columns))
        except (OSError, pa.ArrowException) as e:
            raise PplawError(f"{p}: cannot read landscape part ({e})") from e
    return pa.concat_tables(tables).to_pandas()


def write_summary(out_dir: PathSpec, process_count: int, info: Mapping[str, Any]) -> dict[str, Any]:
    """Aggregate all hosts' completed parts into ``histogram.png`` and then ``summary.json``;
    PplawError when the parts hold no chunk at all (an empty corpus is an error, not a landscape).

    ``wall_time_s`` is the scoring time of the slowest host (sum of its parts' times, over all
    attempts; model loading and compilation outside parts excluded), and ``tokens_per_s`` the
    corpus tokens over that time, i.e. the aggregate throughput of the hosts working in parallel.
    """
    done = list(iter_done_parts(out_dir))
    hosts = []
    for h in range(process_count):
        marker = read_json(host_marker(out_dir, h))
        found = [p for host, p, _ in done if host == h]
        if found != list(range(marker["parts"])):
            raise PplawError(f"{out_dir}: host {h} reports {marker['parts']} parts but the completed parts are {found}")
        hosts.append(marker)
    if any(host["rows"] for host in hosts):
        table = read_parts(out_dir, columns=["n_tokens", "sum_nll", "ppl", "n_bytes"])
        ppl, sum_nll, n_tokens, n_bytes = (table[c].to_numpy() for c in ("ppl", "sum_nll", "n_tokens", "n_bytes"))
    else:
        ppl = sum_nll = n_tokens = n_bytes = np.zeros(0)
    if ppl.size == 0:  # empty is not complete: no summary, so nothing downstream reads it as a landscape
        n_docs = sum(host["docs"] for host in hosts)
        raise PplawError(
            f"{info.get('data', out_dir)}: no scorable text ({n_docs} documents, none with a "
            "token to score); nothing was written as a landscape"
        )
    wall = max(host["seconds"] for host in hosts)
    tokens = sum(host["tokens"] for host in hosts)
    summary = {
        **info,
        "documents": sum(host["docs"] for host in hosts),
        "skipped": sum(host["skipped"] for host in hosts),
        "chunks": int(ppl.size),
        "tokens": tokens,
        "parts": sum(host["parts"] for host in hosts),
        **ppl_stats(ppl, sum_nll, n_tokens),
        **bits_per_byte(sum_nll, n_bytes),
        "wall_time_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else None,
    }
    if int(n_tokens.sum()) != tokens:
        raise PplawError(f"{out_dir}: part files hold {int(n_tokens.sum())} tokens, markers say {tokens}")
    plot_log_ppl_histogram(
        ppl, as_path(out_dir) / HISTOGRAM, f"{info.get('model', '')} | {info.get('data', '')} | {ppl.size} chunks"
    )
    write_json(as_path(out_dir) / SUMMARY, summary, sort_keys=True)
    return summary


# ---------------------------------------------------------------------- the validated reader
@dataclass
class Landscape:
    """A complete landscape: the selection columns as an Arrow table plus numpy views of
    ``ppl`` (float64) and ``n_tokens`` (int64), one entry per chunk, in landscape order."""

    path: AnyPath
    table: pa.Table
    ppl: np.ndarray
    n_tokens: np.ndarray
    # {"seq_len", "start_id"} the chunks were cut with (run_args.json): a selection's rows exist only under them
    chunking: dict

    @property
    def size(self) -> int:
        return self.ppl.size

    def values(self, moments: str) -> np.ndarray:
        """Per-chunk values whose mean and std are the moments of kind `moments` (ppl or log ppl)."""
        return chunk_values(self.ppl, moments)


def read_landscape(landscape_dir) -> Landscape:
    """Load the completed parts of a landscape directory; PplawError naming the file otherwise."""
    root = as_path(landscape_dir)
    if not root.is_dir():
        raise PplawError(f"{root}: landscape directory not found")
    if not (root / SUMMARY).exists():
        raise PplawError(
            f"{root}: landscape incomplete (no summary.json; is `pplaw score` still running or was it interrupted?)"
        )
    markers: list[AnyPath] = sorted((root / PARTS).glob("host*-part*.done"))
    if not markers:
        raise PplawError(f"{root / PARTS}: landscape has no completed parts (*.done markers)")
    summary = _read_summary(root / SUMMARY)
    if len(markers) != summary["parts"]:
        raise PplawError(
            f"{root / PARTS}: {len(markers)} completed parts, but summary.json records "
            f"{summary['parts']} (a part or its .done marker is missing)"
        )
    tables = [_read_part(marker) for marker in markers]
    table = pa.concat_tables(tables).combine_chunks()
    if table.num_rows == 0:
        raise PplawError(f"{root}: landscape has no chunks")
    tokens = int(pa.compute.sum(table.column("n_tokens")).as_py())
    if (table.num_rows, tokens) != (summary["chunks"], summary["tokens"]):
        raise PplawError(
            f"{root}: the parts hold {table.num_rows} chunks and {tokens} tokens, but "
            f"summary.json records {summary['chunks']} and {summary['tokens']}"
        )
    run_args = read_json(root / RUN_ARGS) if (root / RUN_ARGS).exists() else {}
    return Landscape(
        path=root,
        table=table,
        ppl=table.column("ppl").to_numpy(),
        n_tokens=table.column("n_tokens").to_numpy(),
        chunking={k: run_args.get(k) for k in ("seq_len", "start_id")},
    )


def _read_summary(path: AnyPath) -> dict:
    """The landscape's summary.json, with the counts its parts are checked against."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PplawError(f"{path}: cannot read ({e})") from None
    bad = [
        k
        for k in ("parts", "chunks", "tokens")
        if not isinstance(summary, dict) or not isinstance(summary.get(k), int) or isinstance(summary.get(k), bool)
    ]
    if bad:
        raise PplawError(f"{path}: field {bad[0]!r} missing or not an integer (is this a landscape summary?)")
    return summary


def _read_part(marker: AnyPath) -> pa.Table:
    path = marker.with_suffix(".parquet")
    if not path.exists():
        raise PplawError(f"{path}: missing, although its completion marker {marker.name} exists")
    try:
        expected_rows = int(json.loads(marker.read_text())["rows"])
    except (ValueError, KeyError, TypeError) as e:
        raise PplawError(f"{marker}: not a valid completion marker (need JSON with 'rows'): {e}") from None
    try:
        table = read_parquet_table(path)
    except (pa.ArrowException, OSError) as e:
        raise PplawError(f"{path}: cannot read Parquet: {e}") from None
    missing = [c for c in CHUNK_SCHEMA.names if c not in table.column_names]
    if missing:
        raise PplawError(
            f"{path}: column(s) {', '.join(missing)} missing (a landscape part needs {', '.join(CHUNK_SCHEMA.names)})"
        )
    if table.num_rows != expected_rows:
        raise PplawError(f"{path}: {table.num_rows} rows, but {marker.name} records {expected_rows}")
    try:
        table = table.select(list(CHUNK_SCHEMA.names)).cast(CHUNK_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise PplawError(f"{path}: column types do not match the landscape schema: {e}") from None
    n_tokens = table.column("n_tokens").to_numpy(zero_copy_only=False)
    ppl = table.column("ppl").to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((n_tokens < 1) | ~np.isfinite(ppl) | (ppl <= 0))
    if bad.size:
        r = int(bad[0])
        raise PplawError(
            f"{path}: row {r}: n_tokens must be >= 1 and ppl finite and > 0 "
            f"(got n_tokens={n_tokens[r]}, ppl={ppl[r]}); {bad.size} bad row(s)"
        )
    return table
