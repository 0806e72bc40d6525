"""The typed configuration: one class per stage behind both the study YAML and the flags."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from pplaw_jax import config as C
from pplaw_jax.cli import build_parser
from pplaw_jax.errors import PplawError

# subcommand argv (its required arguments) -> the config class behind its flags
COMMANDS = {
    ("score", "--model", "m", "--data", "d", "--out", "o"): C.ScoreConfig,
    ("train", "--model", "m", "--data", "d", "--out", "o"): C.TrainConfig,
    ("fit", "--runs", "r.csv", "--out", "o"): C.FitConfig,
    ("select", "--landscape", "l", "--out", "o"): C.SelectConfig,
    ("select", "design", "--landscape", "l", "--out", "o"): C.DesignConfig,
    ("select", "windows", "--landscape", "l", "--out", "o"): C.WindowsConfig,
    ("propose", "--fit", "f", "--landscape", "l", "--tokens", "1e5", "--out", "o"): C.ProposeConfig,
    ("eval", "--model", "m", "--tasks", "t.jsonl"): C.EvalConfig,
}


def settings_of(argv, cls):
    args = build_parser(list(argv))[0].parse_args(list(argv))
    C.check_settings(args)
    found = [v for v in vars(args).values() if isinstance(v, cls)]
    assert len(found) == 1, vars(args)
    return found[0]


@pytest.mark.parametrize("argv, cls", COMMANDS.items(), ids=lambda x: " ".join(x[:2]) if isinstance(x, tuple) else "")
def test_flags_and_study_share_one_default(argv, cls):
    """No flag given: exactly the class's defaults, which are also the study's section defaults."""
    assert settings_of(argv, cls) == cls()
    study = C.StudyConfig()
    sections = {
        C.ScoreConfig: study.landscape,
        C.TrainConfig: study.train,
        C.FitConfig: study.fit,
        C.DesignConfig: study.grid.design,
        C.WindowsConfig: study.grid.windows,
        C.ProposeConfig: study.grid.propose,
        C.SelectConfig: study.final.select,
        C.EvalConfig: study.eval,
    }
    assert sections[cls] == cls()


def _changed(cfg):
    """Every field of `cfg` moved off its default (a valid value of its type)."""
    values = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        allowed = C._literal_values(C.typing.get_type_hints(type(cfg))[f.name])
        if allowed is not None and not isinstance(v, list):
            values[f.name] = next(a for a in allowed if a != v)
        elif isinstance(v, bool):
            values[f.name] = not v
        elif f.name == "mesh":
            values[f.name] = "data=-1,fsdp=2,tensor=1"
        elif f.name == "prior":
            values[f.name] = ["coef_scale=1.5", "noise_scale=0.2"]
        elif f.name == "windows":
            values[f.name] = ["0-0.5", "0.5-1"]
        elif isinstance(v, list):
            values[f.name] = [x * 2 for x in v]
        elif isinstance(v, float) or f.name in ("tokens_ref", "max_boundary_fraction", "trust_margin"):
            values[f.name] = (
                0.5
                if f.name
                in (
                    "level",
                    "target_accept",
                    "min_lr_ratio",
                    "max_boundary_fraction",
                    "stop_probability",
                    "trust_margin",
                )
                else 0.1
                if f.name == "outlier_share"
                else (v or 1.0) * 2
            )
        else:
            values[f.name] = (v or 1) * 2 + (2 if f.name == "seq_len" else 0)
    return type(cfg)(**values)


@pytest.mark.parametrize("argv, cls", COMMANDS.items(), ids=lambda x: " ".join(x[:2]) if isinstance(x, tuple) else "")
def test_settings_argv_round_trips(argv, cls):
    """What `pplaw run` writes to commands.log parses back to the same settings, field for field."""
    cfg = _changed(cls())
    assert all(getattr(cfg, f.name) != getattr(cls(), f.name) for f in dataclasses.fields(cls))
    assert settings_of((*argv, *C.settings_argv(cfg)), cls) == cfg


def test_study_files_inherit_section_by_section(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        yaml.safe_dump({"name": "parent", "train": {"lr": 1e-3}, "landscape": {"seq_len": 256}, "fit": {"warmup": 300}})
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(
        yaml.safe_dump({"base": "../parent.yaml", "name": "child", "train": {"lr": 2e-3}})
    )
    cfg = C.load_config(tmp_path / "sub" / "child.yaml", ["fit.samples=50"])
    assert (cfg.name, cfg.train.lr, cfg.train.seq_len, cfg.fit.warmup, cfg.fit.samples) == ("child", 2e-3, 256, 300, 50)
    assert cfg.train.batch_size == C.TrainConfig().batch_size
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(PplawError, match="loops back"):
        C.load_config(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(PplawError, match="nowhere.yaml not found"):
        C.load_config(tmp_path / "orphan.yaml")


def test_train_seq_len_is_the_landscapes():
    """One fact, one key: train.seq_len follows landscape.seq_len, and a different value is refused
    naming both keys (a selection's chunks exist only under the landscape's seq_len)."""
    assert C.study_from_tree({"landscape": {"seq_len": 128}}).train.seq_len == 128
    assert C.study_from_tree({"landscape": {"seq_len": 128}, "train": {"seq_len": 128}}).train.seq_len == 128
    with pytest.raises(PplawError, match=r"config keys train.seq_len \(256\) and landscape.seq_len \(128\) differ"):
        C.study_from_tree({"landscape": {"seq_len": 128}, "train": {"seq_len": 256}})


def test_derived_keys_follow_their_source_and_the_record_reloads():
    cfg = C.study_from_tree({"fit": {"moments": "logppl"}, "grid": {"design": {"selector": "bands"}}})
    assert cfg.grid.design.moments == cfg.grid.windows.moments == cfg.final.select.moments == "logppl"
    assert cfg.grid.propose.selector == cfg.final.select.selector == "bands"
    assert C.study_from_tree(C.config_to_dict(cfg)) == cfg  # config.yaml of a study loads back


def test_committed_study_configs_load():
    configs = sorted((Path(__file__).parents[1] / "experiments" / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        cfg = C.load_config(path)
        assert cfg.name == path.stem


@pytest.mark.parametrize(
    "argv, message",
    [
        (("fit", "--runs", "r", "--out", "o", "--level", "1"), "--level: 1.0 out of range (must be > 0 and < 1)"),
        (
            ("train", "--model", "m", "--data", "d", "--out", "o", "--keep", "0"),
            "--keep: 0 out of range (must be >= 1)",
        ),
        (
            ("select", "design", "--landscape", "l", "--out", "o", "--budgets", "1e4", "-5"),
            "--budgets: -5.0 out of range (must be > 0)",
        ),
    ],
)
def test_flag_errors_name_the_flag(argv, message):
    args = build_parser(list(argv))[0].parse_args(list(argv))
    with pytest.raises(PplawError, match=message.replace("(", r"\(").replace(")", r"\)")):
        C.check_settings(args)


def test_the_config_choices_are_the_registries():
    """The YAML / flag choices of a selector and a law are the registries' keys, not a second list."""
    import typing

    from pplaw_jax.law.forms import LAWS
    from pplaw_jax.select.selectors import SELECTORS

    assert set(typing.get_args(C.Selector)) == set(SELECTORS)
    assert set(typing.get_args(C.Law)) == set(LAWS) | {C.AUTO}
