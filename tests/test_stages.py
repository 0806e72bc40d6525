"""Content keys of the study stages: a changed setting re-runs the stages that read it and those
downstream, and nothing else."""

import pytest

from pplaw_jax.config import StudyConfig, config_to_dict, set_dotted
from pplaw_jax.stages import stale_stages, stage_keys, supersede

BASE = config_to_dict(StudyConfig())


def changed(*overrides, base=BASE, force=()):
    import copy

    new = copy.deepcopy(base)
    for o in overrides:
        set_dotted(new, o)
    return stale_stages(base, new, set(force))


@pytest.mark.parametrize("overrides, stale", [
    ((), []),
    (("final.primary=acc_norm",), []),  # read by the report only, which is rewritten every run
    (("name=other",), []),
    (("fit.bootstrap=50",), ["fit", "select", "final"]),
    (("final.budget=1e5",), ["select", "final"]),
    (("final.seeds=[0]",), ["select", "final"]),
    (("landscape.batch_size=8",), ["landscape", "grid", "fit", "select", "final"]),
    (("data.eval_max_docs=5",), ["data", "grid", "fit", "select", "final"]),  # eval sets: not base, not landscape
    (("scratch.steps=10",), ["base", "landscape", "grid", "fit", "select", "final"]),
    (("train.lr=0.01",), ["grid", "fit", "select", "final"]),
    (("seed=1",), ["data", "base", "landscape", "grid", "fit", "select", "final"]),
])
def test_a_change_reaches_the_stages_that_read_it(overrides, stale):
    assert changed(*overrides) == stale


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
