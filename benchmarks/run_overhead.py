"""Per-run overhead of a study's CPT runs, an older commit against this checkout (not run by CI).

`pplaw run` trains a study's runs one after another in its one process. Here a worker process per
version (this checkout, or `--old` extracted with `git archive`) does the same with a quickstart
study's logged grid runs: each `pplaw train` line of its `commands.log` under `grid/`, its `--out`
moved to a scratch directory, called in-process (`pplaw_jax.cli.main`, from the study directory,
with a fresh compilation cache, as a new study has), timing each call. The versions
alternate, `--repeats` workers each; a run's time is its best over the repeats.

A run's overhead is its wall time less the seconds its training steps and evaluations took, as
this checkout's `eval.json` "seconds" record them (`train` + `eval`, best over the repeats). The old
version trains the same batches on the same model, so its overhead is taken against the same
figures. The first run of a worker also pays the process's imports and first compilations; it is
reported apart.

    pplaw run experiments/configs/quickstart.yaml   # the study (`--until grid` is enough)
    PYTHONPATH=. python benchmarks/run_overhead.py --study runs/quickstart [--old fdf14a6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def grid_runs(study: Path) -> list[list[str]]:
    """The argv (after `pplaw`) of every grid `pplaw train` line in the study's commands.log."""
    runs = []
    for line in (study / "commands.log").read_text().splitlines():
        argv = shlex.split(line.rpartition("  # ")[0])
        if argv[:2] == ["pplaw", "train"] and argv[argv.index("--out") + 1].startswith("grid/"):
            runs.append(argv[1:])
    if not runs:
        raise SystemExit(f"no grid `pplaw train` lines in {study / 'commands.log'}")
    return runs


def worker(study: Path, scratch: Path, runs: list[list[str]], out: Path) -> None:
    """Train `runs` in this process into `scratch`, as `pplaw run` does; write each call's wall time."""
    from pplaw_jax.cli import main
    from pplaw_jax.distributed import configure_compilation_cache

    configure_compilation_cache(scratch / ".jax_cache")
    os.chdir(study)
    walls = []
    for argv in runs:
        argv = list(argv)
        i = argv.index("--out") + 1
        argv[i] = str(scratch / argv[i].replace("/", "_"))
        t0 = time.perf_counter()
        if main(argv) != 0:
            raise SystemExit(f"pplaw {shlex.join(argv)} failed")
        walls.append(time.perf_counter() - t0)
    out.write_text(json.dumps(walls))


def run_worker(tree: Path, study: Path, scratch: Path, out: Path) -> list[float]:
    # a fresh compilation cache for each worker, named by the variable both versions read first
    # (the old version's `pplaw train` would otherwise switch to the warm per-user cache)
    env = dict(os.environ, PYTHONPATH=str(tree), PPLAW_COMPILATION_CACHE=str(scratch / ".jax_cache"))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--study", str(study), "--scratch", str(scratch)]
    proc = subprocess.run([*cmd, "--worker-out", str(out)], env=env, cwd=str(tree), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker ({tree}) exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True, help="a quickstart study directory (its grid stage done)")
    ap.add_argument("--old", default="fdf14a6", help="the commit to compare with (default: before pooling)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/run_overhead.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    study = Path(args.study).resolve()
    runs = grid_runs(study)
    if args.worker:
        return worker(study, Path(args.scratch), runs, Path(args.worker_out))
    from benchmarks.fit_speed_compare import extract  # not in a worker, which runs the old tree

    names = [argv[argv.index("--out") + 1] for argv in runs]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"old": extract(args.old, Path(tmp) / "old"), "new": REPO}
        walls: dict[str, list[list[float]]] = {"old": [], "new": []}
        compute: list[list[float]] = []  # per repeat, per run: the new version's train + eval seconds
        for i in range(args.repeats):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                scratch = Path(tmp) / f"{name}{i}"
                walls[name].append(run_worker(trees[name], study, scratch, Path(tmp) / f"{name}{i}.json"))
                print(f"{name} worker {i}: {sum(walls[name][-1]):.1f} s for {len(runs)} runs", file=sys.stderr)
                if name == "new":
                    seconds = [
                        json.loads((scratch / n.replace("/", "_") / "eval.json").read_text())["seconds"] for n in names
                    ]
                    compute.append([s["train"] + s["eval"] for s in seconds])
    best = {name: [min(r) for r in zip(*w)] for name, w in walls.items()}
    work = [min(r) for r in zip(*compute)]
    overhead = {name: [b - c for b, c in zip(best[name], work)] for name in best}
    result = {
        "what": __doc__.splitlines()[0],
        "command": "PYTHONPATH=. python benchmarks/run_overhead.py " + shlex.join(sys.argv[1:]),
        "study": str(study),
        "old": args.old,
        "new": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "runs": names,
        "train_plus_eval_s": [round(x, 3) for x in work],
        "wall_s": {name: [round(x, 3) for x in b] for name, b in best.items()},
        "overhead_s": {name: [round(x, 3) for x in o] for name, o in overhead.items()},
        "summary": {
            name: {
                "first_run_overhead_s": round(o[0], 2),
                "later_runs_overhead_s_mean": round(statistics.mean(o[1:]), 2),
                "later_runs_overhead_s_max": round(max(o[1:]), 2),
                "total_wall_s": round(sum(best[name]), 1),
            }
            for name, o in overhead.items()
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
