"""Wall time of the scaling-law fits on a realistic problem (not run by CI).

Problem: 12 perplexity windows (mu log-uniform in [5, 60], sigma = mu * U(0.3, 0.9)) each trained
at 4 token budgets (1e7 .. 3e8): 48 runs from known perplexity-aware parameters with 1% noise on
log-loss, grouped by window (run_id).  Timed: the Huber point fit alone, with 200 bootstrap refits,
NUTS for the perplexity-aware law (4 chains, default 1000 warmup + 1000 samples; first call
includes JAX start-up, the second call still compiles its own sampler; a 10+10-step call measures
that fixed cost), and the whole `pplaw fit` stage (point + NUTS +
data-only law NUTS for LOO + 5-fold held-out comparison + plots).

    PYTHONPATH=. python benchmarks/fit_speed.py [--runs-per-window 4] [--windows 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from pplaw_jax.config import FitConfig
from pplaw_jax.fit.runs_table import write_runs_table
from pplaw_jax.fit.stage import fit_to_dir
from pplaw_jax.law import LAWS, predict_loss
from pplaw_jax.law.bayes import Priors, SamplerConfig, fit_bayes
from pplaw_jax.law.point import fit_point
from pplaw_jax.law.runs import runs_from_arrays
from pplaw_jax.law.synthetic import TRUE_PPL


def realistic_runs(windows: int, per_window: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mu = np.repeat(np.exp(rng.uniform(np.log(5), np.log(60), windows)), per_window)
    sigma = mu * np.repeat(rng.uniform(0.3, 0.9, windows), per_window)
    tokens = np.tile(np.geomspace(1e7, 3e8, per_window), windows)
    loss = predict_loss("ppl", TRUE_PPL, mu, sigma, tokens) * np.exp(0.01 * rng.standard_normal(mu.size))
    run_id = np.repeat([f"w{i:02d}" for i in range(windows)], per_window)
    return pd.DataFrame({"run_id": run_id, "mu": mu, "sigma": sigma, "tokens": tokens, "loss": loss})


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=12)
    ap.add_argument("--runs-per-window", type=int, default=4)
    args = ap.parse_args()
    frame = realistic_runs(args.windows, args.runs_per_window)
    runs = runs_from_arrays(frame.mu, frame.sigma, frame.tokens, frame.loss, frame.run_id)
    form = LAWS["ppl"]
    res = {"runs": runs.n, "groups": runs.n_groups, "jax_devices": jax.local_device_count()}
    _, res["point_s"] = timed(lambda: fit_point(runs, form, bootstrap=0))
    point, res["point_bootstrap200_s"] = timed(lambda: fit_point(runs, form, bootstrap=200))
    cfg = SamplerConfig(chains=4)
    bayes, res["nuts_first_call_s"] = timed(lambda: fit_bayes(runs, point, Priors(), cfg))
    res["nuts_chain_method"] = bayes.chain_method
    res["nuts_sampling_converged"] = bayes.diagnostics()["converged"]
    _, res["nuts_second_call_s"] = timed(lambda: fit_bayes(runs, point, Priors(), cfg))
    # the same call with 10 + 10 steps: its time is the fixed cost (tracing + XLA compilation)
    tiny = SamplerConfig(chains=4, warmup=10, samples=10)
    _, res["nuts_10_steps_s"] = timed(lambda: fit_bayes(runs, point, Priors(), tiny))
    with tempfile.TemporaryDirectory() as tmp:
        write_runs_table(Path(tmp) / "runs.csv", frame)
        _, res["pplaw_fit_stage_s"] = timed(lambda: fit_to_dir(Path(tmp) / "runs.csv", Path(tmp) / "fit", FitConfig()))
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
