"""Fault injection: every command is SIGKILLed again and again at seeded random moments, then finished.

For each of `pplaw score`, `train`, `select` (DOS towards an explicit target), `select design`,
`fit` (point) and a toy `pplaw run` study:

1. the command runs once, uninterrupted, into ``WORK/out``; that directory is renamed to
   ``WORK/reference`` (every path recorded inside the outputs is therefore the same in both runs);
2. the same command line is started again as a real subprocess into a fresh ``WORK/out``, killed
   with SIGKILL (its whole process group) at a seeded random moment, restarted, killed again, ...
   ``PPLAW_FAULT_KILLS`` times (default 20), and the last restart runs to the end;
3. the final exit code must be 0 and the final tree must equal the reference (see `compare_trees`),
   with no temporary files, staging directories, ``.failed`` markers, lock files, and no duplicated
   or lost landscape/selection rows.

Each test appends a row to ``benchmarks/results/fault_injection.md`` (written when the module
finishes, rows in a fixed order, the pytest command line at the top).

Kill times (`KillSchedule`). Drawn from ``numpy.random.default_rng(PPLAW_FAULT_SEED + k)``, over
the command's own uninterrupted wall time ``T`` measured in step 1:

* commands that redo everything on a restart (`select`, `select design`, `fit`): each restart is
  killed after ``u * 0.9 * T`` seconds, ``u ~ U(0, 1)``, so kills fall anywhere from interpreter
  start-up to the final writes, and nearly all land;
* commands that resume (`score`: done parts, `train`: checkpoints, `run`: finished stages and
  subcommands): a restart only has the remaining work left, so with ``U(0, T)`` only the first two
  or three kills would land. Progress is read from the output directory (done parts, metrics rows,
  distinct commands logged) and mapped onto the reference run's timeline, giving ``R``, the
  expected duration of this restart, and ``S``, the reference time to the first unit of progress
  (start-up: imports, model loading, compilation). A restart is killed at ``u * S`` with
  probability 0.3 (a start-up kill) and otherwise at ``S + u * 2 (R - S) / k`` (``k`` kills left;
  redrawn as ``u' * 0.9 R`` if that is past ``0.9 R``): the remaining work is spread over the
  remaining kills, so kills land throughout the run, including its last writes, and the run ends
  near the last kill. Once every unit is done (only the final writes, or nothing, are left), a
  restart is killed at ``u * 0.9 R``; a restart that finished by itself bounds ``R`` from then on.

When a restart exits by itself before its kill time, the kill did not land (counted apart); a
non-zero exit of any restart is a failure.

What may differ between two runs (found by running every command twice uninterrupted into the
same path and diffing the trees; everything else was byte-identical, including the PNG plots and
report.md):

* JSON timing fields: ``wall_time_s``, ``run_seconds``, ``tokens_per_s``, ``seconds`` (score part
  markers), ``wall_s`` (fit.json's held-out timing), ``created`` (fit.json's timestamp), and
  orbax's ``init_timestamp_nsecs`` / ``commit_timestamp_nsecs``. Only their presence is compared;
  every other value of those files exactly.
* ``metrics.jsonl``: ``tokens_per_s`` per line (same rule, line by line).
* orbax checkpoints (``checkpoints/<step>/state``): chunk files have random names and their number
  varies; a checkpoint is compared by restoring it (every array exact, same tree and dtypes).
* ``.jax_cache/`` (JAX's compilation cache of ``pplaw run``): not an output; not compared.
* TensorBoard event files (``tensorboard/events.out.tfevents.<time>.<host>``): named by wall time,
  one per session; compared as the scalar series TensorBoard shows (purges applied), exactly,
  except the ``train/tokens_per_s`` values.
* ``commands.log`` of ``pplaw run``: timestamps, and a restarted study logs the command it was in
  the middle of again; the commands in order of first appearance must equal the reference's.
* ``report.md``: its "Time and cost" section (wall times from ``commands.log`` and the runs'
  timing fields); the rest of the report byte for byte.

No floating-point tolerance is used: resumed runs are expected to be bit-identical (score parts are
fixed document ranges, training batches are a pure function of ``(seed, step)``), so every number
outside the timing fields is compared with ``==``.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tb_events import tensorboard_scalars

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "fault_injection.md"
KILLS = int(os.environ.get("PPLAW_FAULT_KILLS", "20"))
SEED = int(os.environ.get("PPLAW_FAULT_SEED", "0"))
ORDER = ["score", "train", "select", "select design", "fit", "run"]  # rows of the results table

LAND_MARGIN = 0.9  # kill before this share of the expected duration, so that nearly every kill lands
STARTUP_SHARE = 0.3  # share of resumable-command kills aimed at start-up
POLL_S = 0.05

# JSON fields that differ between two uninterrupted runs (timings, timestamps): presence only
VOLATILE_KEYS = {
    "wall_time_s",
    "run_seconds",
    "tokens_per_s",
    "seconds",
    "wall_s",
    "created",
    "init_timestamp_nsecs",
    "commit_timestamp_nsecs",
}
TOLERANCE = "exact (no float tolerance); timing fields* presence only"
CKPT_NOTE = "; orbax checkpoints by restored arrays, exact; TensorBoard by the series it shows, exact"
LOG_NOTE = "; commands.log without timestamps, re-issued commands collapsed"


# ------------------------------------------------------------------------------------ environment
def child_env() -> dict[str, str]:
    env = {**os.environ}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",  # one CPU device, as the CLI would see
            "JAX_PLATFORMS": "cpu",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def pplaw_cmd(*argv: str) -> list[str]:
    return [sys.executable, "-m", "pplaw_jax.cli", *map(str, argv)]


# ------------------------------------------------------------------------------------ tree rules
def is_stale(rel: str) -> str | None:
    """Why `rel` (a path relative to an output directory) must not be left behind, or None."""
    parts = rel.split("/")
    name = parts[-1]
    if name.endswith(".tmp") or ".tmp." in name:
        return "temporary file"
    if any(".tmp-" in p for p in parts):
        return "staging directory (.NAME.tmp-*)"
    if any("orbax-checkpoint-tmp" in p for p in parts):
        return "unfinished orbax checkpoint"
    if any(re.fullmatch(r"\..+\.old-\d+", p) for p in parts):
        return "replaced export not removed (.NAME.old-PID)"
    if name.endswith(".failed"):
        return ".failed marker"
    if name.startswith(".pplaw-lock-host"):
        return "lock file"
    return None


CKPT_STATE = re.compile(r"(^|/)checkpoints/\d+/state(/|$)")
CKPT_DIR = re.compile(r"^(.*/)?checkpoints/\d+$")


def walk(root: Path) -> tuple[set[str], set[str]]:
    """(files, directories) below `root`, relative, hidden ones included."""
    files, dirs = set(), set()
    for dirpath, dirnames, filenames in os.walk(root):
        # JAX's persistent compilation cache (`pplaw run`'s OUT/.jax_cache) is not a study output
        dirnames[:] = [d for d in dirnames if d != ".jax_cache"]
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs.update(prefix + d for d in dirnames)
        files.update(prefix + f for f in filenames)
    return files, dirs


def json_diff(a, b, where: str = "") -> list[str]:
    """Differences between two parsed JSON values; VOLATILE_KEYS only need to be present in both."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        if set(a) != set(b):
            out.append(f"{where or '/'}: keys {sorted(set(a) ^ set(b))} in one run only")
        for k in sorted(set(a) & set(b)):
            if k in VOLATILE_KEYS:
                continue
            out += json_diff(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diff(x, y, f"{where}[{i}]")]
    if type(a) is not type(b) or a != b:
        return [f"{where}: {a!r} != {b!r}"]
    return []


def compare_json(ref: Path, out: Path) -> list[str]:
    try:
        a, b = json.loads(ref.read_text()), json.loads(out.read_text())
    except ValueError as e:
        return [f"not JSON: {e}"]
    return json_diff(a, b)


def compare_jsonl(ref: Path, out: Path) -> list[str]:
    a, b = ref.read_text().splitlines(), out.read_text().splitlines()
    if len(a) != len(b):
        return [f"{len(a)} lines vs {len(b)}"]
    return [f"line {i + 1}{d}" for i, (x, y) in enumerate(zip(a, b)) for d in json_diff(json.loads(x), json.loads(y))]


LOG_LINE = re.compile(r"^(pplaw .*)  # \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def logged_commands(path: Path) -> list[str]:
    cmds = []
    for line in path.read_text().splitlines():
        m = LOG_LINE.match(line)
        cmds.append(m.group(1) if m else f"<unparsed: {line}>")
    return cmds


def compare_commands_log(ref: Path, out: Path) -> list[str]:
    """The commands in order of first appearance (a restarted study re-issues the one it was in)."""
    want, got = logged_commands(ref), list(dict.fromkeys(logged_commands(out)))
    if want != list(dict.fromkeys(want)):
        return ["the reference log repeats a command"]
    if got != want:
        missing, extra = [c for c in want if c not in got], [c for c in got if c not in want]
        return [f"commands differ: missing {missing[:3]}, extra {extra[:3]}, or order differs"]
    return []


def without_time_section(report: str) -> str:
    """report.md without its "## Time and cost" section (up to the next section or the end)."""
    return re.sub(r"^## Time and cost\n.*?(?=^## |\Z)", "", report, flags=re.M | re.S)


def compare_report(ref: Path, out: Path) -> list[str]:
    same = without_time_section(ref.read_text()) == without_time_section(out.read_text())
    return [] if same else ["bytes differ outside the time section"]


def rule_for(rel: str) -> Callable[[Path, Path], list[str]]:
    name = rel.rsplit("/", 1)[-1]
    if rel == "commands.log":
        return compare_commands_log
    if rel == "report.md":
        return compare_report
    if name == "_CHECKPOINT_METADATA" or re.search(r"checkpoints/\d+/meta/metadata$", rel):
        return compare_json
    if name.endswith((".json", ".done")):
        return compare_json
    if name.endswith(".jsonl") and name.startswith("metrics"):
        return compare_jsonl
    return lambda a, b: [] if a.read_bytes() == b.read_bytes() else ["bytes differ"]


def restore_checkpoint(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import orbax.checkpoint as ocp

        return ocp.PyTreeCheckpointer().restore(str(path))


def compare_checkpoint(ref: Path, out: Path) -> list[str]:
    import jax

    a, b = restore_checkpoint(ref), restore_checkpoint(out)
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    if ta != tb:
        return ["restored state has another tree structure"]
    bad = []
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
            bad.append(f"array {jax.tree_util.keystr(path)} differs")
    return bad[:5]


def row_multiset(files: list[Path]) -> collections.Counter:
    rows = collections.Counter()
    for f in files:
        t = pq.read_table(f, columns=["doc_id", "chunk"])
        rows.update(zip(t.column("doc_id").to_pylist(), t.column("chunk").to_pylist()))
    return rows


def compare_rows(ref: Path, out: Path) -> list[str]:
    """Landscape rows (every parquet under each parts/, done or not) and selection rows: the
    (doc_id, chunk) multisets must be equal and free of duplicates."""
    problems = []
    groups = {}
    for root in (ref, out):
        for parts in sorted(root.rglob("parts")):
            if parts.is_dir():
                groups.setdefault(parts.relative_to(root).as_posix(), {})[root] = sorted(parts.glob("*.parquet"))
        for sel in sorted(root.rglob("selection.parquet")):
            groups.setdefault(sel.relative_to(root).as_posix(), {})[root] = [sel]
    for rel, by_root in sorted(groups.items()):
        try:
            want, got = row_multiset(by_root.get(ref, [])), row_multiset(by_root.get(out, []))
        except Exception as e:  # noqa: BLE001 - a torn or corrupt parquet file is a finding, not a crash
            problems.append(f"{rel}: unreadable rows ({type(e).__name__}: {str(e).splitlines()[0]})")
            continue
        dup = sorted(k for k, n in got.items() if n > 1)
        if dup:
            problems.append(f"{rel}: duplicated rows {dup[:3]} ({len(dup)} in all)")
        if want != got:
            lost, extra = sorted(want - got), sorted(got - want)
            problems.append(f"{rel}: rows lost {lost[:3]} ({len(lost)}), rows extra {extra[:3]} ({len(extra)})")
    return problems


def compare_trees(ref: Path, out: Path) -> list[str]:
    """Everything that makes `out` not the uninterrupted run's `ref`; empty when they match."""
    problems = []
    ref_files, ref_dirs = walk(ref)
    out_files, out_dirs = walk(out)
    for rel in sorted(out_files | out_dirs):
        why = is_stale(rel)
        if why:
            problems.append(f"stale {why}: {rel}")
    for rel in sorted(ref_files | ref_dirs):
        if is_stale(rel):
            problems.append(f"the reference itself holds {rel}")

    def comparable(rels: set[str]) -> set[str]:
        return {r for r in rels if not CKPT_STATE.search(r) and not TB_EVENTS.search(r) and not is_stale(r)}

    for kind, a, b in (("file", ref_files, out_files), ("directory", ref_dirs, out_dirs)):
        a, b = comparable(a), comparable(b)
        problems += [f"{kind} missing after the kills: {r}" for r in sorted(a - b)]
        problems += [f"{kind} not in the uninterrupted run: {r}" for r in sorted(b - a)]
    for rel in sorted(comparable(ref_files) & comparable(out_files)):
        if (ref / rel).read_bytes() == (out / rel).read_bytes():
            continue
        problems += [f"{rel}: {d}" for d in rule_for(rel)(ref / rel, out / rel)[:5]]
    for rel in sorted(r for r in ref_dirs & out_dirs if CKPT_DIR.match(r)):
        if (ref / rel / "state").is_dir():
            problems += [f"{rel}: {d}" for d in compare_checkpoint(ref / rel / "state", out / rel / "state")]
    for rel in sorted(r for r in ref_dirs & out_dirs if r == "tensorboard" or r.endswith("/tensorboard")):
        problems += [f"{rel}: {d}" for d in compare_tensorboard(ref / rel, out / rel)]
    problems += compare_rows(ref, out)
    return problems


TB_EVENTS = re.compile(r"(^|/)tensorboard/events\.out\.tfevents\.")


def compare_tensorboard(ref: Path, out: Path) -> list[str]:
    """Event files are named by wall time and a resumed run writes one per session: the series
    TensorBoard shows are compared instead, exactly, except the timing tag ``train/tokens_per_s``
    (its steps only)."""
    a, b = tensorboard_scalars(ref), tensorboard_scalars(out)
    if sorted(a) != sorted(b):
        return [f"tags {sorted(a)} != {sorted(b)}"]
    problems = []
    for tag in sorted(a):
        if tag == "train/tokens_per_s":
            same = [s for s, _ in a[tag]] == [s for s, _ in b[tag]]
        else:
            same = a[tag] == b[tag]
        if not same:
            problems.append(f"series {tag} differs")
    return problems


# ------------------------------------------------------------------------------------ progress
def count_done_parts(out: Path) -> int:
    return len(list((out / "parts").glob("host*-part*.done")))


def count_metric_rows(out: Path) -> int:
    try:
        return len((out / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def count_commands(out: Path) -> int:
    try:
        return len(set(logged_commands(out / "commands.log")))
    except OSError:
        return 0


# ------------------------------------------------------------------------------------ the chain
@dataclass
class Command:
    name: str
    argv: list[str]  # the full command line
    out: Path  # the output directory (the same path for the reference and the killed runs)
    progress: Callable[[Path], int] | None = None  # units of work done so far; None: not resumable
    tolerance: str = TOLERANCE


@dataclass
class Outcome:
    command: str
    attempted: int = 0
    landed: int = 0
    landed_startup: int = 0  # landed before the reference's first output / first unit of work
    restarts: int = 0
    not_landed: list[str] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    ref_wall_s: float = 0.0
    chain_wall_s: float = 0.0
    startup_s: float = 0.0
    identical: bool = False
    tolerance: str = ""
    problems: list[str] = field(default_factory=list)


OUTCOMES: dict[str, Outcome] = {}


def run_reference(cmd: Command, log: Path) -> tuple[float, float, list[tuple[float, int]]]:
    """Run uninterrupted; returns (wall time, time to the first output, progress timeline)."""
    timeline, first_output = [], None
    with open(log, "ab") as f:
        f.write(f"\n### reference: {shlex.join(cmd.argv)}\n".encode())
        f.flush()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd.argv, stdout=f, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
        while proc.poll() is None:
            now = time.monotonic() - t0
            if (
                first_output is None
                and cmd.out.exists()
                and any(not p.name.startswith(".pplaw-lock") for p in cmd.out.iterdir())
            ):
                first_output = now
            if cmd.progress is not None:
                timeline.append((now, cmd.progress(cmd.out)))
            time.sleep(POLL_S)
        wall = time.monotonic() - t0
    assert proc.returncode == 0, f"the uninterrupted {cmd.name} failed:\n{log.read_text()[-3000:]}"
    if cmd.progress is not None:
        timeline.append((wall, cmd.progress(cmd.out)))
    return wall, first_output if first_output is not None else wall, timeline


class KillSchedule:
    """Seeded kill delays (see the module docstring)."""

    def __init__(
        self, rng: np.random.Generator, wall: float, first_output: float, timeline: list[tuple[float, int]] | None
    ):
        self.rng, self.wall = rng, wall
        self.timeline = timeline
        if timeline:
            self.total = timeline[-1][1]
            self.startup = next((t for t, p in timeline if p > 0), wall)
        else:
            self.total, self.startup = None, first_output
        self.cap = None  # after a restart finished by itself: its duration bounds later restarts

    def _reached(self, units: int) -> float:
        """Reference time at which `units` of progress had been made."""
        return next((t for t, p in self.timeline if p >= units), self.wall)

    def delay(self, units: int | None, kills_left: int) -> float:
        u = self.rng.uniform()
        if self.total is None:  # redoes everything: anywhere in its own wall time
            horizon = self.wall
            if self.cap is not None:
                horizon = min(horizon, self.cap)
            return u * LAND_MARGIN * horizon
        aim_startup = self.rng.uniform() < STARTUP_SHARE
        s = self.startup
        remaining = s + max(self.wall - max(self._reached(units) if units else s, s), 0.0)
        if self.cap is not None:
            remaining = min(remaining, self.cap)
            s = min(s, self.cap)
        if units >= self.total or remaining <= s:  # only start-up and the last writes are left (or nothing)
            return u * LAND_MARGIN * remaining
        if aim_startup:
            return u * s
        d = s + u * 2.0 * (remaining - s) / max(kills_left, 1)
        return d if d < LAND_MARGIN * remaining else self.rng.uniform() * LAND_MARGIN * remaining


def kill_restart_chain(cmd: Command, tmp: Path, kills: int = KILLS) -> Outcome:
    """Reference run, then `kills` SIGKILLs of restarts, then a restart to completion."""
    log = tmp / f"{cmd.name.replace(' ', '_')}.log"
    outcome = Outcome(cmd.name, tolerance=cmd.tolerance)
    OUTCOMES[cmd.name] = outcome
    assert not cmd.out.exists()
    wall, first_output, timeline = run_reference(cmd, log)
    reference = cmd.out.with_name("reference")
    cmd.out.rename(reference)
    outcome.ref_wall_s = wall
    rng = np.random.default_rng(SEED + ORDER.index(cmd.name))
    schedule = KillSchedule(rng, wall, first_output, timeline if cmd.progress else None)
    outcome.startup_s = schedule.startup

    t_chain = time.monotonic()
    with open(log, "ab") as f:
        for i in range(kills):
            units = cmd.progress(cmd.out) if cmd.progress and cmd.out.exists() else 0
            d = schedule.delay(units if cmd.progress else None, kills - i)
            f.write(f"\n### attempt {i + 1}/{kills}: kill after {d:.3f} s (progress {units})\n".encode())
            f.flush()
            outcome.attempted += 1
            if i:
                outcome.restarts += 1
            t0 = time.monotonic()
            proc = subprocess.Popen(
                cmd.argv, stdout=f, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True
            )
            try:
                rc = proc.wait(timeout=d)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the process and anything it started
                rc = proc.wait()
                if rc == -signal.SIGKILL:
                    outcome.landed += 1
                    outcome.delays.append(d)
                    outcome.landed_startup += d < schedule.startup
                    continue
            ran = time.monotonic() - t0
            outcome.not_landed.append(f"attempt {i + 1}: exited {rc} after {ran:.2f} s, before its kill at {d:.2f} s")
            if rc != 0:
                f.flush()
                outcome.problems.append(
                    f"restart {i + 1} (after {outcome.landed} landed kills) exited {rc}: {log.read_text()[-800:]}"
                )
            else:
                schedule.cap = ran if schedule.cap is None else min(schedule.cap, ran)
        f.write(b"\n### final restart, to completion\n")
        f.flush()
        outcome.restarts += 1
        proc = subprocess.Popen(cmd.argv, stdout=f, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
        try:
            rc = proc.wait(timeout=max(600.0, 5 * wall))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    outcome.chain_wall_s = time.monotonic() - t_chain
    if rc != 0:
        outcome.problems.append(f"final restart exited {rc}:\n{log.read_text()[-3000:]}")
    else:
        outcome.problems += compare_trees(reference, cmd.out)
    outcome.identical = rc == 0 and not any(p for p in outcome.problems)
    return outcome


def check(outcome: Outcome) -> None:
    assert not outcome.problems, f"{outcome.command}: " + "\n".join(outcome.problems[:40])
    assert outcome.landed > 0.5 * outcome.attempted, (  # the schedule's own sanity: most kills must land
        f"only {outcome.landed} of {outcome.attempted} kills landed: {outcome.not_landed}"
    )


# ------------------------------------------------------------------------------------ report
def pytest_command_line(config) -> str:
    env = " ".join(
        f"{k}={os.environ[k]}" for k in ("PPLAW_FAULT_KILLS", "PPLAW_FAULT_SEED", "PYTHONPATH") if k in os.environ
    )
    exe = "pytest" if Path(sys.argv[0]).name == "pytest" else "python -m pytest"
    args = shlex.join(config.invocation_params.args)
    return " ".join(x for x in (env, exe, args) if x)


def write_report(config) -> None:
    if not OUTCOMES:
        return
    lines = [
        "# Fault injection: SIGKILL at seeded random times, restart, compare with an uninterrupted run",
        "",
        "Produced by (in the repository root, with the venv active):",
        "",
        f"    {pytest_command_line(config)}",
        "",
        f"Kills per command: {KILLS} (`PPLAW_FAULT_KILLS`), seed {SEED} (`PPLAW_FAULT_SEED`), "
        f"{os.cpu_count()} CPU cores. Method, kill-time schedule and comparison rules: "
        "`tests/test_fault_injection.py`. *Kills landed*: the process was still running when "
        "SIGKILL reached it. *Restarts*: starts after the first one, the final run to completion "
        "included. *Wall time*: the uninterrupted run, and the whole kill/restart chain including "
        "the final restart.",
        "",
        "| command | kills attempted | kills landed (early / late) | restarts | identical outcome | "
        "tolerance used | wall time uninterrupted (s) | wall time kill chain (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ORDER:
        o = OUTCOMES.get(name)
        if o is None:
            continue
        lines.append(
            f"| `pplaw {name}` | {o.attempted} | {o.landed} ({o.landed_startup} / "
            f"{o.landed - o.landed_startup}) | {o.restarts} | {'yes' if o.identical else 'no'} | "
            f"{o.tolerance} | {o.ref_wall_s:.1f} | {o.chain_wall_s:.1f} |"
        )
    lines += [
        "",
        "*Early*: before the reference run's first unit of progress (score: a done part; train: a "
        "metrics row; run: a logged subcommand) or, for the commands that redo everything on a restart "
        "(select, select design, fit), before its first output file; *late*: after it. "
        "*Timing fields: JSON keys "
        + ", ".join(f"`{k}`" for k in sorted(VOLATILE_KEYS))
        + " (in `metrics.jsonl` line by line), which differ between two uninterrupted runs; only their "
        "presence is compared. Every other byte or value is compared exactly.",
    ]
    lines += ["", "Kill delays of the landed kills (seconds after the restart began) and anything else noted:", ""]
    for name in ORDER:
        o = OUTCOMES.get(name)
        if o is None:
            continue
        d = np.asarray(o.delays) if o.delays else np.zeros(1)
        lines.append(
            f"- `pplaw {name}`: reference time to first progress/output {o.startup_s:.1f} s; delays "
            f"min {d.min():.2f}, median {np.median(d):.2f}, max {d.max():.2f} s"
            + (f"; not landed: {'; '.join(o.not_landed)}" if o.not_landed else "")
        )
        for p in o.problems[:10]:
            lines.append(f"  - PROBLEM: {p.splitlines()[0]}")
    missing = [n for n in ORDER if n not in OUTCOMES]
    if missing:
        lines += ["", "Not run in this session: " + ", ".join(f"`pplaw {n}`" for n in missing) + "."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module", autouse=True)
def fault_report(request):
    yield
    write_report(request.config)


# ------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny HF Llama and corpora, a synthetic landscape and synthetic runs.csv."""
    from tiny_hf import WORDS, save_tiny_llama

    from pplaw_jax.fit.runs_table import write_runs_table
    from pplaw_jax.law.synthetic import synthetic_runs
    from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape

    root = tmp_path_factory.mktemp("fault_inputs")
    save_tiny_llama(root / "model", seed=0)
    rng = np.random.default_rng(0)
    for name, n, longest in (("corpus", 400, 120), ("test", 6, 60)):
        with open(root / f"{name}.jsonl", "w") as f:
            for i in range(n):
                words = rng.choice(WORDS, size=int(rng.integers(0 if name == "corpus" else 5, longest)))
                f.write(json.dumps({"id": f"{name}{i:03d}", "text": " ".join(words)}) + "\n")
    write_landscape(root / "landscape", synthetic_landscape(3000, seed=11), rows_per_part=1000)
    write_runs_table(root / "runs.csv", synthetic_runs(n=40, noise=0.01, seed=11).drop(columns="loss_true"))
    return root


# ------------------------------------------------------------------------------------ tests
def test_score_survives_repeated_kill_9(inputs, tmp_path):
    out = tmp_path / "out"
    cmd = Command(
        "score",
        pplaw_cmd(
            "score",
            "--model",
            inputs / "model",
            "--data",
            inputs / "corpus.jsonl",
            "--out",
            out,
            "--seq-len",
            "24",
            "--batch-size",
            "8",
            "--docs-per-part",
            "8",
        ),
        out,
        progress=count_done_parts,
    )
    check(kill_restart_chain(cmd, tmp_path))


def test_train_survives_repeated_kill_9(inputs, tmp_path):
    out = tmp_path / "out"
    cmd = Command(
        "train",
        pplaw_cmd(
            "train",
            "--model",
            inputs / "model",
            "--data",
            inputs / "corpus.jsonl",
            "--out",
            out,
            "--seq-len",
            "24",
            "--batch-size",
            "8",
            "--lr",
            "3e-3",
            "--steps",
            "30",
            "--save-every",
            "3",
            "--eval-data",
            inputs / "test.jsonl",
            "--eval-every",
            "10",
        ),
        out,
        progress=count_metric_rows,
        tolerance=TOLERANCE + CKPT_NOTE,
    )
    check(kill_restart_chain(cmd, tmp_path))


def test_select_dos_survives_repeated_kill_9(inputs, tmp_path):
    out = tmp_path / "out"
    cmd = Command(
        "select",
        pplaw_cmd(
            "select",
            "--landscape",
            inputs / "landscape",
            "--tokens",
            "3e5",
            "--out",
            out,
            "--method",
            "dos",
            "--target-mu",
            "25",
            "--target-sigma",
            "6",
            "--seed",
            "3",
        ),
        out,
    )
    check(kill_restart_chain(cmd, tmp_path))


def test_select_design_survives_repeated_kill_9(inputs, tmp_path):
    out = tmp_path / "out"
    cmd = Command(
        "select design",
        pplaw_cmd(
            "select",
            "design",
            "--landscape",
            inputs / "landscape",
            "--out",
            out,
            "--n",
            "6",
            "--budgets",
            "2e4",
            "1e5",
            "4e5",
            "--centre",
            "2",
        ),
        out,
    )
    check(kill_restart_chain(cmd, tmp_path))


def test_fit_survives_repeated_kill_9(inputs, tmp_path):
    out = tmp_path / "out"
    cmd = Command(
        "fit",
        pplaw_cmd(
            "fit",
            "--moments",
            "ppl",
            "--runs",
            inputs / "runs.csv",
            "--out",
            out,
            "--method",
            "point",
            "--bootstrap",
            "40",
        ),
        out,
    )
    check(kill_restart_chain(cmd, tmp_path))


def test_run_study_survives_repeated_kill_9(tmp_path):
    """The toy study of test_pipeline.py, reduced as its own kill test reduces it (point fit, one
    final method and seed), run through every stage."""
    from test_pipeline import TOY, write_config

    out = tmp_path / "out"
    tree = {
        **TOY,
        "out_dir": str(out),
        "fit": {**TOY["fit"], "method": "point", "plots": True},  # the figures are outputs too
        "final": {**TOY["final"], "methods": ["random"], "seeds": [0]},
    }
    config = write_config(tmp_path / "toy.yaml", tree)
    cmd = Command(
        "run", pplaw_cmd("run", config), out, progress=count_commands, tolerance=TOLERANCE + CKPT_NOTE + LOG_NOTE
    )
    check(kill_restart_chain(cmd, tmp_path))
