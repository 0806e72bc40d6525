"""Lack-of-fit test of a law against the pure error of replicated runs.

A law that explains the runs leaves residuals no larger than the run-to-run noise.  That noise is
measured directly where runs are *replicated*: runs of one group (one design point: the same
target, re-drawn subset, another seed) at the same budget, such as the design's centre
replicates or the random controls of a sequential design (which share the group ``random``).
Their spread around their own mean is the **pure error**; it is what no function of
``(mu, sigma, D)`` can remove.  The classical F test (Draper & Smith, *Applied Regression
Analysis*, ch. 2.1) splits a law's residual sum of squares (on log-loss) into pure error and
lack of fit::

    SS_res = sum_i r_i^2                         df_res = n - p        (p: the law's parameters)
    SS_pe  = sum_sets sum_(i in set) (y_i - mean_set y)^2   df_pe = sum_sets (n_set - 1)
    SS_lof = SS_res - SS_pe                      df_lof = df_res - df_pe
    F = (SS_lof / df_lof) / (SS_pe / df_pe)      p = P(F(df_lof, df_pe) > F)

A small p says the law misses structure that the replicates show to be real: its residual is not
noise.  The residuals are those of the robust point fit (not exactly least squares, so the test is
slightly conservative towards rejection); the law's replicate predictions differ a little (the
re-drawn subsets' moments and token counts differ), so ``SS_lof`` can come out below 0, read as 0.
Without replicated runs (``df_pe = 0``) or with as many parameters as distinct runs
(``df_lof <= 0``) the test cannot be made, and says so.

Outliers (``max_outliers > 0``, `pplaw fit --outlier-share`): the point fit is robust (Huber), so
one run far off the law (e.g. a junk-dominated subset that does not improve with more tokens) moves
the fit little but can dominate ``SS_res`` and reject a law that describes every other run to the
pure error.  The trimmed test sets aside up to `max_outliers` unreplicated runs whose residual
exceeds `OUTLIER_PE` pure-error sds (worst first), tests the rest (``SS_res`` and ``df_res`` less
theirs; the pure error is untouched) and names them: the law is then accepted for the runs it
describes, and the report says which runs it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pplaw_jax.law.runs import Runs

SAME_BUDGET_RTOL = 0.05  # token counts within 5% are one budget (subsets fall short by < one chunk)
OUTLIER_PE = 5.0  # a run may be set aside as an outlier only beyond this many pure-error sds


def replicate_sets(runs: Runs) -> np.ndarray:
    """Index of each run's replicate set: runs of one group whose token counts agree within
    `SAME_BUDGET_RTOL` of the smallest in the set (sets of one run included)."""
    out = np.empty(runs.n, dtype=np.int64)
    k = 0
    for g in range(runs.n_groups):
        rows = np.flatnonzero(runs.groups == g)
        rows = rows[np.argsort(runs.tokens[rows], kind="stable")]
        start = None
        for i in rows:
            if start is None or runs.tokens[i] > runs.tokens[start] * (1 + SAME_BUDGET_RTOL):
                if start is not None:
                    k += 1
                start = i
            out[i] = k
        k += 1
    return out


@dataclass(frozen=True)
class PureError:
    """Pure error of log-loss from the replicated runs."""

    ss: float
    df: int
    n_sets: int  # sets with at least two runs
    n_replicated_runs: int

    @property
    def sd(self) -> float | None:
        return float(np.sqrt(self.ss / self.df)) if self.df > 0 else None

    def to_json(self) -> dict:
        return {
            "sd_log_loss": self.sd,
            "df": self.df,
            "ss": self.ss,
            "replicate_sets": self.n_sets,
            "replicated_runs": self.n_replicated_runs,
            "definition": "runs of one group at one budget (token counts within "
            f"{100 * SAME_BUDGET_RTOL:g}%) are replicates; pure error = their spread "
            "around their own mean, on log-loss",
        }


def replicated_mask(runs: Runs) -> np.ndarray:
    """Whether each run belongs to a replicate set of two or more."""
    sets = replicate_sets(runs)
    return np.bincount(sets)[sets] > 1


def pure_error(runs: Runs) -> PureError:
    """Pure error of ``log loss`` over `replicate_sets`."""
    y = np.log(runs.loss)
    sets = replicate_sets(runs)
    counts = np.bincount(sets)
    means = np.bincount(sets, weights=y) / counts
    ss = float(np.sum((y - means[sets]) ** 2))
    return PureError(
        ss=ss,
        df=int(np.sum(counts - 1)),
        n_sets=int(np.sum(counts > 1)),
        n_replicated_runs=int(np.sum(counts[counts > 1])),
    )


def lack_of_fit(
    log_residuals, n_params: int, pe: PureError, alpha: float, max_outliers: int = 0, replicated=None, run_ids=None
) -> dict:
    """The F test of one law (its residuals ``log predicted - log observed`` on the runs) against
    `pe`; ``rejected`` when ``p < alpha``, None when the test cannot be made.  With `max_outliers`,
    the trimmed test of the module doc (`replicated`: a mask of the runs in replicate sets, never
    set aside; `run_ids` name the runs set aside)."""
    r = np.asarray(log_residuals, dtype=float)
    outliers = []
    if max_outliers > 0 and pe.sd:
        free = ~np.asarray(replicated if replicated is not None else np.zeros(r.size), dtype=bool)
        order = np.argsort(-np.abs(r))
        outliers = [int(i) for i in order if free[i] and abs(r[i]) > OUTLIER_PE * pe.sd][:max_outliers]
    keep = np.ones(r.size, dtype=bool)
    keep[outliers] = False
    ss_res = float(np.sum(r[keep] ** 2))
    df_res = int(keep.sum() - n_params)
    names = [str(run_ids[i]) if run_ids is not None else str(i) for i in outliers]
    out = {
        "ss_residual": ss_res,
        "df_residual": df_res,
        "set_aside": names,
        "set_aside_residuals": [float(r[i]) for i in outliers],
        "max_outliers": int(max_outliers),
        "residual_sd_log_loss": float(np.sqrt(ss_res / df_res)) if df_res > 0 else None,
        "pure_error_sd_log_loss": pe.sd,
        "alpha": alpha,
        "F": None,
        "df": None,
        "p": None,
        "rejected": None,
    }
    df_lof = df_res - pe.df
    if pe.df == 0:
        return out | {"note": "untestable: no replicated runs (same group and budget) to measure the pure error"}
    if df_lof <= 0:
        return out | {
            "note": f"untestable: {n_params} parameters leave no degrees of freedom for lack of "
            f"fit beyond the {pe.df} of pure error"
        }
    ss_lof = max(ss_res - pe.ss, 0.0)
    f = (ss_lof / df_lof) / (pe.ss / pe.df) if pe.ss > 0 else (np.inf if ss_lof > 0 else 0.0)
    p = float(stats.f.sf(f, df_lof, pe.df))
    aside = f"; set aside as outliers: {', '.join(names)}" if names else ""
    return out | {
        "F": float(f),
        "df": [int(df_lof), int(pe.df)],
        "p": p,
        "rejected": bool(p < alpha),
        "note": (
            f"rejected: the residual ({out['residual_sd_log_loss']:.4g}) is larger than the "
            f"replicates' noise ({pe.sd:.4g}) beyond chance (p = {p:.2g} < {alpha:g}){aside}"
            if p < alpha
            else f"not rejected: residual {out['residual_sd_log_loss']:.4g} vs pure error "
            f"{pe.sd:.4g} (p = {p:.2g}){aside}"
        ),
    }
