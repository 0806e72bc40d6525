"""Content keys of the study stages: a changed setting re-runs the stages that read it and those
downstream, and nothing else."""

import pytest

from pplaw_jax.config import StudyConfig, config_to_dict, set_dotted
from pplaw_jax.stages import stage_keys, stale_stages, supersede

BASE = config_to_dict(StudyConfig())


def changed(*overrides, base=BASE, force=()):
    import copy

    new = copy.deepcopy(base)
    for o in overrides:
        set_dotted(new, o)
    return stale_stages(base, new, set(force))


@pytest.mark.parametrize(
    "overrides, stale",
    [
        ((), []),
        (("final.primary=acc_norm",), []),  # read by the report only, which is rewritten every run
        (("name=other",), []),
        (("fit.bootstrap=50",), ["fit", "select", "final"]),
        (("final.budget=1e5",), ["select", "final"]),
        (("final.seeds=[0]",), ["select", "final"]),
        (("landscape.batch_size=8",), ["landscape", "grid", "fit", "select", "final"]),
        # eval sets: not the landscape; the base stage only for a scratch base model (its pretraining
        # is evaluated on the general test set), and with it everything downstream
        (("data.eval_max_docs=5",), ["data", "base", "landscape", "grid", "fit", "select", "final"]),
        (("scratch.steps=10",), ["base", "landscape", "grid", "fit", "select", "final"]),
        (("train.lr=0.01",), ["grid", "fit", "select", "final"]),
        (("seed=1",), ["data", "base", "landscape", "grid", "fit", "select", "final"]),
    ],
)
def test_a_change_reaches_the_stages_that_read_it(overrides, stale):
    assert changed(*overrides) == stale


def test_evaluation_settings_reach_a_checkpoint_base_model_no_further_than_the_runs():
    """With a checkpoint base model (no pretraining to evaluate) a changed evaluation cap re-runs
    the evaluation sets' stage and the runs evaluated on them, not the base model or the landscape."""
    import copy

    ckpt = copy.deepcopy(BASE)
    set_dotted(ckpt, "base_model=ckpt")
    assert changed("data.eval_max_docs=5", base=ckpt) == ["data", "grid", "fit", "select", "final"]


def test_sequential_rounds_make_the_grid_read_the_fit_settings():
    """Rounds fit the law to propose their runs (and train a random control at the final budget)."""
    import copy

    rounds = copy.deepcopy(BASE)
    rounds["grid"]["rounds"] = 2
    assert changed("fit.bootstrap=50", base=rounds) == ["grid", "fit", "select", "final"]
    assert changed("final.budget=1e5", base=rounds) == ["grid", "fit", "select", "final"]


def test_forcing_a_stage_takes_what_depends_on_it():
    assert changed(force={"fit"}) == ["fit", "select", "final"]
    assert changed(force={"base"}) == ["base", "landscape", "grid", "fit", "select", "final"]
    assert stale_stages(None, BASE) == [] and stale_stages(None, BASE, {"select"}) == ["select", "final"]


def test_keys_are_stable_and_supersede_keeps_every_old_output(tmp_path):
    assert stage_keys(BASE) == stage_keys(config_to_dict(StudyConfig()))
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "fit.json").write_text("old")
    first = supersede(tmp_path, "fit", "abc")
    (tmp_path / "fit").mkdir()
    second = supersede(tmp_path, "fit", "abc")
    assert first.name == "fit-abc" and second.name == "fit-abc-2" and (first / "fit.json").read_text() == "old"
    assert not (tmp_path / "fit").exists() and supersede(tmp_path, "fit", "abc") is None


def test_input_content_enters_the_keys_of_the_stages_that_read_it():
    """A changed corpus (its fingerprint) re-runs exactly what a changed setting of it would."""
    with_inputs = {**BASE, "inputs": {"data.domain_train": "aaaa", "data.domain_test": "bbbb", "base_model": None}}
    pool = {**with_inputs, "inputs": {**with_inputs["inputs"], "data.domain_train": "cccc"}}
    assert stale_stages(with_inputs, pool) == ["data", "landscape", "grid", "fit", "select", "final"]
    test = {**with_inputs, "inputs": {**with_inputs["inputs"], "data.domain_test": "dddd"}}
    assert stale_stages(with_inputs, test) == ["data", "final"]  # the grid never reads the test split
    assert stale_stages(with_inputs, dict(with_inputs)) == []


def test_an_edited_corpus_reruns_its_landscape_and_a_touched_one_nothing(tmp_path):
    """`pplaw run --until landscape` twice around an edit of the domain corpus: documents appended,
    the landscape (and the data stage) rerun; the file touched without a change, nothing reruns."""
    import json
    import os

    import yaml
    from tiny_hf import save_tiny_llama

    from pplaw_jax.cli import main

    save_tiny_llama(tmp_path / "model", seed=0)
    words = "the patient was given a dose of the drug and the trial measured the response".split()
    rows = [{"id": f"d{i}", "text": " ".join(words[(i + j) % len(words)] for j in range(70))} for i in range(12)]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    for name, part in (("valid.jsonl", rows[8:10]), ("test.jsonl", rows[8:12])):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    cfg = tmp_path / "study.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "out_dir": str(tmp_path / "study"),
                "base_model": str(tmp_path / "model"),
                "data": {
                    "domain_train": str(pool),
                    "domain_valid": str(tmp_path / "valid.jsonl"),
                    "domain_test": str(tmp_path / "test.jsonl"),
                },
                "landscape": {"seq_len": 32, "batch_size": 8},
            }
        )
    )
    log = tmp_path / "study" / "commands.log"

    def scored():
        return sum(" score " in f" {line} " for line in log.read_text().splitlines())

    assert main(["run", str(cfg), "--until", "landscape"]) == 0 and scored() == 1
    stat = os.stat(pool)
    os.utime(pool, (stat.st_atime + 100, stat.st_mtime + 100))  # touched, not changed
    assert main(["run", str(cfg), "--until", "landscape"]) == 0 and scored() == 1
    with pool.open("a") as f:  # two documents appended
        f.write("".join(json.dumps(r) + "\n" for r in rows[10:12]))
    assert main(["run", str(cfg), "--until", "landscape"]) == 0 and scored() == 2
    summary = json.loads((tmp_path / "study" / "landscape" / "summary.json").read_text())
    assert summary["documents"] == 10
    assert any(p.name.startswith("landscape-") for p in (tmp_path / "study" / "superseded").iterdir())


@pytest.mark.parametrize("key", __import__("pplaw_jax.stages", fromlist=["FINGERPRINTED"]).FINGERPRINTED)
def test_every_input_file_reruns_the_stages_that_read_it(key):
    """For every input file a study names, a change of its content reruns exactly the stages that
    read its setting (and what follows), as a change of the setting itself would."""
    from pplaw_jax.stages import FINGERPRINTED

    before = {**BASE, "inputs": {k: "old" for k in FINGERPRINTED}}
    after = {**before, "inputs": {**before["inputs"], key: "new"}}
    by_content = stale_stages(before, after)
    by_setting = changed(f"{key}=elsewhere")
    assert by_content and by_content == by_setting, key
