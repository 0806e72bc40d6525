"""The runs table ``runs.csv``: one row per (training subset, token count) measurement — its
schema, its writer (`collect_runs` from finished CPT runs, `write_runs_table`) and its reader
(`read_runs_table`, the table as written; `read_runs`, validated into `pplaw_jax.law.runs.Runs`
for fitting).

Columns: the subset's moments ``mu_<kind>``, ``sigma_<kind>`` for the moment kind the law is
fitted in (``mu_ppl, sigma_ppl`` and/or ``mu_logppl, sigma_logppl``, see `pplaw_jax.moments`),
``tokens`` (training tokens D: what the run trained on, its ``trained_tokens``, which is the subset's
size only for a run of exactly one epoch), ``subset_tokens`` (the selection's size, for the record),
``loss`` (the measured metric, e.g. domain validation loss), optional ``run_id`` and ``group``.
Rows that share a ``group`` (every run of one design point or
perplexity window: all its budgets and replicates; without the column, rows that share a
``run_id``) are left out together by the held-out validation and resampled together by the
bootstrap, so a run is never predicted by its own twin at another budget.
"""

from __future__ import annotations

import pandas as pd

from pplaw_jax.errors import PplawError
from pplaw_jax.law.forms import LawForm
from pplaw_jax.law.runs import COLUMNS, Runs, runs_from_frame
from pplaw_jax.moments import columns
from pplaw_jax.paths import as_path, source

# what `collect_runs` writes, in order: identity, the law's loss, every loss, both moment kinds
TABLE_COLUMNS = (
    "run_id",
    "group",
    "round",
    "tokens",
    "loss",
    "domain_loss",
    "general_loss",
    "target_loss",
    "mu_ppl",
    "sigma_ppl",
    "mu_logppl",
    "sigma_logppl",
    "subset_tokens",
)


def run_row(run_id: str, group: str, run_dir, round_: int, metric: str) -> dict:
    """One table row from a finished run's ``eval.json`` (`pplaw train`); `metric` is the loss."""
    import json

    path = as_path(run_dir) / "eval.json"
    if not path.is_file():
        raise PplawError(f"{path}: no such file (the run {run_id!r} is not finished)")
    ev = json.loads(path.read_text())
    if ev.get(metric) is None:
        raise PplawError(f"{path}: no {metric} (train the run with its evaluation set)")
    return dict(
        run_id=run_id,
        group=group,
        round=round_,
        tokens=ev.get("trained_tokens", ev["tokens"]),
        loss=ev[metric],
        domain_loss=ev["domain_loss"],
        general_loss=ev.get("general_loss"),
        target_loss=ev.get("target_loss"),
        **{k: ev[k] for k in ("mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl")},
        subset_tokens=ev["tokens"],
    )


def collect_runs(metric: str, round_: int, include=None, manifest=None, runs_dir=None, extra=()) -> pd.DataFrame:
    """The table: `include`'s rows, then one per subset of ``manifest/manifest.csv`` (its run in
    ``runs_dir/<name>``), then one per ``(group, run_dir)`` of `extra` (run_id = the directory's
    name).  A run directory named twice is refused: a duplicated run is not evidence."""
    frames = []
    if include is not None:
        frames.append(read_runs_table(include))
    rows = []
    if manifest is not None:
        listed = pd.read_csv(source(as_path(manifest) / "manifest.csv"), dtype={"name": str, "group": str})
        rows += [run_row(r.name, r.group, as_path(runs_dir) / r.name, round_, metric) for r in listed.itertuples()]
    rows += [run_row(as_path(path).name, group, path, round_, metric) for group, path in extra]
    dirs = [as_path(runs_dir) / r["run_id"] for r in rows[: len(rows) - len(extra)]] + [as_path(p) for _, p in extra]
    seen: dict = {}
    for d in dirs:
        key = str(d.resolve()) if hasattr(d, "resolve") else str(d)
        if key in seen:
            raise PplawError(
                f"run directory {d} is collected twice (also as {seen[key]}): a duplicated run is not evidence"
            )
        seen[key] = d
    if rows:
        frames.append(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(TABLE_COLUMNS))


def write_runs_table(path, table: pd.DataFrame) -> None:
    from pplaw_jax.fileio import atomic_write

    as_path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def read_runs_table(path) -> pd.DataFrame:
    """The table at `path` as written (``run_id`` and ``group`` as strings, header names
    stripped); PplawError naming the file when it is missing or not a CSV."""
    path = as_path(path)
    if not path.exists():
        raise PplawError(f"{path}: runs file not found")
    if not path.is_file():
        raise PplawError(f"{path}: not a file (expected a runs CSV)")
    try:
        frame = pd.read_csv(source(path), dtype={"run_id": str, "group": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PplawError(f"{path}: cannot parse as CSV: {e}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def read_runs(path, form: LawForm, moments: str = "ppl") -> Runs:
    """Read and validate `path` for fitting `form` in the moments of kind `moments`.

    The data-only law needs only ``tokens`` and ``loss``; every column that is present is still
    checked.  Raises PplawError naming the file, CSV line and column of the first problem.
    """
    path = as_path(path)
    frame = read_runs_table(path)
    mu_col, sigma_col = columns(moments)
    frame = frame.drop(columns=[c for c in ("mu", "sigma") if c in frame.columns])
    frame = frame.rename(columns={mu_col: "mu", sigma_col: "sigma"})
    required = COLUMNS if form.uses_perplexity else ("tokens", "loss")
    missing = [{"mu": mu_col, "sigma": sigma_col}.get(c, c) for c in required if c not in frame.columns]
    if missing:
        raise PplawError(
            f"{path}: missing column(s) {', '.join(missing)} for law {form.name!r} in "
            f"{moments} moments (have: {', '.join(map(str, frame.columns))})"
        )
    _refuse_duplicates(frame, path)
    runs = runs_from_frame(frame, str(path), required, moments)
    if runs.n < len(form.param_names):
        raise PplawError(
            f"{path}: {runs.n} runs, fewer than the {len(form.param_names)} parameters of law "
            f"{form.name!r} ({', '.join(form.param_names)})"
        )
    return runs


def _refuse_duplicates(frame: pd.DataFrame, path) -> None:
    """A row repeated (every column equal) or a run id named twice is a duplicated run, which a fit
    would count as independent evidence: PplawError naming both CSV lines."""
    for what, dup in (
        ("repeats", frame.duplicated(keep=False)),
        (
            "repeats the run_id of",
            frame["run_id"].notna() & frame.duplicated("run_id", keep=False)
            if "run_id" in frame.columns
            else pd.Series(False, index=frame.index),
        ),
    ):
        if dup.any():
            first = frame.index[dup][0]
            key = frame.loc[first] if what == "repeats" else frame.loc[first, ["run_id"]]
            same = frame.index[(frame[key.index] == key).all(axis=1)]
            raise PplawError(
                f"{path}: line {same[1] + 2} {what} line {same[0] + 2}: a duplicated run is not "
                "independent evidence; remove it"
            )
