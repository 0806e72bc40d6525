"""Where a study's time goes: wall time per stage, CPT runs, tokens trained, the share spent training.

Read from what a study already writes: `OUT/commands.log` stamps each command with its start time
(a command's wall time is the time to the next command's start; the last, `pplaw report`, counts
as zero), and every training run's `eval.json` holds its `trained_tokens`, `wall_time_s` (the
training loop: compilation, steps and evaluations) and `seconds` (the run by kind of work:
`timing.Clock`), from which the report's time table splits the study by kind of work. A study
resumed after a stop counts the pause in the command it interrupted. The stage of a command is the
first part of its `--out` (`grid/runs/p03_b1e4` -> grid), else its subcommand (`pplaw report` ->
report).
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from pathlib import Path

from pplaw_jax.paths import as_path
from pplaw_jax.stages import STAGES

LOG_STAMP = "  # "  # commands.log: `pplaw ...  # 2026-12-06 12:58:27`
RUN_GLOBS = (
    "base/pretrain/eval.json",
    "grid/runs/*/eval.json",
    "grid/round*/runs/*/eval.json",
    "final/*/seed*/eval.json",
)


def read_commands_log(path: Path) -> list[tuple[datetime, list[str]]]:
    """(start time, argv) of every command in a study's commands.log, in order."""
    out = []
    for line in path.read_text().splitlines():
        command, sep, stamp = line.rpartition(LOG_STAMP)
        if sep and command.startswith("pplaw "):
            out.append((datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S"), shlex.split(command)))
    return out


def stage_of(argv: list[str]) -> str:
    """The study stage a logged command belongs to (see the module docstring)."""
    if "--out" in argv[:-1]:
        first = Path(argv[argv.index("--out") + 1]).parts[0]
        if first in STAGES:
            return first
    return "report" if argv[1] == "report" else argv[1]


# a training run's `eval.json` "seconds" (`timing.Clock`), in the order the time table lists them
RUN_WORK = (
    ("train", "training steps"),
    ("eval", "evaluation losses"),
    ("compile", "compilation"),
    ("load", "model and data loading, input fingerprints"),
    ("checkpoint", "checkpoints"),
    ("export", "HF export"),
)
# subcommands whose whole wall time is one kind of work in the time table
COMMAND_WORK = (
    ("fit", "law fits (`pplaw fit`)"),
    ("score", "scoring (`pplaw score`)"),
    ("eval", "downstream evaluation (`pplaw eval`)"),
)


def study_costs(out) -> dict:
    """{"wall_s", "stages": {stage: seconds}, "commands": {subcommand: seconds}, "runs", "tokens",
    "train_loop_s", "run_seconds": {kind: seconds}} of a study directory; `run_seconds` sums the
    runs' `eval.json` "seconds" (runs trained before they were recorded have none)."""
    out = as_path(out)
    commands = read_commands_log(out / "commands.log") if (out / "commands.log").exists() else []
    stages: dict[str, float] = {}
    by_command: dict[str, float] = {}
    for (start, argv), (end, _) in zip(commands, commands[1:]):
        seconds = (end - start).total_seconds()
        stages[stage_of(argv)] = stages.get(stage_of(argv), 0.0) + seconds
        by_command[argv[1]] = by_command.get(argv[1], 0.0) + seconds
    runs = [json.loads(p.read_text()) for pattern in RUN_GLOBS for p in sorted(out.glob(pattern))]
    run_seconds: dict[str, float] = {}
    for r in runs:
        for kind, seconds in r.get("seconds", {}).items():
            run_seconds[kind] = run_seconds.get(kind, 0.0) + seconds
    return {
        "wall_s": (commands[-1][0] - commands[0][0]).total_seconds() if commands else 0.0,
        "stages": stages,
        "commands": by_command,
        "runs": len(runs),
        "tokens": int(sum(r.get("trained_tokens", 0) for r in runs)),
        "train_loop_s": float(sum(r.get("wall_time_s", 0.0) for r in runs)),
        "run_seconds": run_seconds,
    }


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def work_rows(costs: dict) -> list[tuple[str, float]]:
    """(kind of work, seconds) for the whole study: the training runs' recorded seconds by kind, their
    commands' remaining wall time (interpreter and argument handling, what no section counts), the
    commands that are one kind of work, and the rest. Empty when the runs recorded no seconds."""
    run_s, by_command = costs["run_seconds"], costs["commands"]
    if not run_s:
        return []
    rows = [(f"training runs: {label}", run_s.get(kind, 0.0)) for kind, label in RUN_WORK]
    counted = sum(s for _, s in rows)
    rows.append(
        ("training runs: start-up and the rest of `pplaw train`", max(by_command.get("train", 0.0) - counted, 0.0))
    )
    rows += [(label, by_command.get(command, 0.0)) for command, label in COMMAND_WORK]
    rows.append(
        (
            "everything else (data, design, selection, tables, report)",
            max(costs["wall_s"] - sum(s for _, s in rows), 0.0),
        )
    )
    return rows


def cost_lines(out) -> list[str]:
    """The report's "Time and cost" section."""
    costs = study_costs(out)
    if not costs["wall_s"]:
        return []
    wall = costs["wall_s"]
    rows = [f"| {stage} | {minutes(s)} | {100 * s / wall:.0f}% |" for stage, s in costs["stages"].items()]
    lines = [
        "## Time and cost",
        "",
        f"{minutes(wall)} of wall time from the first command to the report (from `commands.log`); "
        f"{costs['runs']} training runs (base pretraining, law-fitting and final CPT) trained "
        f"{costs['tokens']:,} tokens in {minutes(costs['train_loop_s'])} "
        f"inside their training loops (compilation, steps, evaluations): "
        f"{100 * costs['train_loop_s'] / wall:.0f}% of the study. The rest is process start-up, model "
        "loading, scoring, fitting, selection and downstream evaluation.",
        "",
        "| stage | wall | share |",
        "|---|---|---|",
        *rows,
        "",
    ]
    work = work_rows(costs)
    if work:
        lines += [
            'By kind of work (the training runs\' own clocks, `eval.json` "seconds"; the other rows from '
            "`commands.log`, whose stamps are whole seconds):",
            "",
            "| work | wall | share |",
            "|---|---|---|",
            *(f"| {label} | {minutes(s)} | {100 * s / wall:.0f}% |" for label, s in work),
            "",
        ]
    return lines
