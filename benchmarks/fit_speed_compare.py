"""`pplaw fit` wall time, an older commit against this checkout, on one runs table (not run by CI).

Each version runs in its own process (`python -m pplaw_jax.cli fit ...` with PYTHONPATH set to
that version's tree, extracted with `git archive`), the two alternated, best of `--repeats`; the
same flags for both. Default: the committed cpu_tiny runs table (39 runs) and the point fit with
its 200-resample group bootstrap and the rivals' held-out comparison (`--method point`), against
the commit before the batched refits (f489517). The point estimates of both versions are recorded
beside the times (the same optimisation problem: they should agree).

    PYTHONPATH=. python benchmarks/fit_speed_compare.py [--old f489517] [--repeats 2] [-- FIT FLAGS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FLAGS = ["--method", "point", "--law", "ppl", "--moments", "logppl", "--bootstrap", "200", "--no-plots"]


def extract(rev: str, into: Path) -> Path:
    """The tree of `rev` as files under `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def unique_run_ids(src: Path, dst: Path) -> Path:
    """`src` with each random control named `control<round>`, as `pplaw runs` names them today
    (tables written before that gave every control the run_id `random`, which `pplaw fit` now
    refuses as a duplicated run)."""
    import pandas as pd

    table = pd.read_csv(src, dtype={"run_id": str, "group": str})
    repeated = table["run_id"].duplicated(keep=False)
    table.loc[repeated, "run_id"] = "control" + table.loc[repeated, "round"].astype(str)
    table.to_csv(dst, index=False)
    return dst


def timed_fit(tree: Path, runs: Path, out: Path, flags: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), PPLAW_COMPILATION_CACHE="off")
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pplaw_jax.cli", "fit", "--runs", str(runs), "--out", str(out), *flags],
        env=env,
        check=True,
        capture_output=True,
        cwd=str(tree),
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="f489517")
    ap.add_argument("--runs", default=str(REPO / "experiments/results/cpu_tiny/grid/runs.csv"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/fit_speed_compare.json"))
    ap.add_argument("flags", nargs="*", help="pplaw fit flags (default: %(default)s)", default=DEFAULT_FLAGS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = unique_run_ids(Path(args.runs), Path(tmp) / "runs.csv")
        trees = {"old": extract(args.old, Path(tmp) / "old"), "new": REPO}
        times: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(args.repeats):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                times[name].append(timed_fit(trees[name], runs, Path(tmp) / f"{name}{i}", args.flags))
                print(f"{name} run {i}: {times[name][-1]:.1f} s", file=sys.stderr)
        fits = {name: json.loads((Path(tmp) / f"{name}0" / "fit.json").read_text()) for name in times}
    point = {name: fit.get("point", {}).get("params") for name, fit in fits.items()}
    result = {
        "runs_table": os.path.relpath(Path(args.runs).resolve(), REPO) + " (random controls renamed control<round>)",
        "old": args.old,
        "flags": args.flags,
        "repeats": args.repeats,
        "seconds": times,
        "best_s": {k: min(v) for k, v in times.items()},
        "speedup_best": min(times["old"]) / min(times["new"]),
        "point_params": point,
        "command": "PYTHONPATH=. python benchmarks/fit_speed_compare.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("best_s", "speedup_best")}))


if __name__ == "__main__":
    main()
