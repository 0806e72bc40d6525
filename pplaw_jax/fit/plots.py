"""Figures of a fit (matplotlib Agg, ArviZ for the posterior ones); each writes one PNG atomically."""

from __future__ import annotations

import numpy as np

from pplaw_jax.fileio import atomic_write
from pplaw_jax.law.bayes import import_arviz
from pplaw_jax.law.forms import predict_loss
from pplaw_jax.law.predictive import predictive
from pplaw_jax.law.runs import Runs
from pplaw_jax.paths import PathSpec

MAX_REGIMES = 6
PLOT_FILES = ("trace.png", "pair.png", "pred_vs_obs.png", "surface.png", "loss_vs_tokens.png", "prior_predictive.png")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: PathSpec) -> None:
    """Write `fig` as a PNG through `atomic_write` (a killed writer leaves no half figure) and close it."""
    plt = _plt()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


def plot_trace(idata, names, path: PathSpec) -> None:
    """ArviZ trace plot (per-chain densities and traces) of the law's parameters and noise."""
    az = import_arviz()
    axes = az.plot_trace(idata, var_names=list(names), compact=False, figsize=(10, 1.6 * len(names)))
    save_figure(np.asarray(axes).ravel()[0].figure, path)


def plot_pair(idata, names, path: PathSpec, max_draws: int = 1000) -> None:
    """ArviZ pair plot of the posterior (thinned to `max_draws` points), divergences marked."""
    az = import_arviz()
    post = idata.posterior
    thin = max(1, post.sizes["chain"] * post.sizes["draw"] // max_draws)
    axes = az.plot_pair(
        idata.sel(draw=slice(None, None, thin)),
        var_names=list(names),
        kind="scatter",
        divergences=True,
        marginals=True,
        scatter_kwargs={"alpha": 0.3, "s": 2},
        figsize=(2.0 * len(names), 2.0 * len(names)),
    )
    save_figure(np.asarray(axes).ravel()[0].figure, path)


def plot_pred_vs_obs(runs: Runs, pred: dict, path: PathSpec, label: str) -> None:
    """Observed loss against the fitted loss with its interval (`pred` from `predictive`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo_key, hi_key = ("pi_lo", "pi_hi") if "pi_lo" in pred else ("ci_lo", "ci_hi")
    # clipped: a point-fit centre can sit just outside its bootstrap percentile interval
    yerr = np.maximum(np.vstack([pred["mean"] - pred[lo_key], pred[hi_key] - pred["mean"]]), 0.0)
    ax.errorbar(runs.loss, pred["mean"], yerr=yerr, fmt="o", ms=3, alpha=0.7, elinewidth=0.8, label=label)
    lim = [min(runs.loss.min(), pred[lo_key].min()), max(runs.loss.max(), pred[hi_key].max())]
    ax.plot(lim, lim, "k--", lw=0.8, label="y = x")
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    ax.set_title("predicted vs observed")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_prior_predictive(runs: Runs, draws: np.ndarray, path: PathSpec, level: float = 0.9) -> None:
    """Prior-predictive check: each run's observed log-loss (dots) against the central 50% and
    `level` intervals of its log-loss drawn from the priors alone (`draws`: ``[S, n]``); runs sorted
    by observed loss.  Observed values far outside the bands mean the priors rule the data out."""
    plt = _plt()
    order = np.argsort(runs.loss)
    obs, d = np.log(runs.loss)[order], draws[:, order]
    a = (1 - level) / 2
    lo, q25, q50, q75, hi = np.quantile(d, [a, 0.25, 0.5, 0.75, 1 - a], axis=0)
    x = np.arange(runs.n)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * runs.n), 4.5))
    ax.vlines(x, lo, hi, color="tab:blue", alpha=0.3, lw=4, label=f"prior predictive {int(100 * level)}%")
    ax.vlines(x, q25, q75, color="tab:blue", alpha=0.7, lw=4, label="prior predictive 50%")
    ax.scatter(x, q50, marker="_", color="tab:blue", s=60, label="prior predictive median")
    ax.scatter(x, obs, color="k", s=14, zorder=3, label="observed")
    inside = np.mean((lo <= obs) & (obs <= hi))
    ax.set_xlabel("run (sorted by observed loss)")
    ax.set_ylabel("log loss")
    ax.set_title(f"prior-predictive check: {100 * inside:.0f}% of runs inside the {int(100 * level)}% band")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_surface(
    law, params, runs: Runs, support, tokens_ref, path: PathSpec, point_opt=None, post_opt=None, region=None
):
    """Predicted loss over ``(mu, sigma)`` at `tokens_ref` (log axes) around the supported region
    (`law.region.SupportRegion`: its hull and the trust-margin boundary, dashed), with the runs, the
    point optimum (star), posterior optimum draws (dots) and their credible region (polygons)."""
    plt = _plt()
    (mu_lo, mu_hi), (s_lo, s_hi) = support.bounds()
    pad_mu, pad_s = (mu_hi / mu_lo) ** 0.1, (s_hi / s_lo) ** 0.1
    mus = np.geomspace(mu_lo / pad_mu, mu_hi * pad_mu, 120)
    sigmas = np.geomspace(s_lo / pad_s, s_hi * pad_s, 120)
    mg, sg = np.meshgrid(mus, sigmas)
    with np.errstate(over="ignore", invalid="ignore"):
        loss = predict_loss(law, params, mg, sg, tokens_ref)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    finite = loss[np.isfinite(loss)]
    levels = np.unique(np.quantile(finite, np.linspace(0, 1, 21))) if finite.size else np.array([])
    if levels.size >= 2:  # a flat surface has no contour levels; the figure keeps the rest
        cs = ax.contourf(mg, sg, loss, levels=levels, cmap="viridis")
        fig.colorbar(cs, ax=ax, label=f"predicted loss at D = {tokens_ref:.3g}")
    hull_mu, hull_s = support.from_unit(np.vstack([support.hull, support.hull[:1]]))
    ax.plot(hull_mu, hull_s, "w-", lw=1.2, zorder=2, label="hull of the runs")
    dist = support.distance(mg, sg)
    ax.contour(mg, sg, dist, levels=[support.margin + 1e-9], colors="w", linestyles="--", linewidths=1.0)
    ax.scatter(runs.mu, runs.sigma, c="white", edgecolors="k", s=18, label="runs", zorder=3)
    if post_opt is not None:
        step = max(1, len(post_opt["mu"]) // 800)
        ax.scatter(
            post_opt["mu"][::step],
            post_opt["sigma"][::step],
            s=3,
            c="orange",
            alpha=0.4,
            label="posterior optimum draws",
            zorder=4,
        )
    if region is not None:
        for i, poly in enumerate(region["polygons"]):
            poly = np.asarray(poly)
            ax.plot(
                poly[:, 0],
                poly[:, 1],
                "r-",
                lw=1.5,
                zorder=5,
                label=f"{int(100 * region['level'])}% credible region" if i == 0 else None,
            )
    if point_opt is not None:
        ax.scatter(
            [point_opt["mu"]],
            [point_opt["sigma"]],
            marker="*",
            s=220,
            c="red",
            edgecolors="k",
            label="point-fit optimum",
            zorder=6,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(mus[0], mus[-1])
    ax.set_ylim(sigmas[0], sigmas[-1])
    kind = runs.moments
    ax.set_xlabel(f"mu (mean chunk {kind})")
    ax.set_ylabel(f"sigma (std of chunk {kind})")
    ax.set_title(f"loss surface; supported region (dashed: trust margin {support.margin:g})")
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def regimes(runs: Runs, law_uses_perplexity: bool) -> np.ndarray:
    """Integer regime per run: distinct ``(mu, sigma)`` pairs if there are few, else mu quantile
    bins; all one regime for the data-only law."""
    if not law_uses_perplexity:
        return np.zeros(runs.n, dtype=int)
    pairs = np.round(np.column_stack([np.log(runs.mu), np.log(runs.sigma)]), 6)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    if len(uniq) <= MAX_REGIMES:
        return inv.reshape(-1)
    edges = np.quantile(runs.mu, np.linspace(0, 1, MAX_REGIMES + 1)[1:-1])
    return np.searchsorted(edges, runs.mu, side="right")


def plot_loss_vs_tokens(law, params, runs: Runs, path: PathSpec, draws=None, uses_perplexity=True, level=0.9):
    """Loss against D (log axis) per perplexity regime: runs as dots, the fitted law at the
    regime's median (mu, sigma) as a line, and the posterior credible band when available."""
    plt = _plt()
    reg = regimes(runs, uses_perplexity)
    d = np.geomspace(runs.tokens.min() / 1.5, runs.tokens.max() * 1.5, 80)
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = plt.get_cmap("tab10")
    for r in np.unique(reg):
        sel = reg == r
        m, s = float(np.median(runs.mu[sel])), float(np.median(runs.sigma[sel]))
        label = f"mu~{m:.3g}, sigma~{s:.3g}" if uses_perplexity else "runs"
        ax.scatter(runs.tokens[sel], runs.loss[sel], s=14, color=colors(r % 10), label=label, zorder=3)
        ax.plot(d, predict_loss(law, params, m, s, d), color=colors(r % 10), lw=1.3)
        if draws is not None:
            pred = predictive(law, draws, None, "normal", None, m, s, d, level)
            ax.fill_between(d, pred["ci_lo"], pred["ci_hi"], color=colors(r % 10), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("loss")
    ax.set_title("loss vs tokens per perplexity regime (lines: fitted law at the regime's median)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
