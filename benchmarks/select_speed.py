"""Speed of `pplaw select` on a large synthetic landscape (default: one million chunks).

    PYTHONPATH=. python benchmarks/select_speed.py [--chunks 1000000] [--budget-frac 0.05]
                                                   [--draws 1000] [--repeats 3]

Landscape: log-normal chunk ppl (exp N(3, 0.5)), scored tokens uniform in [16, 2047].  Times
(best of ``--repeats``, wall clock, this process) for: reading the landscape directory; every
baseline; DOS pieces (sorting + prefix sums + attainable region, an explicit target, the point
target, the posterior target with ``--draws`` draws); the default window family at three budgets;
writing one selection; and the whole CLI (`pplaw select --fit ...`, DOS with the posterior target)
from disk to disk.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pplaw_jax.cli import main as pplaw_main
from pplaw_jax.config import WindowsConfig
from pplaw_jax.fit.fitdir import write_fit_json, write_posterior
from pplaw_jax.landscape.directory import read_landscape
from pplaw_jax.law.bayes import import_arviz
from pplaw_jax.select import (
    RankedLandscape,
    choose_target,
    dos_select,
    select_baseline,
    select_windows,
    write_selection,
)
from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape
from pplaw_jax.select.windows import parse_window

PARAMS = dict(E=1.8, Dc=50.0, alpha0=1.0, alpha1=-0.03, beta0=0.6, beta1=-0.01, alphaD=0.1)


def best_of(repeats: int, fn):
    """(best wall time in seconds, result of the last call)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def posterior_draws(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    draws = {k: np.full(n, v) for k, v in PARAMS.items()}
    draws["alpha1"] = PARAMS["alpha1"] + rng.normal(0.0, 0.004, n)
    draws["beta1"] = PARAMS["beta1"] + rng.gamma(2.0, 0.004, n)
    return draws


def write_fit(fit_dir: Path, draws: dict[str, np.ndarray]) -> None:
    az = import_arviz()
    fit_dir.mkdir(parents=True)
    posterior = {k: v.reshape(1, -1) for k, v in draws.items()}
    posterior["noise"] = np.full((1, len(draws["E"])), 0.01)
    write_posterior(fit_dir, az.from_dict(posterior=posterior))
    info = {
        "law": "ppl",
        "param_names": list(PARAMS),
        "point": {"params": PARAMS, "ci90": {}},
        "bayes": {"summary": {}, "optimum": None},
    }
    write_fit_json(fit_dir, info)


def run(chunks: int, budget_frac: float, draws: int, repeats: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = synthetic_landscape(chunks, seed=0)
        land_dir = write_landscape(tmp / "land", table, rows_per_part=100_000)
        t, land = best_of(repeats, lambda: read_landscape(land_dir))
        rows.append(("read landscape dir (10 parts)", t, f"{land.size} chunks"))
        ppl, n_tokens = land.ppl, land.n_tokens
        budget = int(n_tokens.sum() * budget_frac)

        for method in ("random", "low", "high", "mid", "full"):
            t, sel = best_of(repeats, lambda method=method: select_baseline(method, ppl, n_tokens, budget, seed=0))
            rows.append((f"baseline {method}", t, f"{sel.n_chunks} chunks"))

        def build_space():
            built = RankedLandscape(ppl, n_tokens, budget)
            _ = built.region  # the windows / extremes curves are part of the set-up cost
            return built

        t, space = best_of(repeats, build_space)
        region = space.region
        rows.append(
            ("DOS: sort + prefix sums + attainable region", t, f"mu in [{region.mu_min:.1f}, {region.mu_max:.1f}]")
        )
        mu, sigma = (float(v) for v in region.points(0.5 * (region.mu_min + region.mu_max), 0.3))
        t, sel = best_of(repeats, lambda: dos_select(space, mu, sigma))
        rows.append(("DOS: select for an explicit target", t, f"distance {sel.info['distance']:.1e}"))
        t, choice = best_of(repeats, lambda: choose_target(region, "ppl", PARAMS, None, budget))
        rows.append(("DOS: point target", t, f"({choice.point.mu:.2f}, {choice.point.sigma:.2f})"))
        post_draws = posterior_draws(draws)
        t, choice = best_of(repeats, lambda: choose_target(region, "ppl", PARAMS, post_draws, budget))
        rows.append(
            (f"DOS: posterior target, {draws} draws", t, f"({choice.posterior.mu:.2f}, {choice.posterior.sigma:.2f})")
        )
        target = choice.posterior
        t, sel = best_of(repeats, lambda: dos_select(space, target.mu, target.sigma))
        rows.append(("DOS: select for the posterior target", t, f"distance {sel.info['distance']:.1e}"))

        total = int(n_tokens.sum())
        budgets = (total // 100, total // 30, total // 10)
        windows = [parse_window(w) for w in WindowsConfig().windows]
        t, (subsets, _, _) = best_of(repeats, lambda: select_windows(ppl, n_tokens, windows, budgets, seed=0))
        rows.append(("windows: default 11 windows x 3 budgets", t, f"{len(subsets)} subsets"))
        t, _ = best_of(repeats, lambda: write_selection(tmp / "one", land, sel.indices, {"x": 1}))
        rows.append(("write one selection (parquet + summary)", t, f"{sel.n_chunks} rows"))

        write_fit(tmp / "fit", post_draws)
        argv = [
            "select",
            "--landscape",
            str(land_dir),
            "--tokens",
            str(budget),
            "--out",
            str(tmp / "cli"),
            "--fit",
            str(tmp / "fit"),
        ]
        t, rc = best_of(repeats, lambda: pplaw_main(argv))
        assert rc == 0
        rows.append(
            (
                f"CLI end to end: pplaw select --method dos --fit (posterior, {draws} draws)",
                t,
                f"budget {budget} tokens",
            )
        )

    print(f"\n{chunks} chunks, {int(n_tokens.sum())} tokens, budget {budget} ({budget_frac:.0%}), best of {repeats}\n")
    print("| step | seconds | note |\n|---|---|---|")
    for name, t, note in rows:
        print(f"| {name} | {t:.4f} | {note} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=1_000_000)
    p.add_argument("--budget-frac", type=float, default=0.05)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    run(a.chunks, a.budget_frac, a.draws, a.repeats)
