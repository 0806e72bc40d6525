"""NUTS of every law on one runs table: leapfrog steps per iteration, convergence, wall time and
the posterior mean and sd of each parameter.

Fits each law as `pplaw fit` does (point fit with 16 starts and 200 bootstrap refits, then NUTS with
the Student-t likelihood), in one process and in the order given, so the first fit carries the
compilation and the others show what a fit costs once the sampler is compiled. Not run by CI.

    PYTHONPATH=. python benchmarks/nuts_laws.py [--runs RUNS.csv] [--laws surface ppl ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.fit_speed_compare import REPO, unique_run_ids
from pplaw_jax.fit.runs_table import read_runs
from pplaw_jax.law import LAWS
from pplaw_jax.law.bayes import Priors, SamplerConfig, fit_bayes
from pplaw_jax.law.point import fit_point


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(REPO / "experiments/results/cpu_tiny/grid/runs.csv"))
    ap.add_argument("--laws", nargs="+", default=["surface", "ppl", "data", "mu", "nointer", "quad"])
    ap.add_argument("--moments", default="logppl")
    ap.add_argument("--draws", type=int, default=1500, help="warmup and samples per chain")
    ap.add_argument("--target-accept", type=float, default=0.99)
    args = ap.parse_args()
    cfg = SamplerConfig(
        chains=4, warmup=args.draws, samples=args.draws, likelihood="student", target_accept=args.target_accept
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs_csv = unique_run_ids(Path(args.runs), Path(tmp) / "runs.csv")
        for name in args.laws:
            runs = read_runs(runs_csv, LAWS[name], args.moments)
            point = fit_point(runs, LAWS[name], n_random=16, bootstrap=200, seed=0)
            t0 = time.perf_counter()
            fit = fit_bayes(runs, point, Priors(), cfg)
            wall = time.perf_counter() - t0
            d = fit.diagnostics()
            rows.append(
                {
                    "law": name,
                    "wall_s": round(wall, 1),
                    "leapfrog_steps_mean": round(float(np.mean(fit.sample_stats["n_steps"])), 1),
                    "max_depth_share": round(float(np.mean(fit.sample_stats["tree_depth"] >= 10)), 3),
                    "max_r_hat": round(d["max_r_hat"], 4),
                    "min_ess_bulk": round(d["min_ess_bulk"]),
                    "divergences": d["divergences"],
                    "converged": d["converged"],
                    "posterior_mean_sd": {
                        k: [float(np.mean(v)), float(np.std(v))] for k, v in fit.draws.items() if k != "noise"
                    },
                }
            )
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "posterior_mean_sd"}), file=sys.stderr)
    print(json.dumps({"runs": args.runs, "chains": 4, "draws": args.draws, "laws": rows}, indent=1))


if __name__ == "__main__":
    main()
