"""Which law a fit uses to select: the simplest law that fits the runs and predicts left-out design
points as well as the best.

Rule (`choose_law`), from each law's lack-of-fit test (`lack_of_fit`) and held-out error (whole
run groups left out, `point.heldout_error`):

1. a law rejected by the lack-of-fit test is out: its residual is not noise, so its optimum is
   not evidence (a law whose test cannot be made, for want of replicates, stays in and the choice
   says so);
2. among the others, the one with the least held-out RMSE of log-loss is the *best*; every other
   law's RMSE difference to it gets a 90% interval from resampling run groups
   (`point.compare_heldout`);
3. the chosen law is the one with the fewest parameters among those not detectably worse than the
   best (interval not above 0), ties broken by RMSE — the one-standard-error rule of model
   selection, so noise in the held-out error does not buy extra curvature.

With no law left (every law rejected, or none could be validated) nothing is chosen, and
selection refuses.  `assess_laws` computes what the rule rests on (each law's point fit, its
lack-of-fit test and its held-out error); `choose_law` applies the rule.  Pure: arrays in,
JSON-ready records out; the fit stage and the known-truth simulator both use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.law.forms import LAWS, get_law
from pplaw_jax.law.lack_of_fit import PureError, lack_of_fit, pure_error, replicated_mask
from pplaw_jax.law.point import HeldOut, PointFit, compare_heldout, fit_point, heldout_error
from pplaw_jax.law.runs import Runs

RULE = (
    "laws rejected by the lack-of-fit test (p < alpha) are excluded; among the rest, the law with the "
    "fewest parameters whose held-out RMSE of log-loss is not detectably above the best's (90% "
    "group-bootstrap interval of the difference not above 0), ties broken by RMSE"
)


@dataclass
class Assessment:
    """What the law choice rests on, per candidate law: its point fit (``fits``), lack-of-fit test
    (``lof``) and held-out error (``heldout``: a `HeldOut`, or a string saying why there is none),
    with the runs' pure error."""

    fits: dict[str, PointFit]
    lof: dict[str, dict]
    heldout: dict
    pure_error: PureError


def assess_laws(
    runs: Runs,
    laws=tuple(LAWS),
    *,
    alpha: float,
    n_random: int = 16,
    folds: int = 0,
    seed: int = 0,
    bootstrap: int = 0,
    outlier_share: float = 0.0,
    min_runs_per_param: float = 1.0,
) -> Assessment:
    """Each law's point fit (`bootstrap` refits, e.g. to start NUTS chains), its lack-of-fit test
    against the pure error of the replicated runs (trimmed of up to ``outlier_share`` of the runs as
    outliers, `lack_of_fit`) and, with more than one law, its held-out error (whole run groups left
    out).  A law with fewer than ``min_runs_per_param`` runs per parameter, or that the runs cannot
    fit or validate, is recorded with the reason."""
    pe = pure_error(runs)
    replicated = replicated_mask(runs)
    max_outliers = int(np.floor(outlier_share * runs.n))
    fits: dict[str, PointFit] = {}
    lof: dict[str, dict] = {}
    heldout: dict[str, HeldOut | str] = {}
    for name in laws:
        form = LAWS[name]
        needed = int(np.ceil(min_runs_per_param * len(form.param_names)))
        if runs.n < needed:
            heldout[name] = (
                f"too few runs for law {name!r}: {runs.n} < {min_runs_per_param:g} x its "
                f"{len(form.param_names)} parameters = {needed}"
            )
            continue
        try:
            fits[name] = fit_point(runs, form, n_random=n_random, bootstrap=bootstrap, seed=seed)
            lof[name] = lack_of_fit(
                fits[name].log_predict(runs.mu, runs.sigma, runs.tokens) - np.log(runs.loss),
                len(form.param_names),
                pe,
                alpha,
                max_outliers,
                replicated,
                runs.run_ids,
            )
            heldout[name] = (
                heldout_error(runs, form, folds=folds, seed=seed, full=fits[name])
                if len(laws) > 1
                else "one law: no comparison"
            )
        except PplawError as e:  # e.g. too few runs for the law, a fold too small: report it
            heldout.setdefault(name, str(e))
    return Assessment(fits, lof, heldout, pe)


def choose_law(heldout: dict, lof: dict, groups: np.ndarray, seed: int = 0) -> dict:
    """`heldout`: law -> `HeldOut` or a string (why it has none); `lof`: law -> `lack_of_fit`
    record.  Returns ``{rule, chosen, reason, best_heldout, rejected, untested, eligible,
    not_worse_than_best, differences_to_best}``."""
    scored = {k: r for k, r in heldout.items() if isinstance(r, HeldOut) and r.n_scored == r.per_run_log_error.size}
    rejected = sorted(k for k in scored if (lof.get(k) or {}).get("rejected") is True)
    untested = sorted(k for k in scored if (lof.get(k) or {}).get("rejected") is None)
    eligible = {k: r for k, r in scored.items() if k not in rejected}
    out: dict[str, Any] = {
        "rule": RULE,
        "chosen": None,
        "best_heldout": None,
        "rejected": rejected,
        "untested": untested,
        "eligible": sorted(eligible),
        "not_worse_than_best": [],
        "differences_to_best": {},
    }
    if not eligible:
        why = (
            "every law with a held-out error fails the lack-of-fit test"
            if scored
            else "no law could be validated on held-out groups"
        )
        return out | {"reason": f"no law chosen: {why}; no law is used to select"}
    best = min(eligible, key=lambda k: eligible[k].rmse_log)
    diffs = compare_heldout(eligible, groups, baseline=best, seed=seed)["differences"] if len(eligible) > 1 else {}
    keep = [best] + [k for k, d in diffs.items() if d.get("verdict") in ("no detectable difference", "better")]
    chosen = min(keep, key=lambda k: (len(get_law(k).param_names), eligible[k].rmse_log))
    reason = (
        f"{chosen!r}: "
        + (
            "the best held-out RMSE"
            if chosen == best
            else f"the fewest parameters among the laws not detectably worse than the best "
            f"({best!r}) on held-out groups"
        )
        + (f"; rejected by the lack-of-fit test: {', '.join(rejected)}" if rejected else "")
        + (f"; lack of fit untestable for: {', '.join(untested)}" if untested else "")
    )
    return out | {
        "chosen": chosen,
        "best_heldout": best,
        "not_worse_than_best": sorted(keep),
        "differences_to_best": diffs,
        "reason": reason,
    }
