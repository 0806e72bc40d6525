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
import time
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
    rows: list[dict] = []
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

    def __init__(
        self,
        path: str | os.PathLike,
        keep_through_step: int | None,
        tensorboard_dir: str | os.PathLike | None = None,
        hparams: dict | None = None,
    ):
        self.path = Path(path)
        kept = (
            [] if keep_through_step is None else [r for r in read_metrics(self.path) if r["step"] <= keep_through_step]
        )
        write_jsonl(self.path, kept)
        self._file = open(self.path, "a")
        self._tb = (
            None if tensorboard_dir is None else TensorBoardLog(tensorboard_dir, (keep_through_step or 0) + 1, hparams)
        )

    def write(self, row: dict) -> None:
        self._file.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")
        self._file.flush()
        if self._tb is not None:
            self._tb.write(row)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def tensorboard_tag(key: str) -> str:
    """``train/<key>`` for training figures, ``eval/<set>_loss`` for evaluation losses."""
    return f"eval/{key}" if key.endswith("_loss") and key != "train_loss" else f"train/{key}"


class TensorBoardLog:
    """The rows as TensorBoard scalars, written synchronously (tensorboardX's record writer).

    tensorboardX's SummaryWriter queues events for a background thread and its ``flush`` does not
    drain that queue, so a kill lost rows that metrics.jsonl and the checkpoint already held; here
    every row is written and flushed before `write` returns. Each session (a start or a resume)
    writes its own file, named ``events.out.tfevents.<time>.<host>.<session>`` so that files sort in
    the order they were written even within one second, and begins with a ``SessionLog.START`` at
    `purge_step`: TensorBoard then hides what earlier (killed) sessions logged from the replayed
    steps on, and the curves show one trajectory, like metrics.jsonl. With `hparams` (the run's
    subset moments, budget, seed, optimiser settings, selection digest), each session also writes
    them for TensorBoard's HParams dashboard, against the evaluation losses.
    """

    def __init__(self, directory: str | os.PathLike, purge_step: int, hparams: dict | None = None):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        session = len(list(directory.glob("events.out.tfevents.*")))
        self._writer = EventsWriter(str(directory / "events"), filename_suffix=f".{session:04d}")
        self._writer.write_event(
            Event(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START))
        )
        if hparams:
            from tensorboardX.summary import hparams as hparams_summaries

            values = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
            metrics = {tensorboard_tag(f"{name}_loss"): 0.0 for name in ("domain", "general", "target")}
            for summary in hparams_summaries(values, metrics):
                self._writer.write_event(Event(wall_time=time.time(), step=0, summary=summary))
        self._writer.flush()

    def write(self, row: dict) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        now = time.time()
        for key, value in row.items():
            if key != "step" and value is not None and math.isfinite(value):
                self._writer.write_event(
                    Event(wall_time=now, step=row["step"], summary=scalar(tensorboard_tag(key), value))
                )
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
