"""`report.md` for a finished study: tables and figures from the files the stages wrote.

It reads only stage outputs (landscape parts and summary, the grid's manifest and runs.csv,
fit.json, selection summaries or refusals, eval.json and downstream.json of every final run; the
runs table and fit directories through their readers in `pplaw_jax.fit`), so a report can be
regenerated at any time.  Intervals over seeds are Student-t 95% intervals of the mean;
law-guided-versus-random differences are paired by seed.  Every verdict is stated from an
interval: "better" only when the interval of the difference excludes zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from pplaw_jax.commands import ReportCommand, add_command
from pplaw_jax.costs import cost_lines
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import write_text
from pplaw_jax.fit.fitdir import FIT_JSON, load_fit
from pplaw_jax.fit.plots import save_figure
from pplaw_jax.fit.runs_table import read_runs_table
from pplaw_jax.landscape.directory import read_landscape
from pplaw_jax.logs import get_logger
from pplaw_jax.paths import AnyPath, PathSpec, as_path, read_parquet_table
from pplaw_jax.select.io import aliased_methods


def add_arguments(parser) -> None:
    add_command(parser, ReportCommand)


def _max_boundary_fraction(cfg) -> float:
    from pplaw_jax.config import MAX_BOUNDARY_FRACTION

    given = cfg.final.select.max_boundary_fraction
    return MAX_BOUNDARY_FRACTION if given is None else given


def run(args) -> int:
    """`pplaw report STUDY`: (re)write STUDY/report.md and STUDY/report_figures/ from its files."""
    from pplaw_jax.config import load_config

    study = as_path(args.study)
    if not (study / "config.yaml").is_file():
        raise PplawError(f"{study}: not a study directory (no config.yaml written by `pplaw run`)")
    write_report(study, load_config(study / "config.yaml"))
    return 0


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean; (mean, nan, nan) for fewer than two values."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if x.size < 2:
        return m, float("nan"), float("nan")
    sem = float(stats.sem(x))
    if sem == 0:  # identical values: scipy's t needs a positive scale
        return m, m, m
    lo, hi = stats.t.interval(level, x.size - 1, loc=m, scale=sem)
    return m, float(lo), float(hi)


def _fmt_ci(mean: float, lo: float, hi: float, digits: int = 4) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _sorted_paths(paths: Iterable[AnyPath]) -> list[AnyPath]:
    """``sorted(paths)``, typed as paths (mypy cannot infer `sorted` over a ``Path | URLPath`` union)."""
    return sorted(paths)


def _read_json(path: AnyPath) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _fit_info(fit_dir: AnyPath) -> dict:
    """The fit.json of `fit_dir` (`load_fit`), or {} where there is no fit."""
    return load_fit(fit_dir).info if (fit_dir / FIT_JSON).exists() else {}


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def collect_final(out: AnyPath) -> pd.DataFrame:
    """One row per final run: method, seed, domain/general loss, downstream accuracy."""
    rows = []
    for ev_path in _sorted_paths((out / "final").glob("*/seed*/eval.json")):
        ev = json.loads(ev_path.read_text())
        ds = _read_json(ev_path.parent / "downstream.json") or {}
        rows.append(
            dict(
                method=ev_path.parent.parent.name,
                seed=int(ev_path.parent.name.removeprefix("seed")),
                tokens=ev.get("tokens"),
                mu_logppl=ev.get("mu_logppl"),
                sigma_logppl=ev.get("sigma_logppl"),
                domain_loss=ev.get("domain_loss"),
                general_loss=ev.get("general_loss"),
                target_loss=ev.get("target_loss"),
                acc=ds.get("acc"),
                acc_norm=ds.get("acc_norm"),
            )
        )
    return pd.DataFrame(
        rows,
        columns=[
            "method",
            "seed",
            "tokens",
            "mu_logppl",
            "sigma_logppl",
            "domain_loss",
            "general_loss",
            "target_loss",
            "acc",
            "acc_norm",
        ],
    )


def _lm_eval_lines(out: AnyPath) -> list[str]:
    """lm-evaluation-harness accuracy of the final models (``final.lm_eval_tasks``): per method and
    task, the mean over seeds with its 95% t interval (acc_norm where the task reports it)."""
    rows = []
    for path in _sorted_paths((out / "final").glob("*/seed*/lm_eval.json")):
        for task, r in json.loads(path.read_text()).get("tasks", {}).items():
            metric = "acc_norm" if r.get("acc_norm") is not None else "acc"
            rows.append(dict(method=path.parent.parent.name, task=task, metric=metric, value=r.get(metric)))
    if not rows:
        return []
    frame = pd.DataFrame(rows).dropna(subset=["value"])
    table = [
        dict(method=m, task=t, metric=g["metric"].iloc[0], runs=len(g), value=_fmt_ci(*t_interval(g["value"])))
        for (m, t), g in frame.groupby(["method", "task"], sort=False)
    ]
    return [
        "lm-evaluation-harness tasks (`final.lm_eval_tasks`), mean and 95% interval over seeds:",
        "",
        _table(pd.DataFrame(table)),
        "",
    ]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _landscape_figure(out: AnyPath, fig_path: AnyPath) -> None:
    """Log-ppl histograms: the landscape with the law-fitting subsets (left) and with the final
    selections (right), so the selected subset is seen beside the family it was fitted on."""

    plt = _plt()
    ppl = read_landscape(out / "landscape").ppl
    bins = np.linspace(np.log(ppl.min()), np.log(ppl.max()), 60)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharex=True)
    grid = _sorted_paths((out / "grid" / "selections").glob("*/selection.parquet"))
    selected = [
        p
        for p in _sorted_paths((out / "select").glob("*/seed*/selection.parquet"))
        if p.parent.parent.name != "full" and p.parent.name == min(x.name for x in p.parent.parent.glob("seed*"))
    ]
    for ax, subsets, title in (
        (axes[0], grid, f"law-fitting subsets ({len(grid)})"),
        (axes[1], selected, "final selections"),
    ):
        ax.hist(np.log(ppl), bins=bins, color="0.85", density=True, label=f"landscape ({ppl.size} chunks)")
        for i, sel in enumerate(subsets):
            sp = np.log(read_parquet_table(sel, columns=["ppl"])["ppl"].to_numpy())
            if subsets is grid:
                ax.hist(
                    sp,
                    bins=bins,
                    histtype="step",
                    density=True,
                    linewidth=0.6,
                    color="C0",
                    alpha=0.35,
                    label="a law-fitting subset" if i == 0 else None,
                )
            else:
                ax.hist(
                    sp,
                    bins=bins,
                    histtype="step",
                    density=True,
                    linewidth=1.6,
                    label=f"{sel.parent.parent.name} ({sel.parent.name})",
                )
        ax.set_xlabel("log chunk perplexity")
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    fig.tight_layout()
    save_figure(fig, fig_path)


def _final_figure(final: pd.DataFrame, fig_path: AnyPath) -> None:
    plt = _plt()
    metrics = [m for m in ("domain_loss", "general_loss", "target_loss", "acc_norm") if final[m].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4))
    axes = np.atleast_1d(axes)
    methods = list(dict.fromkeys(final["method"]))
    for ax, metric in zip(axes, metrics):
        for i, method in enumerate(methods):
            vals = final.loc[final["method"] == method, metric].dropna().to_numpy(float)
            m, lo, hi = t_interval(vals)
            ax.scatter(np.full(vals.size, i), vals, color="0.6", s=12)
            if np.isfinite(lo):
                ax.errorbar(i, m, yerr=[[m - lo], [hi - m]], fmt="o", color="C0", capsize=4)
            else:
                ax.plot(i, m, "o", color="C0")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_title(metric)
    fig.suptitle("Final CPT runs: mean and 95% interval over seeds")
    fig.tight_layout()
    save_figure(fig, fig_path)


def _landscape_section(out: AnyPath, fig_dir: AnyPath) -> list[str]:
    ls = _read_json(out / "landscape" / "summary.json") or {}
    _landscape_figure(out, fig_dir / "landscape.png")
    row = {k: ls.get(k) for k in ("documents", "chunks", "tokens", "skipped")}
    for kind in ("ppl", "logppl"):
        if ls.get(kind):
            row.update({f"{kind}_mean": ls[kind]["mean"], f"{kind}_std": ls[kind]["std"]})
    return [
        "## Perplexity landscape",
        "",
        _table(pd.DataFrame([row])),
        "",
        "Left: the law-fitting subsets over the landscape; right: the final selections "
        "(log chunk perplexity, densities).",
        "",
        "![landscape](report_figures/landscape.png)",
        "",
    ]


def _grid_section(out: AnyPath, fit: dict) -> list[str]:
    runs = read_runs_table(out / "grid" / "runs.csv")
    design = _read_json(out / "grid" / "selections" / "design.json")
    kind = (
        f"a space-filling 2-D design ({design['selector']} selector, {design['centre']} centre replicates)"
        if design
        else "perplexity-quantile windows"
    )
    lines = [
        "## Law-fitting runs",
        "",
        f"{len(runs)} CPT runs in {runs['group'].nunique()} groups from "
        f"{kind} (`grid/runs.csv`; a group is every run of one design point or window, left out "
        "together when validating).",
        "",
    ]
    col = (fit.get("runs") or {}).get("collinearity")
    if col:
        # a VIF is null when its regression is singular (fewer runs than features)
        vif_main = ", ".join(f"{k} {'n/a' if v is None else f'{v:.3g}'}" for k, v in col["vif_main"].items())
        vif_law = ", ".join(f"{k} {'n/a' if v is None else f'{v:.3g}'}" for k, v in col["vif_law"].items())
        lines += [
            f"Design diagnostics in the fit's coordinates ({fit.get('moments')} moments): "
            f"corr(log mu, log sigma) = {col['corr_log_mu_log_sigma']:.3f}; VIF of the main effects "
            f"({vif_main}); VIF of the paper's features ({vif_law}); condition number "
            f"{col['condition_number']:.3g}; {col['n_distinct_mu_sigma']} distinct (mu, sigma); "
            f"token budgets span {col['tokens_span']:.3g}x.",
            "",
        ]
    lines += [_table(runs), ""]
    return lines


def _law_choice_lines(fit: dict) -> list[str]:
    """Which law the fit uses and why: the lack-of-fit test of every law against the replicates'
    pure error, and the choice."""
    lof = fit.get("lack_of_fit") or {}
    choice = fit.get("law_choice") or {}
    if not lof:
        return []
    pe = lof.get("pure_error") or {}

    def num(x):
        return "—" if x is None else f"{x:.4g}"

    rows = [
        dict(
            law=k,
            residual_sd=num(v.get("residual_sd_log_loss")),
            F=num(v.get("F")),
            df="—" if v.get("df") is None else f"{v['df'][0]}, {v['df'][1]}",
            p=num(v.get("p")),
            verdict="untestable" if v.get("rejected") is None else "rejected" if v["rejected"] else "not rejected",
            set_aside=", ".join(v.get("set_aside") or []) or "—",
        )
        for k, v in (lof.get("laws") or {}).items()
    ]
    sd = pe.get("sd_log_loss")
    first_law: dict = next(iter((lof.get("laws") or {}).values()), {})
    lines = [
        f"**Lack of fit.** Pure error of log-loss from {pe.get('replicated_runs', 0)} replicated runs in "
        f"{pe.get('replicate_sets', 0)} sets (same group and budget): sd "
        f"{'n/a' if sd is None else f'{sd:.4g}'} ({pe.get('df', 0)} df). Each law's residual is tested "
        "against it (F test; a law rejected at p < "
        f"{first_law.get('alpha', 0.05)} is not used to select):",
        "",
        _table(pd.DataFrame(rows)),
        "",
    ]
    usable = choice.get("usable", True)
    lines += [
        f"**Law used** (`fit.law: {choice.get('mode', fit.get('law'))}`): `{fit.get('law')}` — "
        f"{choice.get('reason', '')}."
        + ("" if usable else " **It is not used to select** (no law passed); the selection is refused."),
        "",
    ]
    return lines


def _fit_section(fit: dict) -> list[str]:
    lines = [
        "## Law fit",
        "",
        f"Law `{fit.get('law')}` ({fit.get('law_form')}) in **{fit.get('moments')}** moments.",
        "",
    ]
    lines += _law_choice_lines(fit)
    point = fit.get("point") or {}
    if point:
        ci = point.get("ci90") or {}
        ident = point.get("identified") or {}
        prow = []
        for k, v in point["params"].items():
            lo, hi = ci.get(k) or [np.nan, np.nan]
            note = "unidentified (ran to its bound)" if ident.get(k) is False else ""
            prow.append(dict(param=k, estimate=v, ci90_lo=lo, ci90_hi=hi, note=note))
        lines += [
            f"Point fit (Huber on log-loss, delta {point.get('huber_delta', float('nan')):.3g}; bootstrap "
            "90% intervals over run groups):",
            "",
            _table(pd.DataFrame(prow)),
            "",
        ]
    bayes = fit.get("bayes") or {}
    if bayes.get("summary"):
        ident = bayes.get("identified") or {}
        brow = [
            dict(
                param=k,
                **{c: v.get(c) for c in ("mean", "sd", "q05", "q95", "r_hat", "ess_bulk")},
                identified="—" if k not in ident else "yes" if ident[k] else "no (posterior ~ prior)",
            )
            for k, v in bayes["summary"].items()
        ]
        lines += [
            f"Bayesian fit (NumPyro NUTS; converged: {bayes.get('converged')}"
            + (f"; problems: {'; '.join(bayes['problems'])}" if bayes.get("problems") else "")
            + "):",
            "",
            _table(pd.DataFrame(brow)),
            "",
        ]
    lines += _comparison(fit.get("comparison") or {})
    for png in fit.get("plots", []):
        lines.append(f"![{png}](fit/{png})")
    lines.append("")
    return lines


def _comparison(comp: dict) -> list[str]:
    ho = comp.get("heldout") or {}
    if not ho:
        return []
    lines = [f"**Validation** ({ho.get('method', '')}):", ""]
    rows = []
    diffs = ho.get("differences") or {}
    for law, v in (ho.get("laws") or {}).items():
        d = diffs.get(law) or {}
        ci = next((d[k] for k in d if k.startswith("ci")), None)
        rows.append(
            dict(
                law=law,
                heldout_rmse_log_loss=v.get("rmse_log_loss", v.get("error")),
                diff_vs_ppl=d.get("rmse_diff", "—" if law == ho.get("baseline") else d.get("error")),
                interval=f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "—",
                verdict_vs_ppl=d.get("verdict", "—"),
            )
        )
    lines += [_table(pd.DataFrame(rows)), ""]
    better = [k for k, d in diffs.items() if d.get("verdict") == "better"]
    worse = [k for k, d in diffs.items() if d.get("verdict") == "worse"]
    lines += [
        (
            "Rivals that predicted left-out groups better than the paper's law (interval below 0): "
            + (", ".join(better) or "none")
        )
        + "; worse: "
        + (", ".join(worse) or "none")
        + "; the others: no detectable difference.",
        "",
    ]
    loo = comp.get("loo") or {}
    if loo.get("best"):
        lines += [
            f"PSIS leave-one-group-out prefers `{loo['best']}`. Does it disagree with the held-out "
            f"ranking? {loo.get('disagreement', '')}",
            "",
        ]
    return lines


def _optimum_section(out: AnyPath, fit: dict, cfg) -> list[str]:
    support = fit.get("support") or {}
    if not support:
        return [
            "## Supported optimum",
            "",
            f"The law used (`{fit.get('law')}`) does not depend on (mu, sigma), "
            "so there is no optimum to locate and no perplexity target to select.",
            "",
        ]
    lines = [
        "## Supported optimum",
        "",
        f"The target may only go where the runs give support: their convex "
        f"hull in (log mu, log sigma), each scaled by the runs' range, widened by the trust margin "
        f"{support.get('margin')}. Within it, the interior-optimum check counts the posterior (or bootstrap) "
        f"draws whose argmin lies on the edge of the runs (where the corpus could go further but no run "
        f"has been); above {_max_boundary_fraction(cfg):g} the selection is refused. An argmin on the edge "
        'of what the corpus can supply, inside the runs\' support, is a valid answer ("drop the tail"): '
        "`corpus_edge_share` in the selections' table.",
        "",
    ]
    bopt = (fit.get("bayes") or {}).get("optimum") or {}
    popt = (fit.get("point") or {}).get("optimum") or {}
    if bopt:
        lines += [
            f"In the fit (supported region only): {100 * bopt['fraction_at_boundary']:.0f}% of posterior "
            f"draws have their argmin on the edge; argmin mu {_q(bopt['mu'])}, sigma {_q(bopt['sigma'])}.",
            "",
        ]
    elif popt:
        lines += [
            f"In the fit: the point optimum is {'on' if popt.get('at_boundary') else 'inside'} the edge; "
            f"{100 * (popt.get('bootstrap_fraction_at_boundary') or 0):.0f}% of bootstrap refits on the edge.",
            "",
        ]
    for refused in _sorted_paths((out / "select").glob("*/seed*/refused.json")):
        r = json.loads(refused.read_text())
        lines += [
            f"**`{refused.parent.parent.name}` was refused** ({r.get('refused', 'refused')}): {r['message']}. "
            "This method is not trained; the recommendation for this budget is random selection (or the "
            "best supported run's recipe). A refusal is not a success: its cost is whatever a better "
            "subset would have gained.",
            "",
        ]
    return lines


def _q(block: dict) -> str:
    return f"{block['q50']:.4g} [{block['q05']:.4g}, {block['q95']:.4g}]"


def _selection_section(out: AnyPath, aliases: dict) -> list[str]:
    rows = []
    for method_dir in _sorted_paths(p for p in (out / "select").iterdir() if p.is_dir()):
        summaries = [json.loads(p.read_text()) for p in _sorted_paths(method_dir.glob("seed*/summary.json"))]
        if not summaries:
            continue
        js = summaries[0]
        post = js.get("predicted_loss_posterior") or {}
        interior = (js.get("target_choice") or {}).get("interior") or {}
        name = method_dir.name + (f" (= {aliases[method_dir.name]})" if method_dir.name in aliases else "")
        rows.append(
            dict(
                method=name,
                seeds=len(summaries),
                tokens=js.get("tokens"),
                moments=js.get("moments"),
                mu=float(np.mean([x["mu"] for x in summaries])),
                sigma=float(np.mean([x["sigma"] for x in summaries])),
                target=(f"({js['target']['mu']:.4g}, {js['target']['sigma']:.4g})" if js.get("target") else "—"),
                distance=js.get("distance"),
                runs_edge_share=interior.get("fraction_at_boundary"),
                corpus_edge_share=interior.get("fraction_at_corpus_edge"),
                predicted_loss=post.get("mean", js.get("predicted_loss")),
                predictive_90=(f"[{post['pi'][0]:.4g}, {post['pi'][1]:.4g}]" if post.get("pi") else "—"),
            )
        )
    if not rows:
        return []
    notes = [
        f"- `{p.parent.parent.name}`: {json.loads(p.read_text())['target_note']}."
        for p in _sorted_paths((out / "select").glob("*/seed0/summary.json"))
        if json.loads(p.read_text()).get("target_note")
    ]
    return [
        "## Selections at the final budget",
        "",
        "Every method's subset is re-drawn per seed (random with a new "
        "seed, tilted DOS with the seed); `mu`, `sigma` are means over seeds, the rest is seed 0's. A method "
        "shown as `(= other)` selected the same subsets as `other` and is reported with it.",
        "",
        _table(pd.DataFrame(rows)),
        "",
        *notes,
        *([""] if notes else []),
    ]


HIGHER_IS_BETTER = {"acc", "acc_norm"}


def mde(sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean of a paired difference with `n` pairs (two-sided t test)."""
    from scipy import stats

    if n < 2 or not np.isfinite(sd_diff):
        return float("nan")
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd_diff / math.sqrt(n))


def _replicate_sd(out: AnyPath, metric: str) -> float:
    """Run-to-run sd of `metric` among the design's replicated centre runs (nan without them)."""
    runs_csv = out / "grid" / "runs.csv"
    if not runs_csv.exists():
        return float("nan")
    runs = read_runs_table(runs_csv)
    centre = runs[runs["group"] == "centre"]
    if metric not in centre or centre[metric].notna().sum() < 2:
        return float("nan")
    return float(centre[metric].std(ddof=1))


def _final_section(out: AnyPath, fig_dir: AnyPath, primary: str) -> list[str]:
    final = collect_final(out)
    if final.empty:
        return ["## Final CPT runs", "", "No final runs.", ""]
    base_ds = _read_json(out / "final" / "base" / "downstream.json") or {}
    lines = [
        "## Final CPT runs",
        "",
        f"Seeds: {sorted(set(final['seed']))}. Mean and 95% Student-t interval "
        "over seeds; lower loss is better, higher accuracy is better. Base model before CPT: downstream "
        f"acc_norm {base_ds.get('acc_norm', float('nan')):.4f}.",
        "",
    ]
    frows = []
    for method, g in final.groupby("method", sort=False):
        row = dict(method=method, runs=len(g), tokens=float(g["tokens"].mean()))
        for metric in ("domain_loss", "general_loss", "target_loss", "acc_norm"):
            if g[metric].notna().any():
                row[metric] = _fmt_ci(*t_interval(g[metric]))
        frows.append(row)
    lines += [_table(pd.DataFrame(frows).fillna("—")), ""]
    lines += _lm_eval_lines(out)
    _final_figure(final, fig_dir / "final.png")
    lines += ["![final](report_figures/final.png)", ""]
    better = "higher" if primary in HIGHER_IS_BETTER else "lower"
    rep_sd = _replicate_sd(out, primary)
    lines += [
        f"**Primary metric (declared in the config before the runs): `{primary}`** ({better} is better). "
        "Differences are paired by seed (method minus random), with a 95% t interval and the minimum "
        "detectable effect (MDE: the true difference a paired t test at 5% would detect with 80% power at "
        "this number of seeds), from the observed sd of the differences and, where the design has "
        "replicated centre runs, from their run-to-run sd (x sqrt 2).",
        "",
    ]
    for method in [m for m in final["method"].unique() if m != "random"]:
        paired = (
            final[final["method"].isin([method, "random"])]
            .pivot(index="seed", columns="method", values=primary)
            .dropna()
        )
        if len(paired) == 0 or "random" not in paired or method not in paired:
            continue
        diff = paired[method] - paired["random"]
        m, lo, hi = t_interval(diff)
        sign = 1 if primary in HIGHER_IS_BETTER else -1
        if np.isfinite(lo) and min(sign * lo, sign * hi) > 0:
            verdict = f"{method} beat random (interval excludes zero)"
        elif np.isfinite(lo) and max(sign * lo, sign * hi) < 0:
            verdict = f"{method} was worse than random (interval excludes zero)"
        else:
            verdict = f"no detectable difference between {method} and random at this number of seeds"
        n = len(diff)
        mdes = [f"MDE {mde(float(diff.std(ddof=1)), n):.4f} (observed sd)"]
        if np.isfinite(rep_sd):
            mdes.append(f"{mde(rep_sd * math.sqrt(2), n):.4f} (centre replicates)")
        lines.append(
            f"- **{method} − random** ({primary}, {n} seeds): {_fmt_ci(m, lo, hi)} — {verdict}; "
            + ", ".join(mdes)
            + "."
        )
        summary = _read_json(out / "select" / method / f"seed{int(paired.index[0])}" / "summary.json") or {}
        post = summary.get("predicted_loss_posterior") or {}
        if method.startswith("dos") and post.get("pi") and primary == "domain_loss":
            lines.append(
                f"  The law predicted {post['mean']:.4f} (90% predictive interval "
                f"[{post['pi'][0]:.4f}, {post['pi'][1]:.4f}]) for this subset; observed mean "
                f"{paired[method].mean():.4f}."
            )
    lines.append("")
    return lines


POSITIVE_FACTOR = 3  # P1: the planted junk matters when oracle - random <= -3 x MDE


def _paired(final: pd.DataFrame, method: str, other: str, metric: str) -> pd.Series:
    """``method - other`` of `metric`, paired by seed (seeds both ran)."""
    wide = final[final["method"].isin([method, other])].pivot(index="seed", columns="method", values=metric)
    if method not in wide or other not in wide:
        return pd.Series(dtype=float)
    wide = wide.dropna()
    return wide[method] - wide[other]


def control_verdicts(
    final: pd.DataFrame,
    primary: str,
    fraction: float,
    mde: float | None,
    recover: float,
    refused: set[str],
    n_boot: int = 10_000,
    seed: int = 0,
) -> list[str]:
    """The pre-registered verdicts of a control study, as report lines: P1 (the planted junk
    matters: oracle - random <= -3 MDE with a 95% interval excluding 0) and P2 (the method works:
    DOS - random has a 95% interval below 0, DOS recovers at least `recover` of the oracle's gain,
    DOS - band has a 95% upper bound below +MDE) for a contaminated pool; P3 (no false claim:
    DOS - random includes 0, or the tool refuses) for a clean one.  Differences are signed so that
    negative is better whatever the metric.  A refusal is never a pass of P2: its cost is the
    oracle's gain, left on the table."""
    sign = -1.0 if primary in HIGHER_IS_BETTER else 1.0
    dos = next((m for m in ("dos-posterior", "dos-point") if m in set(final["method"])), None)
    dos_refused = dos is None and any(m.startswith("dos") for m in refused)

    def diff(a, b):
        d = sign * _paired(final, a, b, primary)
        return (d, *t_interval(d)) if len(d) else (d, float("nan"), float("nan"), float("nan"))

    lines = []
    if fraction == 0:
        if dos_refused:
            return [
                "- **P3 (negative control: no false claim) holds**: on the clean pool the tool refused to "
                "select (random is its recommendation)."
            ]
        d, m, lo, hi = diff(dos, "random") if dos else (None, float("nan"), float("nan"), float("nan"))
        if not np.isfinite(lo):
            return ["- **P3 cannot be judged**: no DOS selection with paired random runs."]
        holds = lo <= 0 <= hi
        return [
            f"- **P3 (negative control: no false claim) {'holds' if holds else 'fails'}**: {dos} − random = "
            f"{_fmt_ci(m, lo, hi)} (signed so that negative is better); the interval "
            f"{'includes' if holds else 'excludes'} 0."
        ]
    if mde is None:
        lines.append("- No MDE was pre-registered (`final.mde`): P1 and the band comparison cannot be judged.")
    d_or, m_or, lo_or, hi_or = diff("oracle", "random")
    if np.isfinite(lo_or) and mde is not None:
        p1 = m_or <= -POSITIVE_FACTOR * mde and hi_or < 0
        lines.append(
            f"- **P1 (positive control: the planted junk matters) {'holds' if p1 else 'fails'}**: oracle − "
            f"random = {_fmt_ci(m_or, lo_or, hi_or)} against −{POSITIVE_FACTOR} × MDE = "
            f"{-POSITIVE_FACTOR * mde:.4f} (pre-registered MDE {mde:g}; the interval must exclude 0)."
        )
    if dos_refused:
        gain = -m_or if np.isfinite(m_or) else float("nan")
        lines.append(
            f"- **P2 (the method works) fails: DOS refused** to select; scored as random, it left the "
            f"oracle's gain on the table ({gain:.4f})."
        )
        return lines
    if dos is None:
        return lines + ["- **P2 cannot be judged**: no DOS method in the final comparison."]
    d_dr, m_dr, lo_dr, hi_dr = diff(dos, "random")
    both = pd.concat([d_dr.rename("dos"), d_or.rename("oracle")], axis=1).dropna()
    share, share_lo, share_hi = float("nan"), float("nan"), float("nan")
    if len(both) >= 2 and both["oracle"].mean() < 0:
        share = float(both["dos"].mean() / both["oracle"].mean())
        rng = np.random.default_rng(seed)
        pick = rng.integers(0, len(both), size=(n_boot, len(both)))
        num, den = both["dos"].to_numpy()[pick].mean(1), both["oracle"].to_numpy()[pick].mean(1)
        ratios = np.where(den < 0, num / np.where(den < 0, den, -1.0), np.nan)
        share_lo, share_hi = np.nanquantile(ratios, [0.025, 0.975]) if np.isfinite(ratios).any() else (np.nan, np.nan)
    d_db, m_db, lo_db, hi_db = diff(dos, "band")
    beats = np.isfinite(hi_dr) and hi_dr < 0
    recovers = np.isfinite(share) and share >= recover
    not_worse = mde is not None and np.isfinite(hi_db) and hi_db < mde
    p2 = beats and recovers and not_worse
    lines.append(
        f"- **P2 (the method works) {'holds' if p2 else 'fails'}**: {dos} − random = {_fmt_ci(m_dr, lo_dr, hi_dr)} "
        f"({'below 0' if beats else 'not below 0'}); share of the oracle's gain recovered "
        f"{_fmt_ci(share, share_lo, share_hi, 2)} (bootstrap over seeds; needs ≥ {recover:g}: "
        f"{'met' if recovers else 'not met'}); {dos} − band = {_fmt_ci(m_db, lo_db, hi_db)} "
        f"(upper end below +MDE: {'yes' if not_worse else 'no'})."
    )
    if not p2 and lines and "P1" in lines[0] and "holds" in lines[0]:
        lines.append(
            "- The planted junk mattered (P1) and the method did not find it (P2 fails): **the method is "
            "falsified in this setting.**"
        )
    return lines


def _controls_section(out: AnyPath, cfg) -> list[str]:
    c, fin = cfg.data.contaminate, cfg.final
    if c.fraction is None:
        return []
    final = collect_final(out)
    manifest = next(iter(_sorted_paths((out / "data").glob("domain_train_junk*.manifest.json"))), None)
    counts = json.loads(manifest.read_text()) if manifest else {}
    refused = {p.parent.parent.name for p in (out / "select").glob("*/seed*/refused.json")}
    kind = "positive control" if c.fraction > 0 else "negative control (clean pool)"
    lines = [
        "## Controls: does selection find value where it exists, and claim none where none exists?",
        "",
        f"This study is the **{kind}**: the domain pool holds {100 * c.fraction:g}% planted junk documents "
        f"(`data.contaminate`: {', '.join(c.kinds)}; low-perplexity share {c.low_share:g}"
        + (f"; {100 * counts.get('junk_fraction_characters', float('nan')):.1f}% of the characters" if counts else "")
        + "). The labels are seen only by `oracle` (random among clean documents). Pre-registered in the "
        f"config before the runs: primary metric `{fin.primary}` on the clean test split, MDE "
        f"{fin.mde if fin.mde is not None else 'none'}, recovery threshold {fin.recover:g}. Intervals: 95% t "
        "intervals of differences paired by seed.",
        "",
    ]
    return lines + control_verdicts(final, fin.primary, c.fraction, fin.mde, fin.recover, refused) + [""]


def _rounds_section(out: AnyPath, fig_dir: AnyPath) -> list[str]:
    rounds: list[AnyPath] = sorted((out / "grid").glob("round[1-9]*/round.json"), key=lambda p: int(p.parent.name[5:]))
    if not rounds:
        return []
    rows = []
    for path in rounds:
        r = json.loads(path.read_text())
        st = r["stopping"]
        rows.append(
            dict(
                round=r["round"],
                runs_fitted=_n_runs(path.parent),
                runs_after=r["n_runs"],
                estimate=(
                    f"({st['estimate']['mu']:.4g}, {st['estimate']['sigma']:.4g})"
                    if st["estimate"]
                    else "none (no finite draw)"
                ),
                prob_within=st["prob_within"],
                max_expected_improvement=st["max_expected_improvement_log"],
                noise_sd=st["noise_sd_log"],
                located=r["located"],
            )
        )
    _rounds_figure(out, [p.parent for p in rounds], fig_dir / "rounds.png")
    return [
        "## Sequential design",
        "",
        "Each round fits the runs so far, proposes the next runs by Thompson "
        "sampling of the argmin inside the runs' hull widened by the exploration margin, and adds a re-drawn "
        "random control at the final budget; it stops when the optimum is located (the share of draws whose "
        "argmin lies within the stated radius of the estimate reaches the threshold and no run is expected to "
        "improve on it by more than the noise sd).",
        "",
        _table(pd.DataFrame(rows)),
        "",
        "![rounds](report_figures/rounds.png)",
        "",
    ]


def _n_runs(round_dir: AnyPath) -> int:
    fit = _fit_info(round_dir / "fit")
    return int((fit.get("runs") or {}).get("n_runs", 0))


def _rounds_figure(out: AnyPath, round_dirs: list[AnyPath], path: AnyPath) -> None:
    """Per round: the fitted runs, the supported region, the argmin's credible region and median,
    and the runs proposed next."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(round_dirs), figsize=(4.6 * len(round_dirs), 4.2), squeeze=False)
    for ax, rdir in zip(axes[0], round_dirs):
        fit = _fit_info(rdir / "fit")
        pts = np.asarray((fit.get("runs") or {}).get("points") or [[np.nan, np.nan]])
        ax.scatter(pts[:, 0], pts[:, 1], s=14, c="k", label="runs fitted")
        hull = np.asarray((fit.get("support") or {}).get("hull") or [[np.nan, np.nan]])
        hull = np.vstack([hull, hull[:1]])
        ax.plot(hull[:, 0], hull[:, 1], "k--", lw=0.8, label="hull of the runs")
        opt = (fit.get("bayes") or {}).get("optimum") or {}
        for i, poly in enumerate((opt.get("credible_region") or {}).get("polygons", [])):
            poly = np.asarray(poly)
            ax.plot(poly[:, 0], poly[:, 1], "r-", lw=1.2, label="90% region of the argmin" if i == 0 else None)
        if opt:
            ax.scatter([opt["mu"]["q50"]], [opt["sigma"]["q50"]], marker="*", s=150, c="red", label="argmin median")
        prop = _read_json(rdir / "proposals" / "propose.json") or {}
        q = np.asarray([[p["mu"], p["sigma"]] for p in prop.get("proposals", [])] or [[np.nan, np.nan]])
        ax.scatter(q[:, 0], q[:, 1], marker="^", s=40, c="C1", label="proposed next")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{rdir.name}: fit of {len(pts)} runs")
        ax.set_xlabel("mu")
        ax.set_ylabel("sigma")
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(out: PathSpec, cfg) -> AnyPath:
    study = as_path(out)
    read_landscape(study / "landscape")  # a study without a complete landscape fails before writing anything
    aliases = aliased_methods(study / "select", cfg.final.seeds)
    fig_dir = study / "report_figures"
    fig_dir.mkdir(exist_ok=True)
    fit = _fit_info(study / "fit")
    lines = [f"# pplaw study `{cfg.name}`", ""]
    lines += [
        f"Base model: `{cfg.base_model or 'pretrained from scratch (base/pretrain)'}`; "
        f"domain training data: `{cfg.data.domain_train or cfg.data.builtin}`. "
        f"Every command that produced this study is in `commands.log`; the configuration is "
        f"`config.yaml`.",
        "",
    ]
    lines += _controls_section(study, cfg)
    lines += _landscape_section(study, fig_dir)
    lines += _grid_section(study, fit)
    lines += _rounds_section(study, fig_dir)
    lines += _fit_section(fit)
    lines += _optimum_section(study, fit, cfg)
    lines += _selection_section(study, aliases)
    lines += _final_section(study, fig_dir, cfg.final.primary)
    lines += cost_lines(study)
    path = study / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    get_logger("report").info(f"wrote {path}")
    return path
