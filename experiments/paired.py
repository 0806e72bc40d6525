"""Paired (by seed) differences of diagnostic arms against a study's own final runs.

    python experiments/paired.py --study runs/cpu_tiny --diag runs/cpu_tiny_diagnostics boundary quad_relaxed
    python experiments/paired.py --study runs/control_junk --diag runs/control_junk_diagnostics \\
        --against random,oracle,band override

Reads STUDY/final/<method>/seed<k>/eval.json and DIAG/<arm>/final/seed<k>/eval.json; prints each
arm's mean, its difference to each `--against` method with a 95% t interval (paired by seed), and
the minimum detectable effect at that number of seeds (the study report's definitions).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from pplaw_jax.report import mde, t_interval


def evals(root: Path) -> dict[int, dict]:
    return {int(p.parent.name[4:]): json.loads(p.read_text()) for p in root.glob("seed*/eval.json")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arms", nargs="+")
    p.add_argument("--study", type=Path, default=Path("runs/cpu_tiny"))
    p.add_argument("--diag", type=Path, default=Path("runs/cpu_tiny_diagnostics"))
    p.add_argument("--against", default="random", help="comma list of the study's final methods")
    args = p.parse_args()
    for arm in args.arms:
        ev = evals(args.diag / arm / "final")
        for method in args.against.split(","):
            ref = evals(args.study / "final" / method)
            seeds = sorted(set(ev) & set(ref))
            for metric in ("domain_loss", "general_loss"):
                diff = [ev[k][metric] - ref[k][metric] for k in seeds]
                m, lo, hi = t_interval(diff)
                print(
                    f"{arm} {metric}: n={len(seeds)} mean {np.mean([ev[k][metric] for k in seeds]):.4f}; "
                    f"minus {method} {m:+.4f} [{lo:+.4f}, {hi:+.4f}] (95% t, paired by seed); "
                    f"MDE {mde(float(np.std(diff, ddof=1)), len(seeds)):.4f}"
                )
        print(
            f"  subsets: mu_logppl {np.mean([e['mu_logppl'] for e in ev.values()]):.3f}, "
            f"sigma_logppl {np.mean([e['sigma_logppl'] for e in ev.values()]):.3f}"
        )


if __name__ == "__main__":
    main()
