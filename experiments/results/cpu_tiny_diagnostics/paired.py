"""Paired (by seed) differences of the diagnostic arms against the cpu_tiny study's random runs.

    python experiments/results/cpu_tiny_diagnostics/paired.py boundary quad_relaxed

Reads runs/cpu_tiny/final/random/seed<k>/eval.json and runs/cpu_tiny_diagnostics/<arm>/final/seed<k>/eval.json
(written by commands.sh); prints each arm's mean, its difference to random with a 95% t interval, and
the minimum detectable effect at that number of seeds (the study report's definitions).
"""

import json
import sys
from pathlib import Path

import numpy as np

from pplaw_jax.report import mde, t_interval

STUDY, DIAG = Path("runs/cpu_tiny"), Path("runs/cpu_tiny_diagnostics")


def evals(root: Path) -> dict[int, dict]:
    return {int(p.parent.name[4:]): json.loads(p.read_text()) for p in root.glob("seed*/eval.json")}


def main(arms: list[str]) -> None:
    random = evals(STUDY / "final" / "random")
    for arm in arms:
        ev = evals(DIAG / arm / "final")
        seeds = sorted(set(ev) & set(random))
        for metric in ("domain_loss", "general_loss"):
            diff = [ev[k][metric] - random[k][metric] for k in seeds]
            m, lo, hi = t_interval(diff)
            print(f"{arm} {metric}: n={len(seeds)} mean {np.mean([ev[k][metric] for k in seeds]):.4f}; "
                  f"minus random {m:+.4f} [{lo:+.4f}, {hi:+.4f}] (95% t, paired by seed); "
                  f"MDE {mde(float(np.std(diff, ddof=1)), len(seeds)):.4f}")
        print(f"  subsets: mu_logppl {np.mean([ev[k]['mu_logppl'] for k in seeds]):.3f}, "
              f"sigma_logppl {np.mean([ev[k]['sigma_logppl'] for k in seeds]):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
