"""The runs table ``runs.csv``: one row per (training subset, token count) measurement — its
schema, its writer (`collect_runs` from finished CPT runs, `write_runs_table`) and its validated
reader (`read_runs`).

Columns: the subset's moments ``mu_<kind>``, ``sigma_<kind>`` for the moment kind the law is
fitted in (``mu_ppl, sigma_ppl`` and/or ``mu_logppl, sigma_logppl``, see `pplaw_jax.moments`),
``tokens`` (training tokens D, raw count), ``loss`` (the measured metric, e.g. domain test loss),
optional ``run_id`` and ``group``.  Rows that share a ``group`` (every run of one design point or
perplexity window: all its budgets and replicates; without the column, rows that share a
``run_id``) are left out together by the held-out validation and resampled together by the
bootstrap, so a run is never predicted by its own twin at another budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pplaw_jax.errors import PplawError
from pplaw_jax.law.forms import LawForm
from pplaw_jax.moments import columns

COLUMNS = ("mu", "sigma", "tokens", "loss")  # the internal names, after reading
# what `collect_runs` writes, in order: identity, the law's loss, every loss, both moment kinds
TABLE_COLUMNS = ("run_id", "group", "round", "tokens", "loss", "domain_loss", "general_loss", "target_loss",
                 "mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl")


def run_row(run_id: str, group: str, run_dir, round_: int, metric: str) -> dict:
    """One table row from a finished run's ``eval.json`` (`pplaw train`); `metric` is the loss."""
    import json

    path = Path(run_dir) / "eval.json"
    if not path.is_file():
        raise PplawError(f"{path}: no such file (the run {run_id!r} is not finished)")
    ev = json.loads(path.read_text())
    if ev.get(metric) is None:
        raise PplawError(f"{path}: no {metric} (train the run with its evaluation set)")
    return dict(run_id=run_id, group=group, round=round_, tokens=ev["tokens"], loss=ev[metric],
                domain_loss=ev["domain_loss"], general_loss=ev.get("general_loss"),
                target_loss=ev.get("target_loss"),
                **{k: ev[k] for k in ("mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl")})


def collect_runs(metric: str, round_: int, include=None, manifest=None, runs_dir=None,
                 extra=()) -> pd.DataFrame:
    """The table: `include`'s rows, then one per subset of ``manifest/manifest.csv`` (its run in
    ``runs_dir/<name>``), then one per ``(group, run_dir)`` of `extra` (run_id = group)."""
    frames = []
    if include is not None:
        frames.append(pd.read_csv(include, dtype={"run_id": str, "group": str}))
    rows = []
    if manifest is not None:
        listed = pd.read_csv(Path(manifest) / "manifest.csv", dtype={"name": str, "group": str})
        rows += [run_row(r.name, r.group, Path(runs_dir) / r.name, round_, metric) for r in listed.itertuples()]
    rows += [run_row(group, group, path, round_, metric) for group, path in extra]
    if rows:
        frames.append(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(TABLE_COLUMNS))


def write_runs_table(path, table: pd.DataFrame) -> None:
    from pplaw_jax.fileio import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


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


def runs_from_arrays(mu, sigma, tokens, loss, run_id=None, group=None, source: str = "<arrays>",
                     moments: str = "ppl") -> Runs:
    """Build `Runs` from arrays with the same validation as `read_runs` (used by tests and benchmarks)."""
    frame = pd.DataFrame({"mu": mu, "sigma": sigma, "tokens": tokens, "loss": loss})
    if run_id is not None:
        frame["run_id"] = run_id
    if group is not None:
        frame["group"] = group
    return _validate(frame, source, COLUMNS, moments)


def read_runs(path, form: LawForm, moments: str = "ppl") -> Runs:
    """Read and validate `path` for fitting `form` in the moments of kind `moments`.

    The data-only law needs only ``tokens`` and ``loss``; every column that is present is still
    checked.  Raises PplawError naming the file, CSV line and column of the first problem.
    """
    path = Path(path)
    if not path.exists():
        raise PplawError(f"{path}: runs file not found")
    if not path.is_file():
        raise PplawError(f"{path}: not a file (expected a runs CSV)")
    try:
        frame = pd.read_csv(path, dtype={"run_id": str, "group": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PplawError(f"{path}: cannot parse as CSV: {e}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    mu_col, sigma_col = columns(moments)
    frame = frame.drop(columns=[c for c in ("mu", "sigma") if c in frame.columns])
    frame = frame.rename(columns={mu_col: "mu", sigma_col: "sigma"})
    required = COLUMNS if form.uses_perplexity else ("tokens", "loss")
    missing = [{"mu": mu_col, "sigma": sigma_col}.get(c, c) for c in required if c not in frame.columns]
    if missing:
        raise PplawError(f"{path}: missing column(s) {', '.join(missing)} for law {form.name!r} in "
                         f"{moments} moments (have: {', '.join(map(str, frame.columns))})")
    runs = _validate(frame, str(path), required, moments)
    if runs.n < len(form.param_names):
        raise PplawError(
            f"{path}: {runs.n} runs, fewer than the {len(form.param_names)} parameters of law "
            f"{form.name!r} ({', '.join(form.param_names)})"
        )
    return runs


def _validate(frame: pd.DataFrame, source: str, required, moments: str) -> Runs:
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
        _, groups = np.unique(frame["group"].astype(str).to_numpy(), return_inverse=True)
    elif "run_id" in frame.columns:
        _, groups = np.unique(np.asarray(run_ids), return_inverse=True)
    else:
        groups = np.arange(len(frame))
    return Runs(
        values["mu"], values["sigma"], values["tokens"], values["loss"], groups.reshape(-1), run_ids, source,
        moments,
    )
