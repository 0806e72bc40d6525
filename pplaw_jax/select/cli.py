"""``pplaw select``: choose a training subset of a landscape under a token budget.

    pplaw select --landscape DIR --tokens BUDGET --out OUT
                 [--method dos|random|low|high|mid|full]
                 [--fit FITDIR [--target posterior|point] | --target-mu M --target-sigma S]
                 [--seed S]
    pplaw select windows --landscape DIR --out OUTDIR [--budgets 1e5 3e5 1e6]
                 [--windows 0-0.2 0.2-0.4 ...] [--seed S]

The first form writes ``OUT/selection.parquet`` and ``OUT/summary.json``; the second one such
directory per (window, budget) subset plus ``OUTDIR/manifest.csv`` and, last,
``OUTDIR/windows.json`` (parameters and skipped subsets).  ``--method dos`` takes its target from
``--fit`` (``--target posterior`` by default when the fit has a posterior, else ``point``) or from
``--target-mu/--target-sigma``; with ``--fit`` every method also reports the law's predicted loss
for its subset.  ``full`` ignores the budget (``--tokens`` is optional there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import atomic_write, write_json
from pplaw_jax.law import load_fit, predict_loss
from pplaw_jax.select.baselines import BASELINES, select_baseline
from pplaw_jax.select.core import Selection, parse_budget, take_all_if_short
from pplaw_jax.select.dos import RankedLandscape, dos_select
from pplaw_jax.select.io import Landscape, read_landscape, write_selection
from pplaw_jax.select.target import choose_target
from pplaw_jax.select.windows import (DEFAULT_BUDGETS, DEFAULT_WINDOWS, format_quantile,
                                      parse_window, select_windows)

METHODS = ("dos",) + BASELINES
MANIFEST_COLUMNS = ["name", "lo_q", "hi_q", "budget", "tokens", "mu", "sigma", "n_chunks"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", nargs="?", choices=["windows"],
                        help="'windows': write the law-fitting grid of quantile-window subsets "
                             "instead of one selection")
    parser.add_argument("--landscape", required=True, help="landscape directory from `pplaw score`")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random orders (default 0)")
    one = parser.add_argument_group("one selection")
    one.add_argument("--tokens", help="token budget in scored tokens, e.g. 1e6")
    one.add_argument("--method", choices=METHODS, help="selection method (default dos)")
    one.add_argument("--fit", help="fit directory from `pplaw fit` (DOS target, predicted loss)")
    one.add_argument("--target", choices=["posterior", "point"],
                     help="DOS target from the fit: least posterior expected loss (default when "
                          "posterior.nc exists) or least point-estimate loss")
    one.add_argument("--extrapolate", action="store_true",
                     help="let the fit-chosen DOS target leave the (mu, sigma) range of the runs the "
                          "law was fitted on (default: stay inside it, where the law is not "
                          "extrapolating)")
    one.add_argument("--target-mu", type=float, help="explicit DOS target mean ppl")
    one.add_argument("--target-sigma", type=float, help="explicit DOS target ppl std")
    grid = parser.add_argument_group("windows")
    grid.add_argument("--budgets", nargs="+",
                      help=f"token budgets (default {' '.join(f'{b:.0e}' for b in DEFAULT_BUDGETS)})")
    grid.add_argument("--windows", nargs="+", metavar="LO-HI",
                      help="ppl quantile windows, e.g. 0-0.2 0.2-0.4 (default: "
                           + " ".join(f"{format_quantile(lo)}-{format_quantile(hi)}"
                                      for lo, hi in DEFAULT_WINDOWS) + ")")


def run(args: argparse.Namespace) -> int:
    if args.mode == "windows":
        return _run_windows(args)
    return _run_select(args)


def _reject(args, names: list[str], context: str) -> None:
    for name in names:
        if getattr(args, name.lstrip("-").replace("-", "_")) is not None:
            raise PplawError(f"{name} is not used by {context}")


def _run_select(args) -> int:
    _reject(args, ["--budgets", "--windows"], "`pplaw select` (only by `pplaw select windows`)")
    method = args.method or "dos"
    if args.tokens is None and method != "full":
        raise PplawError(f"--tokens is required for --method {method}")
    budget = None if args.tokens is None else parse_budget(args.tokens)
    explicit = (args.target_mu, args.target_sigma)
    if (explicit[0] is None) != (explicit[1] is None):
        raise PplawError("give both --target-mu and --target-sigma, or neither")
    explicit = None if explicit[0] is None else explicit
    if method != "dos":
        _reject(args, ["--target", "--target-mu", "--target-sigma"], f"--method {method}")
    if explicit is not None and args.target is not None:
        raise PplawError("--target picks the target from --fit; drop it when giving "
                         "--target-mu/--target-sigma")
    if method == "dos" and explicit is None and args.fit is None:
        raise PplawError("--method dos needs --fit FITDIR or --target-mu M --target-sigma S")

    fit = None if args.fit is None else load_fit(args.fit)
    draws = None if fit is None else fit.posterior_draws()
    landscape = read_landscape(args.landscape)
    extra: dict = {}
    if method == "dos":
        box = None if fit is None or args.extrapolate else fitted_box(fit)
        sel, extra = _dos(landscape, budget, fit, draws, explicit, args.target, box)
    else:
        sel = select_baseline(method, landscape.ppl, landscape.n_tokens, budget, args.seed)
    summary = summary_record(method, budget, sel, args.seed, landscape, fit=args.fit, **extra)
    if fit is not None:
        summary.update(predicted_losses(fit.law, fit.point_params, draws, sel))
    out = write_selection(args.out, landscape, sel.indices, summary)
    print(f"{method}: {sel.n_chunks} chunks, {sel.tokens} tokens (budget {budget}), "
          f"mu={sel.mu:.4g}, sigma={sel.sigma:.4g} -> {out}")
    return 0


def fitted_box(fit) -> dict:
    """The (mu, sigma) range of the runs a fit was made on (fit.json `runs`)."""
    runs = fit.info["runs"]
    return {"mu": runs["mu"], "sigma": runs["sigma"]}


def _dos(landscape: Landscape, budget: int, fit, draws, explicit, kind, box) -> tuple[Selection, dict]:
    """Run DOS with an explicit or fit-chosen target; summary fields besides the common ones."""
    messages: list[str] = []
    short = take_all_if_short(landscape.ppl, landscape.n_tokens, budget, "dos", messages)
    if short is not None:
        return short, {"target": None}
    space = RankedLandscape(landscape.ppl, landscape.n_tokens, budget)
    extra: dict = {"attainable_region": space.region.describe()}
    if explicit is not None:
        mu, sigma = explicit
        source = "explicit"
    else:
        choice = choose_target(space.region, fit.law, fit.point_params, draws, budget, box)
        extra["target_box"] = box
        source = kind or ("posterior" if choice.posterior is not None else "point")
        target = choice.get(source)
        mu, sigma = target.mu, target.sigma
        extra["target_choice"] = choice.as_dict()
    sel = dos_select(space, mu, sigma)
    extra.update(target={**sel.info["target"], "source": source},
                 attainable=sel.info["attainable"], attainable_target=sel.info["attainable_target"],
                 distance=sel.info["distance"], weights=sel.info["weights"])
    return sel, extra


def predicted_losses(law: str, point_params, draws, sel: Selection) -> dict:
    """The law's loss for a subset's ``(mu, sigma, tokens)``: point estimate and, with draws,
    posterior mean, sd and 90% interval."""
    out = {"predicted_loss": float(predict_loss(law, point_params, sel.mu, sel.sigma, sel.tokens)),
           "predicted_loss_posterior": None}
    if draws is not None:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = predict_loss(law, draws, sel.mu, sel.sigma, sel.tokens)
        loss = loss[np.isfinite(loss)]
        if loss.size:
            out["predicted_loss_posterior"] = {
                "mean": float(loss.mean()), "sd": float(loss.std()),
                "q05": float(np.quantile(loss, 0.05)), "q95": float(np.quantile(loss, 0.95)),
                "draws": int(loss.size)}
    return out


def summary_record(method: str, budget: int | None, sel: Selection, seed: int,
                   landscape: Landscape, fit: str | None = None, **extra) -> dict:
    """The selection summary.json: the contract fields first, method-specific fields after."""
    record = {"method": method, "budget": budget, "tokens": sel.tokens, "n_chunks": sel.n_chunks,
              "mu": sel.mu, "sigma": sel.sigma, "target": None, "distance": None,
              "predicted_loss": None, "seed": seed,
              "landscape": str(landscape.path), "landscape_chunks": landscape.size,
              "landscape_tokens": int(landscape.n_tokens.sum()), "fit": fit}
    record.update(extra)
    record["warning"] = "; ".join(sel.warnings) or None
    return record


def _run_windows(args) -> int:
    _reject(args, ["--tokens", "--method", "--fit", "--target", "--target-mu", "--target-sigma"],
            "`pplaw select windows`")
    budgets = (DEFAULT_BUDGETS if args.budgets is None
               else tuple(parse_budget(b, "--budgets") for b in args.budgets))
    windows = DEFAULT_WINDOWS if args.windows is None else tuple(parse_window(w) for w in args.windows)
    landscape = read_landscape(args.landscape)
    subsets, skipped, messages = select_windows(landscape.ppl, landscape.n_tokens, windows,
                                                budgets, args.seed)
    if not subsets:
        raise PplawError(f"{args.landscape}: no window holds enough tokens for any budget "
                         f"({landscape.n_tokens.sum()} tokens in all); lower --budgets")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("windows.json", "manifest.csv"):
        (out / stale).unlink(missing_ok=True)
    rows = []
    for s in subsets:
        summary = summary_record("window", s.budget, s.selection, args.seed, landscape,
                                 window={"name": s.name, "lo_q": s.lo_q, "hi_q": s.hi_q})
        write_selection(out / s.name, landscape, s.selection.indices, summary)
        rows.append([s.name, s.lo_q, s.hi_q, s.budget, s.selection.tokens, s.selection.mu,
                     s.selection.sigma, s.selection.n_chunks])
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    atomic_write(out / "manifest.csv", lambda tmp: manifest.to_csv(tmp, index=False))
    write_json(out / "windows.json", {
        "landscape": str(landscape.path), "seed": args.seed, "budgets": list(budgets),
        "windows": [list(w) for w in windows], "subsets": [s.name for s in subsets],
        "skipped": skipped, "warning": "; ".join(messages) or None})
    print(f"windows: {len(subsets)} subsets written, {len(skipped)} skipped -> {out}")
    return 0
