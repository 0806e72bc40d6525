"""`RUN/metrics.jsonl`: one JSON object per training step (plus eval losses on evaluation steps),
and the same scalars as TensorBoard event files in `RUN/tensorboard/` (tensorboardX: a small
writer with no TensorFlow dependency).

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

    def __init__(self, path: str | os.PathLike, keep_through_step: int | None,
                 tensorboard_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        kept = [] if keep_through_step is None else [r for r in read_metrics(self.path) if r["step"] <= keep_through_step]
        write_jsonl(self.path, kept)
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard_dir is not None:
            from tensorboardX import SummaryWriter

            # purge_step: TensorBoard hides what an earlier (killed) session logged from the replayed
            # steps on, so the curves show one trajectory, like metrics.jsonl
            self._tb = SummaryWriter(str(tensorboard_dir), purge_step=(keep_through_step or 0) + 1)

    def write(self, row: dict) -> None:
        self._file.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and value is not None and math.isfinite(value):
                    self._tb.add_scalar(tensorboard_tag(key), value, row["step"])
            self._tb.flush()  # like the JSONL rows: what a kill leaves behind matches the checkpoints

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def tensorboard_tag(key: str) -> str:
    """``train/<key>`` for training figures, ``eval/<set>_loss`` for evaluation losses."""
    return f"eval/{key}" if key.endswith("_loss") and key != "train_loss" else f"train/{key}"
