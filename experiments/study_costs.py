"""The README's cost table: CPT runs, tokens trained and wall time of each committed study
(`pplaw_jax.costs.study_costs` on experiments/results/<name>/).

    python experiments/study_costs.py experiments/results/quickstart experiments/results/control_junk ...
"""

import sys
from pathlib import Path

from pplaw_jax.costs import study_costs


def main(dirs: list[str]) -> None:
    print("| study | training runs | tokens trained | wall (first command to report) | in training loops |")
    print("|---|---|---|---|---|")
    for d in dirs:
        c = study_costs(Path(d))
        wall, share = (
            (f"{c['wall_s'] / 60:.1f} min", f"{100 * c['train_loop_s'] / c['wall_s']:.0f}%")
            if c["wall_s"]
            else ("not logged", "-")
        )
        print(f"| `{Path(d).name}` | {c['runs']} | {c['tokens']:,} | {wall} | {share} |")


if __name__ == "__main__":
    main(sys.argv[1:])
