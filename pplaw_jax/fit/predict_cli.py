"""``pplaw predict``: predicted loss with its interval from a fit directory.

Points come from ``--mu/--sigma/--tokens`` (one point; several values broadcast) or from
``--points CSV`` (columns mu, sigma, tokens; mu/sigma optional for the data-only law).  Prints a
CSV table to stdout (or ``--out FILE``): ``loss_point`` (robust point fit), ``loss_mean`` with
``ci_lo/ci_hi`` (credible interval of the law; bootstrap interval for a point-only fit) and, with a
Bayesian fit, ``pi_lo/pi_hi`` (predictive interval of a new run's measured loss); the table is
`predict_table`, the intervals `pplaw_jax.law.predictive`.  ``extrapolation`` names what lies
outside the runs that made the fit — ``support`` (outside their hull widened by the trust margin,
in the fit's moments) and/or ``tokens`` (outside their range of token counts) — or is empty: there
the law's intervals describe the law's uncertainty, not the error of extrapolating it, and are not
widened to cover it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from pplaw_jax.commands import PredictCommand, add_command
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import write_text
from pplaw_jax.fit.fitdir import Fit, load_fit
from pplaw_jax.law.forms import predict_loss
from pplaw_jax.law.predictive import predictive
from pplaw_jax.paths import as_path, source


def predict_table(fit: Fit, mu, sigma, tokens, level: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """One row per point: the point-fit loss, and the posterior (or bootstrap) mean and intervals."""
    if fit.law == "data":
        mu = np.nan if mu is None else mu
        sigma = np.nan if sigma is None else sigma
    mu, sigma, tokens = (np.atleast_1d(np.asarray(a, dtype=float)) for a in np.broadcast_arrays(mu, sigma, tokens))
    table = pd.DataFrame({"mu": mu, "sigma": sigma, "tokens": tokens})
    table["loss_point"] = predict_loss(fit.law, fit.point_params, mu, sigma, tokens)
    draws = fit.posterior_draws()
    if draws is not None:
        likelihood, df = fit.likelihood
        pred = predictive(fit.law, draws, fit.noise_draws(), likelihood, df, mu, sigma, tokens, level, seed)
        source = "posterior"
    else:
        draws = fit.bootstrap_draws()
        if draws is None:
            table["interval_source"] = "none"
            return table
        pred = predictive(fit.law, draws, None, "normal", None, mu, sigma, tokens, level, seed)
        source = "bootstrap"
    table["loss_mean"] = pred["mean"]
    table["ci_lo"], table["ci_hi"] = pred["ci_lo"], pred["ci_hi"]
    if "pi_lo" in pred:
        table["pi_lo"], table["pi_hi"] = pred["pi_lo"], pred["pi_hi"]
    table["interval_source"] = source
    return table


def extrapolation(fit: Fit, mu, sigma, tokens) -> list[str]:
    """Per point: '' inside the fitted runs' support and token range, else what lies outside
    (``support``, ``tokens``, or both joined by ``+``)."""
    lo, hi = (fit.info.get("runs") or {}).get("tokens") or [0.0, np.inf]
    outside_tokens = (np.asarray(tokens) < lo * (1 - 1e-9)) | (np.asarray(tokens) > hi * (1 + 1e-9))
    if fit.law == "data":
        outside_support = np.zeros_like(outside_tokens)
    else:
        outside_support = ~np.asarray(fit.support().contains(mu, sigma), dtype=bool)
    return [
        "+".join(w for w, o in (("support", s), ("tokens", t)) if o)
        for s, t in zip(np.broadcast_to(outside_support, np.shape(tokens)), outside_tokens)
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, PredictCommand)


def _points(args, law: str):
    needed = ("tokens",) if law == "data" else ("mu", "sigma", "tokens")
    if args.points:
        path = as_path(args.points)
        if not path.exists():
            raise PplawError(f"{path}: points file not found")
        try:
            frame = pd.read_csv(source(path))
        except pd.errors.EmptyDataError:
            raise PplawError(f"{path}: empty points file (expected a header with mu, sigma, tokens)") from None
        except (UnicodeDecodeError, pd.errors.ParserError) as e:
            raise PplawError(f"{path}: not a readable UTF-8 CSV ({' '.join(str(e).split())})") from None
        if frame.empty:
            raise PplawError(f"{path}: no points (a header but no rows)")
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise PplawError(f"{path}: missing column(s) {', '.join(missing)}")
        cols = {c: (frame[c].to_numpy() if c in frame.columns else None) for c in ("mu", "sigma", "tokens")}
        where = str(path)
    else:
        missing = [f"--{c}" for c in needed if getattr(args, c) is None]
        if missing:
            raise PplawError(f"give {', '.join(missing)} (or --points CSV)")
        cols = {
            c: (np.asarray(getattr(args, c)) if getattr(args, c) is not None else None)
            for c in ("mu", "sigma", "tokens")
        }
        where = "command line"
    for c in needed:
        v = pd.to_numeric(pd.Series(cols[c]), errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PplawError(
                f"{where}: {c} value {np.asarray(cols[c])[i].item()!r} (point {i}) must be a finite number > 0"
            )
        cols[c] = v
    try:
        np.broadcast_shapes(*(np.shape(v) for v in cols.values() if v is not None))
    except ValueError:
        raise PplawError(f"{where}: mu, sigma and tokens have incompatible lengths") from None
    return cols


def run(args) -> int:
    if not 0 < args.level < 1:
        raise PplawError(f"--level {args.level}: must be in (0, 1)")
    fit = load_fit(args.fit)
    pts = _points(args, fit.law)
    table = predict_table(fit, pts["mu"], pts["sigma"], pts["tokens"], args.level, args.seed)
    table["extrapolation"] = extrapolation(
        fit, table["mu"].to_numpy(), table["sigma"].to_numpy(), table["tokens"].to_numpy()
    )
    text = table.to_csv(index=False, float_format="%.6g")
    if args.out:
        write_text(as_path(args.out), text)
    else:
        sys.stdout.write(text)
    return 0
