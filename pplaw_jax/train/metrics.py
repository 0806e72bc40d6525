"""`RUN/metrics.jsonl`: one JSON object per training step (plus eval losses on evaluation steps).

The log must describe one uninterrupted trajectory even across kills and resumes: on resume it is
rewritten (atomically) to the rows at or before the restored checkpoint's step, dropping rows of
steps that will be replayed and a last line cut short by a kill. Rows are flushed as written, so
a killed process loses nothing the OS has already been handed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from pplaw_jax.fileio import write_jsonl


def _json_value(v):
    """Plain JSON values: integer arrays/scalars -> int, other numbers -> float, NaN/inf -> null."""
    if v is None or isinstance(v, (bool, str)):
        return v
    a = np.asarray(v)
    if a.dtype.kind in "iu":
        return int(a)
    f = float(a)
    return f if math.isfinite(f) else None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All complete rows of a metrics file (a truncated last line is ignored)."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # only the last line can be cut short by a kill
    return rows


class MetricsLog:
    """Append-only JSONL writer that first truncates the log to `keep_through_step` (None = empty)."""

    def __init__(self, path: str | os.PathLike, keep_through_step: int | None):
        self.path = Path(path)
        kept = [] if keep_through_step is None else [r for r in read_metrics(self.path) if r["step"] <= keep_through_step]
        write_jsonl(self.path, kept)
        self._file = open(self.path, "a")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
