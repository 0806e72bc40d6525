"""``pplaw select``: choose a training subset of a landscape under a token budget.

    pplaw select --landscape DIR --tokens BUDGET --out OUT
                 [--method dos|random|low|high|mid|full] [--moments ppl|logppl]
                 [--fit FITDIR [--target posterior|point] [--allow-boundary] | --target-mu M --target-sigma S]
                 [--selector tilted|bands] [--seed S]
    pplaw select design --landscape DIR --out OUTDIR --n N --budgets B1 B2 ... [--centre K]
                 [--selector tilted|bands] [--moments ppl|logppl] [--seed S]
    pplaw select windows --landscape DIR --out OUTDIR [--budgets 1e5 3e5 1e6]
                 [--windows 0-0.2 0.2-0.4 ...] [--seed S]

The first form writes ``OUT/selection.parquet`` and ``OUT/summary.json``; ``design`` and
``windows`` write one such directory per law-fitting subset plus ``OUTDIR/manifest.csv`` and, last,
``OUTDIR/design.json`` / ``OUTDIR/windows.json``.  ``--method dos`` takes its target from ``--fit``
(``--target posterior`` by default when the fit has a posterior, else ``point``) or from
``--target-mu/--target-sigma`` and realises it with ``--selector`` (the family the design used).
A fit-chosen target must lie where the fitted runs give support and pass the interior-optimum
check (`target`); otherwise the command writes ``OUT/refused.json`` and exits 2.  With ``--fit``
every method also reports the law's predicted loss for its subset, in the fit's moments.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import pandas as pd

from pplaw_jax.commands import DesignCommand, SelectCommand, WindowsCommand, add_command
from pplaw_jax.config import (
    MAX_BOUNDARY_FRACTION,
    MOMENTS_DEFAULT,
    SELECTOR_DEFAULT,
    DesignConfig,
    SelectConfig,
    WindowsConfig,
    parser_options,
)
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import atomic_write, json_digest, write_json
from pplaw_jax.fit.fitdir import FIT_JSON, load_fit
from pplaw_jax.landscape.directory import Landscape, read_landscape
from pplaw_jax.law import predict_loss
from pplaw_jax.law.predictive import predictive
from pplaw_jax.moments import check_moments, subset_moments
from pplaw_jax.paths import AnyPath, as_path
from pplaw_jax.select.baselines import select_baseline
from pplaw_jax.select.core import Selection, parse_budget, take_all_if_short
from pplaw_jax.select.design import build_design
from pplaw_jax.select.dos import RankedLandscape
from pplaw_jax.select.io import SELECTION_PARQUET, SUMMARY_JSON, write_selection
from pplaw_jax.select.selectors import select_target
from pplaw_jax.select.target import Refusal, choose_target
from pplaw_jax.select.windows import parse_window, select_windows

REFUSED_JSON = "refused.json"
MANIFEST_COLUMNS = [
    "name",
    "group",
    "replicate",
    "seed",
    "budget",
    "tokens",
    "n_chunks",
    "mu_ppl",
    "sigma_ppl",
    "mu_logppl",
    "sigma_logppl",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, SelectCommand)
    modes = parser.add_subparsers(dest="mode", metavar="{design,windows}")
    options = parser_options()
    options.pop("parser_class")
    for cls, text, example in (
        (
            DesignCommand,
            "the space-filling 2-D design of law-fitting subsets",
            "pplaw select design --landscape land --n 21 --budgets 1e4 4e4 1.6e5 --centre 3 --out grid",
        ),
        (
            WindowsCommand,
            "the paper's grid of perplexity-quantile windows x budgets",
            "pplaw select windows --landscape land --budgets 1e5 3e5 1e6 --out grid",
        ),
    ):
        sub = modes.add_parser(cls.WORDS[1], help=text, description=text, epilog=f"example:\n  {example}", **options)
        add_command(sub, cls)


def run(args: SelectCommand | DesignCommand | WindowsCommand) -> int:
    if isinstance(args, WindowsCommand):
        return _run_windows(args, args.cfg)
    if isinstance(args, DesignCommand):
        return _run_design(args, args.cfg)
    for flag in ("--landscape", "--out"):
        if getattr(args, flag[2:]) is None:
            raise PplawError(f"the following arguments are required: {flag}")
    return _run_select(args, args.cfg)


def _reject(cfg: SelectConfig, args, names: list[str], context: str) -> None:
    """Settings given that `context` does not use (defaults are None or False: "not given")."""
    for name in names:
        key = name.lstrip("-").replace("-", "_")
        value = getattr(cfg, key) if hasattr(cfg, key) else getattr(args, key)
        if value is not None and value is not False:
            raise PplawError(f"{name} is not used by {context}")


def _run_select(args, cfg: SelectConfig) -> int:
    method = cfg.method
    if args.tokens is None and method != "full":
        raise PplawError(f"--tokens is required for --method {method}")
    budget = None if args.tokens is None else parse_budget(args.tokens)
    given = (args.target_mu, args.target_sigma)
    if (given[0] is None) != (given[1] is None):
        raise PplawError("give both --target-mu and --target-sigma, or neither")
    explicit = None if given[0] is None else given
    if method != "dos":
        _reject(
            cfg,
            args,
            [
                "--target",
                "--target-mu",
                "--target-sigma",
                "--selector",
                "--allow-boundary",
                "--allow-lack-of-fit",
                "--max-boundary-fraction",
                "--trust-margin",
            ],
            f"--method {method}",
        )
    if explicit is not None:
        _reject(
            cfg,
            args,
            ["--target", "--allow-boundary", "--allow-lack-of-fit", "--max-boundary-fraction", "--trust-margin"],
            "an explicit --target-mu/--target-sigma",
        )
    if method == "dos" and explicit is None and args.fit is None:
        raise PplawError("--method dos needs --fit FITDIR or --target-mu M --target-sigma S")

    fit = None if args.fit is None else load_fit(args.fit)
    moments = _moments(cfg.moments, fit)
    landscape = read_landscape(args.landscape)
    out = as_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (SUMMARY_JSON, REFUSED_JSON, SELECTION_PARQUET):  # this directory is now incomplete
        (out / stale).unlink(missing_ok=True)
    values = landscape.values(moments)
    extra: dict = {}
    if method == "dos":
        assert budget is not None  # --tokens is required for every method but full (checked above)
        try:
            sel, extra = _dos(args, cfg, landscape, values, budget, fit, explicit)
        except Refusal as e:
            write_json(
                out / REFUSED_JSON,
                {
                    "method": "dos",
                    "budget": budget,
                    "moments": moments,
                    "fit": args.fit,
                    "message": str(e),
                    **e.details,
                },
            )
            raise
    else:
        sel = select_baseline(method, values, landscape.n_tokens, budget, args.seed, _allowed(args, landscape))
    summary = summary_record(method, budget, sel, args.seed, landscape, moments, fit=args.fit, **extra)
    if fit is not None:
        summary.update(predicted_losses(fit, sel))
    write_selection(out, landscape, sel.indices, summary)
    print(
        json.dumps(
            {
                "out": str(out),
                "method": method,
                "chunks": sel.n_chunks,
                "tokens": sel.tokens,
                "budget": budget,
                "mu": sel.mu,
                "sigma": sel.sigma,
                "moments": moments,
                "note": extra.get("target_note"),
            }
        )
    )
    return 0


def _allowed(args, landscape: Landscape):
    """--labels: whether each landscape chunk's document is labelled clean (None without it)."""
    if args.labels is None:
        if args.cfg.method == "oracle":
            raise PplawError("--method oracle needs --labels CORPUS (from `pplaw data contaminate`)")
        return None
    if args.cfg.method != "oracle":
        raise PplawError(f"--labels is only used by --method oracle, not {args.cfg.method}")
    from pplaw_jax.data.contaminate import clean_doc_ids

    clean = clean_doc_ids(args.labels, args.id_field)
    allowed = np.isin(
        landscape.table.column("doc_id").to_numpy(zero_copy_only=False).astype(str), np.array(sorted(clean), dtype=str)
    )
    if not allowed.any():
        raise PplawError(
            f"--labels {args.labels}: no document of the landscape is labelled clean there "
            "(is it the corpus the landscape scored?)"
        )
    return allowed


def _moments(given: str | None, fit) -> str:
    """The moment kind: the fit's, which an explicit --moments must agree with."""
    if fit is None:
        return check_moments(given or MOMENTS_DEFAULT)
    if given is not None and given != fit.moments:
        raise PplawError(f"--moments {given}: the fit {fit.fit_dir} is in {fit.moments} moments")
    return fit.moments


def _dos(args, cfg: SelectConfig, landscape: Landscape, values, budget: int, fit, explicit) -> tuple[Selection, dict]:
    """Choose the target (explicit, or from the fit with the interior check) and realise it with
    the selector; summary fields besides the common ones."""
    selector = cfg.selector or SELECTOR_DEFAULT
    messages: list[str] = []
    short = take_all_if_short(values, landscape.n_tokens, budget, "dos", messages)
    if short is not None:
        return short, {"target": None, "selector": selector}
    space = RankedLandscape(values, landscape.n_tokens, budget)
    extra: dict = {"selector": selector, "attainable_region": space.region.describe()}
    if explicit is not None:
        mu, sigma = explicit
        source = "explicit"
    else:
        if not cfg.allow_lack_of_fit:
            _check_usable(fit)
        draws, draws_source = fit.posterior_draws(), "posterior"
        if draws is None:
            draws, draws_source = fit.bootstrap_draws(), "bootstrap"
        if cfg.target == "posterior" and draws_source != "posterior":
            raise PplawError(
                "--target posterior needs a fit with a Bayesian posterior (posterior.nc); use --target point"
            )
        choice = choose_target(
            space.region,
            fit.law,
            fit.point_params,
            draws,
            budget,
            fit.support(cfg.trust_margin),
            draws_source=draws_source,
            allow_boundary=cfg.allow_boundary,
            max_boundary_fraction=(
                MAX_BOUNDARY_FRACTION if cfg.max_boundary_fraction is None else cfg.max_boundary_fraction
            ),
        )
        source = cfg.target or ("posterior" if choice.posterior is not None else "point")
        target = choice.get(source)
        mu, sigma = target.mu, target.sigma
        extra["target_choice"] = choice.as_dict()
        if (choice.interior.get("fraction_at_corpus_edge") or 0) > 0.5:
            extra["target_note"] = (
                "the optimum lies on the edge of what this landscape can supply at the budget, "
                "inside the runs' support: select as far as the corpus allows (e.g. drop a tail)"
            )
    sel = select_target(selector, values, landscape.n_tokens, budget, mu, sigma, seed=args.seed, spaces={budget: space})
    extra.update(
        target={**sel.info["target"], "source": source},
        attainable=sel.info["attainable"],
        distance=sel.info["distance"],
        weights=sel.info["weights"],
        tilt=sel.info.get("tilt"),
    )
    return sel, extra


def _check_usable(fit) -> None:
    """A law that failed its lack-of-fit test (or a fit where no law could be chosen) is not used
    to select: `Refusal`."""
    choice = fit.info.get("law_choice") or {}
    if choice.get("usable", True):
        return
    lof = ((fit.info.get("lack_of_fit") or {}).get("laws") or {}).get(fit.law) or {}
    raise Refusal(
        f"{fit.fit_dir / FIT_JSON}: no law fits these runs well enough to select with "
        f"({choice.get('reason')}; {fit.law!r}: {lof.get('note', 'lack of fit')}). Random is the "
        "recommendation at this budget; add replicated runs or a more flexible law (--law) and refit, or "
        "pass --allow-lack-of-fit to select anyway",
        {"refused": "lack of fit", "law": fit.law, "law_choice": choice, "lack_of_fit": lof},
    )


def predicted_losses(fit, sel: Selection, level: float = 0.9) -> dict:
    """The law's loss for a subset's ``(mu, sigma, tokens)`` (in the fit's moments): point
    estimate and, with a posterior, its mean, sd, credible interval and the predictive interval of
    a measured loss (`law.predictive`)."""
    out: dict[str, Any] = {
        "predicted_loss": float(predict_loss(fit.law, fit.point_params, sel.mu, sel.sigma, sel.tokens)),
        "predicted_loss_posterior": None,
    }
    draws = fit.posterior_draws()
    if draws is not None:
        likelihood, df = fit.likelihood
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            pred = predictive(fit.law, draws, fit.noise_draws(), likelihood, df, sel.mu, sel.sigma, sel.tokens, level)
        out["predicted_loss_posterior"] = {
            "mean": float(pred["mean"][0]),
            "level": level,
            "ci": [float(pred["ci_lo"][0]), float(pred["ci_hi"][0])],
            "pi": [float(pred["pi_lo"][0]), float(pred["pi_hi"][0])] if "pi_lo" in pred else None,
        }
    return out


LANDSCAPE_TIMING = ("run_seconds", "wall_time_s", "tokens_per_s")  # summary.json fields that vary run to run
FIT_TIMING = ("created", "wall_s")


def summary_record(
    method: str,
    budget: int | None,
    sel: Selection,
    seed: int,
    landscape: Landscape,
    moments: str,
    fit: str | None = None,
    **extra,
) -> dict:
    """The selection summary.json: the contract fields first, method-specific fields after.
    ``mu, sigma`` are in `moments`; ``moments_all`` has both kinds (the runs.csv columns)."""
    record = {
        "method": method,
        "budget": budget,
        "tokens": sel.tokens,
        "n_chunks": sel.n_chunks,
        "moments": moments,
        "mu": sel.mu,
        "sigma": sel.sigma,
        "moments_all": subset_moments(landscape.ppl[sel.indices]),
        "target": None,
        "distance": None,
        "predicted_loss": None,
        "seed": seed,
        "landscape": str(landscape.path),
        "landscape_chunks": landscape.size,
        "landscape_tokens": int(landscape.n_tokens.sum()),
        "fit": fit,
        # the chunking the (document, chunk) rows mean something under (checked by pplaw train)
        "landscape_seq_len": landscape.chunking["seq_len"],
        "landscape_start_id": landscape.chunking["start_id"],
        # what the selection was made from: the landscape's summary and the fit's fit.json
        "landscape_digest": json_digest(landscape.path / SUMMARY_JSON, LANDSCAPE_TIMING),
        "fit_digest": _fit_digest(fit),
    }
    record.update(extra)
    record["warning"] = "; ".join(sel.warnings) or None
    return record


def _fit_digest(fit: str | None) -> str | None:
    if fit is None:
        return None
    path = as_path(fit) / FIT_JSON if as_path(fit).is_dir() else as_path(fit)
    return json_digest(path, FIT_TIMING) if path.is_file() else None


def _write_manifest(out: AnyPath, rows: list[dict]) -> None:
    manifest = pd.DataFrame(rows)
    atomic_write(out / "manifest.csv", lambda tmp: manifest.to_csv(tmp, index=False))


def _manifest_row(
    name: str, group: str, replicate: int, seed: int, budget: int, sel: Selection, landscape: Landscape, **extra
) -> dict:
    return {
        "name": name,
        "group": group,
        "replicate": replicate,
        "seed": seed,
        "budget": budget,
        "tokens": sel.tokens,
        "n_chunks": sel.n_chunks,
        **subset_moments(landscape.ppl[sel.indices]),
        **extra,
    }


def _run_design(args, cfg: DesignConfig) -> int:
    moments, selector, centre = cfg.moments, cfg.selector, cfg.centre
    budgets = tuple(parse_budget(b, "--budgets") for b in cfg.budgets)
    landscape = read_landscape(args.landscape)
    points, selections, diagnostics = build_design(
        landscape.values(moments), landscape.n_tokens, budgets, cfg.n, centre, selector, args.seed
    )
    out = as_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("design.json", "manifest.csv"):
        (out / stale).unlink(missing_ok=True)
    rows = []
    for p, sel in zip(points, selections):
        summary = summary_record(
            "design",
            p.budget,
            sel,
            args.seed + p.seed,
            landscape,
            moments,
            selector=selector,
            group=p.group,
            replicate=p.replicate,
            target={"mu": p.target_mu, "sigma": p.target_sigma},
            distance=sel.info["distance"],
            tilt=sel.info.get("tilt"),
        )
        write_selection(out / p.name, landscape, sel.indices, summary)
        rows.append(
            _manifest_row(
                p.name,
                p.group,
                p.replicate,
                p.seed,
                p.budget,
                sel,
                landscape,
                target_mu=p.target_mu,
                target_sigma=p.target_sigma,
                distance=sel.info["distance"],
            )
        )
    _write_manifest(out, rows)
    write_json(
        out / "design.json",
        {
            "landscape": str(landscape.path),
            "moments": moments,
            "selector": selector,
            "seed": args.seed,
            "n": cfg.n,
            "centre": centre,
            "budgets": list(budgets),
            "diagnostics": diagnostics,
            "subsets": [p.name for p in points],
        },
    )
    real = diagnostics["realised"]
    print(
        json.dumps(
            {
                "out": str(out),
                "subsets": len(points),
                "selector": selector,
                "moments": moments,
                "corr_log_mu_log_sigma": real["corr_log_mu_log_sigma"],
                "max_vif": max(real["vif_main"].values()),
            }
        )
    )
    return 0


def _run_windows(args, cfg: WindowsConfig) -> int:
    moments = cfg.moments
    budgets = tuple(parse_budget(b, "--budgets") for b in cfg.budgets)
    windows = tuple(parse_window(w) for w in cfg.windows)
    landscape = read_landscape(args.landscape)
    subsets, skipped, messages = select_windows(
        landscape.values(moments), landscape.n_tokens, windows, budgets, args.seed
    )
    if not subsets:
        raise PplawError(
            f"{args.landscape}: no window holds enough tokens for any budget "
            f"({landscape.n_tokens.sum()} tokens in all); lower --budgets"
        )
    out = as_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("windows.json", "manifest.csv"):
        (out / stale).unlink(missing_ok=True)
    rows = []
    for s in subsets:
        group = s.name.rsplit("_b", 1)[0]
        summary = summary_record(
            "window",
            s.budget,
            s.selection,
            args.seed,
            landscape,
            moments,
            group=group,
            window={"name": s.name, "lo_q": s.lo_q, "hi_q": s.hi_q},
        )
        write_selection(out / s.name, landscape, s.selection.indices, summary)
        rows.append(_manifest_row(s.name, group, 0, 0, s.budget, s.selection, landscape, lo_q=s.lo_q, hi_q=s.hi_q))
    _write_manifest(out, rows)
    write_json(
        out / "windows.json",
        {
            "landscape": str(landscape.path),
            "moments": moments,
            "seed": args.seed,
            "budgets": list(budgets),
            "windows": [list(w) for w in windows],
            "subsets": [s.name for s in subsets],
            "skipped": skipped,
            "warning": "; ".join(messages) or None,
        },
    )
    print(json.dumps({"out": str(out), "subsets": len(subsets), "skipped": len(skipped)}))
    return 0
