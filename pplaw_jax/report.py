"""`report.md` for a finished study: tables and figures from the files the stages wrote.

It reads only stage outputs (landscape parts and summary, the grid's manifest and runs.csv,
fit.json, selection summaries or refusals, eval.json and downstream.json of every final run), so a
report can be regenerated at any time.  Intervals over seeds are Student-t 95% intervals of the
mean; law-guided-versus-random differences are paired by seed.  Every verdict is stated from an
interval: "better" only when the interval of the difference excludes zero.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pplaw_jax.fileio import write_text
from pplaw_jax.landscape import read_landscape


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean; (mean, nan, nan) for fewer than two values."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if x.size < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - half, m + half


def _fmt_ci(mean: float, lo: float, hi: float, digits: int = 4) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def collect_final(out: Path) -> pd.DataFrame:
    """One row per final run: method, seed, domain/general loss, downstream accuracy."""
    rows = []
    for ev_path in sorted((out / "final").glob("*/seed*/eval.json")):
        ev = json.loads(ev_path.read_text())
        ds = _read_json(ev_path.parent / "downstream.json") or {}
        rows.append(dict(
            method=ev_path.parent.parent.name,
            seed=int(ev_path.parent.name.removeprefix("seed")),
            tokens=ev.get("tokens"), mu_logppl=ev.get("mu_logppl"), sigma_logppl=ev.get("sigma_logppl"),
            domain_loss=ev.get("domain_loss"), general_loss=ev.get("general_loss"),
            acc=ds.get("acc"), acc_norm=ds.get("acc_norm"),
        ))
    return pd.DataFrame(rows, columns=["method", "seed", "tokens", "mu_logppl", "sigma_logppl", "domain_loss",
                                       "general_loss", "acc", "acc_norm"])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _landscape_figure(out: Path, fig_path: Path) -> None:
    """Log-ppl histograms: the landscape with the law-fitting subsets (left) and with the final
    selections (right), so the selected subset is seen beside the family it was fitted on."""
    import pyarrow.parquet as pq

    plt = _plt()
    ppl = read_landscape(out / "landscape", columns=["ppl"])["ppl"].to_numpy()
    bins = np.linspace(np.log(ppl.min()), np.log(ppl.max()), 60)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharex=True)
    grid = sorted((out / "grid" / "selections").glob("*/selection.parquet"))
    selected = [p for p in sorted((out / "select").glob("*/selection.parquet")) if p.parent.name != "full"]
    for ax, subsets, title in ((axes[0], grid, f"law-fitting subsets ({len(grid)})"),
                               (axes[1], selected, "final selections")):
        ax.hist(np.log(ppl), bins=bins, color="0.85", density=True, label=f"landscape ({ppl.size} chunks)")
        for i, sel in enumerate(subsets):
            sp = np.log(pq.read_table(sel, columns=["ppl"])["ppl"].to_numpy())
            if subsets is grid:
                ax.hist(sp, bins=bins, histtype="step", density=True, linewidth=0.6, color="C0", alpha=0.35,
                        label="a law-fitting subset" if i == 0 else None)
            else:
                ax.hist(sp, bins=bins, histtype="step", density=True, linewidth=1.6, label=sel.parent.name)
        ax.set_xlabel("log chunk perplexity")
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    fig.tight_layout()
    fig.savefig(fig_path, dpi=110)
    plt.close(fig)


def _final_figure(final: pd.DataFrame, fig_path: Path) -> None:
    plt = _plt()
    metrics = [m for m in ("domain_loss", "general_loss", "acc_norm") if final[m].notna().any()]
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
    fig.savefig(fig_path, dpi=120)
    plt.close(fig)


def _landscape_section(out: Path, fig_dir: Path) -> list[str]:
    ls = _read_json(out / "landscape" / "summary.json") or {}
    _landscape_figure(out, fig_dir / "landscape.png")
    row = {k: ls.get(k) for k in ("documents", "chunks", "tokens", "skipped")}
    for kind in ("ppl", "logppl"):
        if ls.get(kind):
            row.update({f"{kind}_mean": ls[kind]["mean"], f"{kind}_std": ls[kind]["std"]})
    return ["## Perplexity landscape", "", _table(pd.DataFrame([row])), "",
            "Left: the law-fitting subsets over the landscape; right: the final selections "
            "(log chunk perplexity, densities).", "", "![landscape](report_figures/landscape.png)", ""]


def _grid_section(out: Path, fit: dict) -> list[str]:
    runs = pd.read_csv(out / "grid" / "runs.csv", dtype={"group": str})
    design = _read_json(out / "grid" / "selections" / "design.json")
    kind = (f"a space-filling 2-D design ({design['selector']} selector, {design['centre']} centre "
            f"replicates)" if design else "perplexity-quantile windows")
    lines = ["## Law-fitting runs", "", f"{len(runs)} CPT runs in {runs['group'].nunique()} groups from "
             f"{kind} (`grid/runs.csv`; a group is every run of one design point or window, left out "
             "together when validating).", ""]
    col = (fit.get("runs") or {}).get("collinearity")
    if col:
        vif_main = ", ".join(f"{k} {v:.3g}" for k, v in col["vif_main"].items())
        vif_law = ", ".join(f"{k} {v:.3g}" for k, v in col["vif_law"].items())
        lines += [f"Design diagnostics in the fit's coordinates ({fit.get('moments')} moments): "
                  f"corr(log mu, log sigma) = {col['corr_log_mu_log_sigma']:.3f}; VIF of the main effects "
                  f"({vif_main}); VIF of the paper's features ({vif_law}); condition number "
                  f"{col['condition_number']:.3g}; {col['n_distinct_mu_sigma']} distinct (mu, sigma); "
                  f"token budgets span {col['tokens_span']:.3g}x.", ""]
    lines += [_table(runs), ""]
    return lines


def _fit_section(fit: dict) -> list[str]:
    lines = ["## Law fit", "", f"Law `{fit.get('law')}` ({fit.get('law_form')}) in **{fit.get('moments')}** "
             "moments.", ""]
    point = fit.get("point") or {}
    if point:
        ci = point.get("ci90") or {}
        ident = point.get("identified") or {}
        prow = []
        for k, v in point["params"].items():
            lo, hi = ci.get(k) or [np.nan, np.nan]
            note = "unidentified (ran to its bound)" if ident.get(k) is False else ""
            prow.append(dict(param=k, estimate=v, ci90_lo=lo, ci90_hi=hi, note=note))
        lines += [f"Point fit (Huber on log-loss, delta {point.get('huber_delta', float('nan')):.3g}; bootstrap "
                  "90% intervals over run groups):", "", _table(pd.DataFrame(prow)), ""]
    bayes = fit.get("bayes") or {}
    if bayes.get("summary"):
        brow = [dict(param=k, **{c: v.get(c) for c in ("mean", "sd", "q05", "q95", "r_hat", "ess_bulk")})
                for k, v in bayes["summary"].items()]
        lines += [f"Bayesian fit (NumPyro NUTS; converged: {bayes.get('converged')}"
                  + (f"; problems: {'; '.join(bayes['problems'])}" if bayes.get("problems") else "") + "):", "",
                  _table(pd.DataFrame(brow)), ""]
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
        rows.append(dict(law=law, heldout_rmse_log_loss=v.get("rmse_log_loss", v.get("error")),
                         diff_vs_ppl=d.get("rmse_diff", "—" if law == ho.get("baseline") else d.get("error")),
                         interval=f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "—",
                         verdict_vs_ppl=d.get("verdict", "—")))
    lines += [_table(pd.DataFrame(rows)), ""]
    better = [k for k, d in diffs.items() if d.get("verdict") == "better"]
    worse = [k for k, d in diffs.items() if d.get("verdict") == "worse"]
    lines += [("Rivals that predicted left-out groups better than the paper's law (interval below 0): "
               + (", ".join(better) or "none")) + "; worse: " + (", ".join(worse) or "none")
              + "; the others: no detectable difference.", ""]
    loo = comp.get("loo") or {}
    if loo.get("best"):
        lines += [f"PSIS leave-one-group-out prefers `{loo['best']}`. {loo.get('disagreement', '')}", ""]
    return lines


def _optimum_section(out: Path, fit: dict, cfg) -> list[str]:
    support = fit.get("support") or {}
    lines = ["## Supported optimum", "", f"The target may only go where the runs give support: their convex "
             f"hull in (log mu, log sigma), each scaled by the runs' range, widened by the trust margin "
             f"{support.get('margin')}. Within it, the interior-optimum check counts the posterior (or bootstrap) "
             f"draws whose argmin lies on the region's edge; above {cfg.final.max_boundary_fraction:g} the "
             "selection is refused.", ""]
    bopt = (fit.get("bayes") or {}).get("optimum") or {}
    popt = (fit.get("point") or {}).get("optimum") or {}
    if bopt:
        lines += [f"In the fit (supported region only): {100 * bopt['fraction_at_boundary']:.0f}% of posterior "
                  f"draws have their argmin on the edge; argmin mu {_q(bopt['mu'])}, sigma {_q(bopt['sigma'])}.", ""]
    elif popt:
        lines += [f"In the fit: the point optimum is {'on' if popt.get('at_boundary') else 'inside'} the edge; "
                  f"{100 * (popt.get('bootstrap_fraction_at_boundary') or 0):.0f}% of bootstrap refits on the edge.", ""]
    for refused in sorted((out / "select").glob("*/refused.json")):
        r = json.loads(refused.read_text())
        lines += [f"**`{refused.parent.name}` was refused**: the law found no interior optimum within the runs it "
                  f"was given ({r['message']}). This method is not trained; the recommendation for this "
                  "budget is random selection (or the best supported run's recipe).", ""]
    return lines


def _q(block: dict) -> str:
    return f"{block['q50']:.4g} [{block['q05']:.4g}, {block['q95']:.4g}]"


def _selection_section(out: Path) -> list[str]:
    rows = []
    for s in sorted((out / "select").glob("*/summary.json")):
        js = json.loads(s.read_text())
        post = js.get("predicted_loss_posterior") or {}
        interior = (js.get("target_choice") or {}).get("interior") or {}
        rows.append(dict(method=s.parent.name, tokens=js.get("tokens"), moments=js.get("moments"),
                         mu=js.get("mu"), sigma=js.get("sigma"),
                         target=(f"({js['target']['mu']:.4g}, {js['target']['sigma']:.4g})" if js.get("target") else "—"),
                         distance=js.get("distance"),
                         edge_share=interior.get("fraction_at_boundary"),
                         predicted_loss=post.get("mean", js.get("predicted_loss")),
                         predictive_90=(f"[{post['pi'][0]:.4g}, {post['pi'][1]:.4g}]" if post.get("pi") else "—")))
    if not rows:
        return []
    return ["## Selections at the final budget", "", _table(pd.DataFrame(rows)), ""]


def _final_section(out: Path, fig_dir: Path) -> list[str]:
    final = collect_final(out)
    if final.empty:
        return ["## Final CPT runs", "", "No final runs.", ""]
    base_ds = _read_json(out / "final" / "base" / "downstream.json") or {}
    lines = ["## Final CPT runs", "", f"Seeds: {sorted(set(final['seed']))}. Mean and 95% Student-t interval "
             "over seeds; lower loss is better, higher accuracy is better. Base model before CPT: downstream "
             f"acc_norm {base_ds.get('acc_norm', float('nan')):.4f}.", ""]
    frows = []
    for method, g in final.groupby("method", sort=False):
        frows.append(dict(method=method, runs=len(g), tokens=float(g["tokens"].mean()),
                          domain_loss=_fmt_ci(*t_interval(g["domain_loss"])),
                          general_loss=_fmt_ci(*t_interval(g["general_loss"])),
                          acc_norm=_fmt_ci(*t_interval(g["acc_norm"]))))
    lines += [_table(pd.DataFrame(frows)), ""]
    _final_figure(final, fig_dir / "final.png")
    lines += ["![final](report_figures/final.png)", ""]
    for method in [m for m in final["method"].unique() if m != "random"]:
        paired = final[final["method"].isin([method, "random"])].pivot(
            index="seed", columns="method", values="domain_loss").dropna()
        if len(paired) == 0 or "random" not in paired:
            continue
        m, lo, hi = t_interval(paired[method] - paired["random"])
        if np.isfinite(lo) and hi < 0:
            verdict = f"{method} beat random (interval below zero)"
        elif np.isfinite(lo) and lo > 0:
            verdict = f"{method} was worse than random (interval above zero)"
        else:
            verdict = f"no detectable difference between {method} and random at this number of seeds"
        lines.append(f"- **{method} − random** (domain test loss, paired over {len(paired)} seeds): "
                     f"{_fmt_ci(m, lo, hi)} — {verdict}.")
        summary = _read_json(out / "select" / method / "summary.json") or {}
        post = summary.get("predicted_loss_posterior") or {}
        if method.startswith("dos") and post.get("pi"):
            lines.append(f"  The law predicted {post['mean']:.4f} (90% predictive interval "
                         f"[{post['pi'][0]:.4f}, {post['pi'][1]:.4f}]) for this subset; observed mean "
                         f"{paired[method].mean():.4f}.")
    lines.append("")
    return lines


def write_report(out: str | Path, cfg) -> Path:
    out = Path(out)
    fig_dir = out / "report_figures"
    fig_dir.mkdir(exist_ok=True)
    fit = _read_json(out / "fit" / "fit.json") or {}
    lines = [f"# pplaw study `{cfg.name}`", ""]
    lines += [f"Base model: `{cfg.base_model or 'pretrained from scratch (base/pretrain)'}`; "
              f"domain training data: `{cfg.data.domain_train or cfg.data.builtin}`. "
              f"Every command that produced this study is in `commands.log`; the configuration is "
              f"`config.yaml`.", ""]
    lines += _landscape_section(out, fig_dir)
    lines += _grid_section(out, fit)
    lines += _fit_section(fit)
    lines += _optimum_section(out, fit, cfg)
    lines += _selection_section(out)
    lines += _final_section(out, fig_dir)
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path
