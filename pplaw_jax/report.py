"""`report.md` for a finished study: tables and figures from the files the stages wrote.

It reads only stage outputs (landscape parts and summary, runs.csv, fit.json, selection summaries,
eval.json and downstream.json of every final run), so a report can be regenerated at any time.
Intervals over seeds are Student-t 95% intervals of the mean; DOS-versus-random differences are
paired by seed (same seed, same data order logic, same schedule).
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
            tokens=ev.get("tokens"), mu=ev.get("mu"), sigma=ev.get("sigma"),
            domain_loss=ev.get("domain_loss"), general_loss=ev.get("general_loss"),
            acc=ds.get("acc"), acc_norm=ds.get("acc_norm"),
        ))
    return pd.DataFrame(rows)


def _landscape_figure(out: Path, fig_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyarrow.parquet as pq

    ppl = read_landscape(out / "landscape", columns=["ppl"])["ppl"].to_numpy()
    bins = np.linspace(np.log(ppl.min()), np.log(ppl.max()), 60)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(np.log(ppl), bins=bins, color="0.8", label=f"landscape ({ppl.size} chunks)")
    for sel in sorted((out / "select").glob("*/selection.parquet")):
        if sel.parent.name == "full":
            continue
        sp = pq.read_table(sel, columns=["ppl"])["ppl"].to_numpy()
        ax.hist(np.log(sp), bins=bins, histtype="step", linewidth=1.5, label=sel.parent.name)
    ax.set_xlabel("log chunk perplexity")
    ax.set_ylabel("chunks")
    ax.set_title("Perplexity landscape and the selected subsets")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(fig_path, dpi=120)
    plt.close(fig)


def _final_figure(final: pd.DataFrame, fig_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_report(out: str | Path, cfg) -> Path:
    out = Path(out)
    fig_dir = out / "report_figures"
    fig_dir.mkdir(exist_ok=True)
    lines = [f"# pplaw study `{cfg.name}`", ""]
    lines += [f"Base model: `{cfg.base_model or 'pretrained from scratch (base/pretrain)'}`; "
              f"domain training data: `{cfg.data.domain_train or cfg.data.builtin}`. "
              f"Every command that produced this study is in `commands.log`; the configuration is "
              f"`config.yaml`.", ""]

    # Landscape
    ls = _read_json(out / "landscape" / "summary.json") or {}
    _landscape_figure(out, fig_dir / "landscape.png")
    lines += ["## Perplexity landscape", ""]
    row = {k: ls.get(k) for k in ("documents", "chunks", "tokens", "skipped")}
    row.update(ppl_mean=ls["ppl"]["mean"], ppl_std=ls["ppl"]["std"], tokens_per_s=ls.get("tokens_per_s"))
    lines += [_table(pd.DataFrame([row])), "", "![landscape](report_figures/landscape.png)", ""]

    # Grid and fits
    runs = pd.read_csv(out / "grid" / "runs.csv")
    lines += ["## Law-fitting grid", "", f"{len(runs)} CPT runs on perplexity-window subsets "
              f"(`grid/runs.csv`):", "", _table(runs), ""]
    fit = _read_json(out / "fit" / "ppl" / "fit.json") or {}
    lines += ["## Law fit", ""]
    point = fit.get("point") or {}
    if point:
        ci = point.get("ci90", {})
        prow = [dict(param=k, estimate=v, ci90_lo=(ci.get(k) or [np.nan, np.nan])[0],
                     ci90_hi=(ci.get(k) or [np.nan, np.nan])[1]) for k, v in point["params"].items()]
        lines += ["Point fit (Huber on log-loss, bootstrap 90% intervals):", "", _table(pd.DataFrame(prow)), ""]
    bayes = fit.get("bayes") or {}
    if bayes.get("summary"):
        brow = [dict(param=k, **{c: v.get(c) for c in ("mean", "sd", "q05", "q95", "r_hat", "ess_bulk")})
                for k, v in bayes["summary"].items()]
        lines += ["Bayesian fit (NumPyro NUTS):", "", _table(pd.DataFrame(brow)), ""]
    comp = (fit.get("comparison") or {})
    ho = ((comp.get("heldout") or {}).get("laws")) or {}
    failed = {law: v["error"] for law, v in ho.items() if "error" in v}
    if failed:
        lines += ["**Held-out runs**: no held-out comparison — " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    elif ho:
        def rmse(law: str) -> tuple[float, str]:
            v = ho[law]
            if v["rmse_log_loss"] is None:  # some held-out prediction was not finite
                return float("inf"), f"not finite ({v.get('n_nonfinite')} runs predicted non-finite)"
            return v["rmse_log_loss"], f"{v['rmse_log_loss']:.4g}"

        (e_ppl, s_ppl), (e_data, s_data) = rmse("ppl"), rmse("data")
        verdict = "better" if e_ppl < e_data else "not better"
        lines += [f"**Held-out runs** ({comp['heldout']['method']}): RMSE of log-loss "
                  f"{s_ppl} for the perplexity-aware law vs {s_data} for the data-only law — "
                  f"the perplexity-aware law predicted held-out runs **{verdict}**.", ""]
    loo = comp.get("loo") or {}
    if loo.get("best"):
        lines += [f"PSIS-LOO prefers the `{loo['best']}` law.", ""]
    for png in fit.get("plots", []):
        lines.append(f"![{png}](fit/ppl/{png})")
    lines.append("")

    # Selections
    lines += ["## Selections at the final budget", ""]
    srows = []
    for s in sorted((out / "select").glob("*/summary.json")):
        js = json.loads(s.read_text())
        srows.append(dict(method=s.parent.name, tokens=js.get("tokens"), mu=js.get("mu"), sigma=js.get("sigma"),
                          predicted_loss=js.get("predicted_loss"), distance=js.get("distance")))
    if srows:
        lines += [_table(pd.DataFrame(srows)), ""]

    # Final runs
    final = collect_final(out)
    base_ds = _read_json(out / "final" / "base" / "downstream.json") or {}
    lines += ["## Final CPT runs", "", f"Seeds: {sorted(set(final['seed']))}. Mean and 95% Student-t "
              "interval over seeds; lower loss is better, higher accuracy is better. "
              f"Base model before CPT: downstream acc_norm {base_ds.get('acc_norm', float('nan')):.4f}.", ""]
    frows = []
    for method, g in final.groupby("method", sort=False):
        frows.append(dict(method=method, runs=len(g), tokens=float(g["tokens"].mean()),
                          domain_loss=_fmt_ci(*t_interval(g["domain_loss"])),
                          general_loss=_fmt_ci(*t_interval(g["general_loss"])),
                          acc_norm=_fmt_ci(*t_interval(g["acc_norm"]))))
    lines += [_table(pd.DataFrame(frows)), ""]
    _final_figure(final, fig_dir / "final.png")
    lines += ["![final](report_figures/final.png)", ""]
    for dos in [m for m in final["method"].unique() if m.startswith("dos")]:
        paired = final[final["method"].isin([dos, "random"])].pivot(index="seed", columns="method", values="domain_loss").dropna()
        if len(paired) == 0:
            continue
        m, lo, hi = t_interval(paired[dos] - paired["random"])
        if np.isfinite(lo) and hi < 0:
            verdict = "DOS beat random (interval below zero)"
        elif np.isfinite(lo) and lo > 0:
            verdict = "DOS was worse than random (interval above zero)"
        else:
            verdict = "no significant difference between DOS and random at this number of seeds"
        lines += [f"**{dos} vs random** (domain test loss, paired over {len(paired)} seeds): "
                  f"difference {_fmt_ci(m, lo, hi)} — {verdict}.", ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path
