"""Copy the small, reviewable outputs of a finished study into experiments/results/<name>/.

Report, figures, runs.csv, fit.json files and plots, selection and run summaries, the config and the
exact commands; checkpoints, token caches, landscape parts and posteriors stay in the run directory.

    python experiments/collect_results.py runs/cpu_tiny experiments/results/cpu_tiny
"""

import shutil
import sys
from pathlib import Path

PATTERNS = [
    "report.md",
    "config.yaml",
    "commands.log",
    "report_figures/*.png",
    "landscape/summary.json",
    "landscape/histogram.png",
    "grid/runs.csv",
    "grid/selections/manifest.csv",
    "grid/selections/design.json",
    "grid/selections/windows.json",
    "grid/runs/*/eval.json",
    "grid/round*/runs.csv",
    "grid/round*/round.json",
    "grid/round*/fit/fit.json",
    "grid/round*/proposals/propose.json",
    "grid/round*/proposals/manifest.csv",
    "grid/round*/runs/*/eval.json",
    "fit/fit.json",
    "fit/*.png",
    "fit/diagnostics.json",
    "select/*/seed*/summary.json",
    "select/*/seed*/refused.json",
    "base/pretrain/eval.json",
    "data/*.manifest.json",
    "final/base/downstream.json",
    "final/*/seed*/eval.json",
    "final/*/seed*/downstream.json",
]


def main(src: str, dst: str) -> None:
    src_dir, dst_dir = Path(src), Path(dst)
    n = 0
    for pattern in PATTERNS:
        for path in sorted(src_dir.glob(pattern)):
            target = dst_dir / path.relative_to(src_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            n += 1
    print(f"copied {n} files to {dst_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
