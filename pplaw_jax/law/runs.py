"""Validated runs as arrays: `Runs` (one entry per (training subset, token count) measurement)
and its builders, `runs_from_frame` (a table already in memory, e.g. the runs table that
`pplaw_jax.fit.runs_table.read_runs` read) and `runs_from_arrays`.

Rows that share a group (every run of one design point or perplexity window: all its budgets and
replicates) are left out together by the held-out validation and resampled together by the
bootstrap, so a run is never predicted by its own twin at another budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pplaw_jax.errors import PplawError
from pplaw_jax.moments import columns

COLUMNS = ("mu", "sigma", "tokens", "loss")  # the internal names of the moments, budget and loss


@dataclass(frozen=True)
class Runs:
    """Validated runs, as float64 arrays of equal length ``n``.

    ``groups[i]`` is the integer group of row i (from ``group``, else ``run_id``, else one group
    per row); ``run_ids`` are the row labels used in messages and outputs; ``moments`` is the
    kind of ``mu`` and ``sigma``.
    """

    mu: np.ndarray
    sigma: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    groups: np.ndarray
    run_ids: tuple[str, ...]
    source: str
    moments: str = "ppl"

    @property
    def n(self) -> int:
        return len(self.loss)

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1 if self.n else 0

    def take(self, idx: np.ndarray) -> Runs:
        """The rows `idx` (may repeat, as in a bootstrap resample), groups renumbered densely."""
        idx = np.asarray(idx)
        _, groups = np.unique(self.groups[idx], return_inverse=True)
        return Runs(
            self.mu[idx],
            self.sigma[idx],
            self.tokens[idx],
            self.loss[idx],
            groups.reshape(-1),
            tuple(self.run_ids[i] for i in idx),
            self.source,
            self.moments,
        )


def runs_from_arrays(
    mu, sigma, tokens, loss, run_id=None, group=None, source: str = "<arrays>", moments: str = "ppl"
) -> Runs:
    """Build `Runs` from arrays with the same validation as the runs table's reader (used by
    tests, benchmarks and the simulator)."""
    frame = pd.DataFrame({"mu": mu, "sigma": sigma, "tokens": tokens, "loss": loss})
    if run_id is not None:
        frame["run_id"] = run_id
    if group is not None:
        frame["group"] = group
    return runs_from_frame(frame, source, COLUMNS, moments)


def runs_from_frame(frame: pd.DataFrame, source: str, required, moments: str) -> Runs:
    """Validate `frame` (columns `COLUMNS`, optional ``run_id`` and ``group``; the `required` ones
    must be present, absent others become 1) into `Runs`.  Every value must be a finite number
    > 0; PplawError names `source`, the CSV line (row + 2), the run and the column (labelled in
    `moments`' column names) of the first problem."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise PplawError(
            f"{source}: missing column(s) {', '.join(missing)} (have: {', '.join(map(str, frame.columns))})"
        )
    if len(frame) == 0:
        raise PplawError(f"{source}: no runs (empty table)")
    run_ids = (
        tuple(str(r) for r in frame["run_id"])
        if "run_id" in frame.columns
        else tuple(str(i) for i in range(len(frame)))
    )
    values = {}
    label = dict(zip(("mu", "sigma"), columns(moments)))
    for col in COLUMNS:
        if col not in frame.columns:
            values[col] = np.ones(len(frame))
            continue
        raw = frame[col]
        num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(num) | (num <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "run_id " + run_ids[i] + ", " if "run_id" in frame.columns else ""
            value = raw.iloc[i]
            shown = repr(value) if isinstance(value, str) else str(value)
            raise PplawError(
                f"{source}: line {i + 2} ({what}row {i}): column {label.get(col, col)!r} = {shown}; "
                f"must be a finite number > 0 ({int(bad.sum())} bad value(s) in this column)"
            )
        values[col] = num
    if "group" in frame.columns:
        blank = frame["group"].isna() | (frame["group"].astype(str).str.strip() == "")
        if blank.any():
            i = int(np.flatnonzero(blank.to_numpy())[0])
            raise PplawError(
                f"{source}: line {i + 2} (run {run_ids[i]}): column 'group' is blank; every run needs "
                "its group (the runs left out together when validating), or no group column at all"
            )
        _, groups = np.unique(frame["group"].astype(str).to_numpy(), return_inverse=True)
    elif "run_id" in frame.columns:
        _, groups = np.unique(np.asarray(run_ids), return_inverse=True)
    else:
        groups = np.arange(len(frame))
    return Runs(
        values["mu"],
        values["sigma"],
        values["tokens"],
        values["loss"],
        groups.reshape(-1),
        run_ids,
        source,
        moments,
    )
