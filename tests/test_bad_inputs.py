"""Every subcommand, every kind of bad input: exit code 2, one line that names the file (and line,
column or field), and no output that looks complete.

One row per case: the subcommand x {missing, empty, malformed, non-UTF-8, wrong type, out of range,
unwritable output} where the command takes such an input, plus the wrong-result cases of the
silent-wrong-data issue (repeated ids, a selection without its summary, parts that do not add up).
The commands run in-process (`pplaw_jax.cli.main`); the cases that need a model use one tiny HF
Llama, loaded per case, so the table runs in about a minute.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import yaml

from pplaw_jax.cli import main
from pplaw_jax.config import StudyConfig, config_to_dict
from pplaw_jax.fit.runs_table import write_runs_table
from pplaw_jax.law.synthetic import synthetic_runs
from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape

NON_UTF8 = b"\xff\xfe not text \xc3\x28\n"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # {root} is the shared inputs directory, {out} the case's output path
    message: str  # regex the one error line must match (it names the file, line or field)
    complete: str | None  # file below {out} whose presence would mean "complete" (None: {out} itself)


def _jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


DOC = {"id": "a", "text": "the quick brown fox jumps over a lazy dog"}
TASK = {"question": "q?", "choices": ["yes", "no"], "answer": 0}
INPUTS = {  # name -> bytes, written once into {root}
    "good.jsonl": _jsonl(DOC, {"id": "b", "text": "seven wizards quietly pack boxes"}),
    "empty.jsonl": b"",
    "blank.jsonl": _jsonl({"id": "a", "text": ""}, {"id": "b", "text": ""}),
    "malformed.jsonl": _jsonl(DOC, b'{"id": "b", "text": "unterminated'),
    "nonutf8.jsonl": _jsonl(DOC) + NON_UTF8,
    "wrongtype.jsonl": _jsonl(DOC, {"id": "b", "text": 17}),
    "notobject.jsonl": _jsonl(DOC, [1, 2]),
    "dupids.jsonl": _jsonl(DOC, {"id": "b", "text": "x y"}, {"id": "a", "text": "another document"}),
    "corpus.xml": b"<doc/>",
    "runs_empty.csv": b"",
    "runs_header.csv": b"run_id,mu_ppl,sigma_ppl,tokens,loss\n",
    "runs_nonutf8.csv": b"run_id,mu_ppl,sigma_ppl,tokens,loss\n" + NON_UTF8,
    "runs_text.csv": b"run_id,mu_ppl,sigma_ppl,tokens,loss\nr0,10,2,1e6,2.5\nr1,11,2,1e6,high\n",
    "runs_negative.csv": b"run_id,mu_ppl,sigma_ppl,tokens,loss\nr0,10,2,1e6,2.5\nr1,11,2,-5,2.4\n",
    "runs_nocol.csv": b"run_id,mu_ppl,tokens,loss\nr0,10,1e6,2.5\n",
    "points_empty.csv": b"",
    "points_header.csv": b"mu,sigma,tokens\n",
    "points_nonutf8.csv": b"mu,sigma,tokens\n" + NON_UTF8,
    "points_zero.csv": b"mu,sigma,tokens\n10,2,1e6\n10,0,1e6\n",
    "tasks_good.jsonl": _jsonl(TASK),
    "tasks_empty.jsonl": b"",
    "tasks_malformed.jsonl": _jsonl(TASK, b"{not json"),
    "tasks_nonutf8.jsonl": _jsonl(TASK) + NON_UTF8,
    "tasks_answer.jsonl": _jsonl(TASK, {**TASK, "answer": 5}),
    "tasks_choices.jsonl": _jsonl(TASK, {**TASK, "choices": "yes"}),
    "config_bad.yaml": b"name: x\nout_dir: [unclosed\n",
    "config_nonutf8.yaml": b"name: x\n" + NON_UTF8,
    "a_file": b"not a directory",
}

SCORE = ("score", "--model", "{root}/model", "--seq-len", "32")
SCRATCH_FIELDS = (
    "model_type=llama",
    "hidden_size=64",
    "intermediate_size=128",
    "num_hidden_layers=1",
    "num_attention_heads=2",
    "num_key_value_heads=1",
)
TRAIN = ("train", "--model", "{root}/model", "--seq-len", "32", "--batch-size", "8", "--steps", "1")
SELECT = ("select", "--tokens", "1000", "--method", "random")
PROPOSE = ("propose", "--n", "2", "--tokens", "1000")
EVAL = ("eval", "--model", "{root}/model")
PREDICT = ("predict", "--fit", "{root}/fit_good")
RUN = (
    "run",
    "experiments/configs/quickstart.yaml",
    "data.builtin=null",
    "data.domain_train={root}/good.jsonl",
    "data.domain_test={root}/good.jsonl",
)

CASES = [
    # ------------------------------------------------------------------ score
    Case(
        "score/missing-data",
        (*SCORE, "--data", "{root}/nope.jsonl", "--out", "{out}"),
        r"nope\.jsonl': no such file",
        "summary.json",
    ),
    Case(
        "score/empty-data",
        (*SCORE, "--data", "{root}/empty.jsonl", "--out", "{out}"),
        r"empty\.jsonl: no scorable text",
        "summary.json",
    ),
    Case(
        "score/blank-documents",
        (*SCORE, "--data", "{root}/blank.jsonl", "--out", "{out}"),
        r"blank\.jsonl: no scorable text \(2 documents",
        "summary.json",
    ),
    Case(
        "score/malformed-json",
        (*SCORE, "--data", "{root}/malformed.jsonl", "--out", "{out}"),
        r"malformed\.jsonl:2: malformed JSON \(Invalid control character, column 34\)",
        "summary.json",
    ),
    Case(
        "score/non-utf8",
        (*SCORE, "--data", "{root}/nonutf8.jsonl", "--out", "{out}"),
        r"nonutf8\.jsonl:2: not valid UTF-8",
        "summary.json",
    ),
    Case(
        "score/text-not-a-string",
        (*SCORE, "--data", "{root}/wrongtype.jsonl", "--out", "{out}"),
        r"wrongtype\.jsonl:2: .*'text'",
        "summary.json",
    ),
    Case(
        "score/line-not-an-object",
        (*SCORE, "--data", "{root}/notobject.jsonl", "--out", "{out}"),
        r"notobject\.jsonl:2: expected a JSON object, got list",
        "summary.json",
    ),
    Case(
        "score/repeated-id",
        (*SCORE, "--data", "{root}/dupids.jsonl", "--out", "{out}"),
        r"dupids\.jsonl:3: .*'a'.*dupids\.jsonl:1",
        "summary.json",
    ),
    Case(
        "score/unsupported-format",
        (*SCORE, "--data", "{root}/corpus.xml", "--out", "{out}"),
        r"corpus\.xml' has an unsupported format",
        "summary.json",
    ),
    Case(
        "score/missing-model",
        ("score", "--model", "{root}/nope_model", "--data", "{root}/good.jsonl", "--out", "{out}"),
        r"nope_model",
        "summary.json",
    ),
    Case(
        "score/batch-size-0",
        (*SCORE, "--data", "{root}/good.jsonl", "--batch-size", "0", "--out", "{out}"),
        r"--batch-size: 0 out of range \(must be >= 1\)",
        "summary.json",
    ),
    Case(
        "score/seq-len-too-long",
        (*SCORE, "--data", "{root}/good.jsonl", "--seq-len", "4096", "--out", "{out}"),
        r"--seq-len 4096 exceeds the model's max_position_embeddings 128",
        "summary.json",
    ),
    Case(
        "score/mesh-too-large",
        (*SCORE, "--data", "{root}/good.jsonl", "--mesh", "data=3", "--out", "{out}"),
        r"mesh .*'data': 3.* needs 3 devices but 8 are available",
        "summary.json",
    ),
    Case(
        "score/out-below-a-file",
        (*SCORE, "--data", "{root}/good.jsonl", "--out", "{root}/a_file/x"),
        r"--out .*a_file/x: .*a_file is not a directory",
        None,
    ),
    # ------------------------------------------------------------------ scratch
    Case(
        "scratch/vocab-the-corpus-cannot-reach",
        ("scratch", "--data", "{root}/good.jsonl", "--vocab-size", "50000", "--out", "{out}", *SCRATCH_FIELDS),
        r"--vocab-size 50000: the corpus yields only \d+ tokens",
        "init_config.json",
    ),
    Case(
        "scratch/hidden-not-divisible-by-heads",
        (
            "scratch",
            "--data",
            "{root}/good.jsonl",
            "--vocab-size",
            "300",
            "--out",
            "{out}",
            *SCRATCH_FIELDS,
            "hidden_size=100",
            "num_attention_heads=3",
        ),
        r"the KEY=VALUE fields: hidden_size 100 is not divisible by num_attention_heads 3",
        "init_config.json",
    ),
    Case(
        "scratch/no-model-type",
        ("scratch", "--data", "{root}/good.jsonl", "--vocab-size", "300", "--out", "{out}", "hidden_size=64"),
        r"the KEY=VALUE fields: model_type None is not supported",
        "init_config.json",
    ),
    # ------------------------------------------------------------------ fit
    Case(
        "fit/missing-runs",
        ("fit", "--moments", "ppl", "--runs", "{root}/nope.csv", "--out", "{out}"),
        r"nope\.csv",
        "fit.json",
    ),
    Case(
        "fit/empty-runs",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_empty.csv", "--out", "{out}"),
        r"runs_empty\.csv: ",
        "fit.json",
    ),
    Case(
        "fit/header-only",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_header.csv", "--out", "{out}"),
        r"runs_header\.csv: no runs",
        "fit.json",
    ),
    Case(
        "fit/non-utf8",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_nonutf8.csv", "--out", "{out}"),
        r"runs_nonutf8\.csv: ",
        "fit.json",
    ),
    Case(
        "fit/text-in-a-number-column",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_text.csv", "--out", "{out}"),
        r"runs_text\.csv: line 3 .*'loss'",
        "fit.json",
    ),
    Case(
        "fit/negative-tokens",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_negative.csv", "--out", "{out}"),
        r"runs_negative\.csv: line 3 .*'tokens'",
        "fit.json",
    ),
    Case(
        "fit/missing-column",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_nocol.csv", "--out", "{out}"),
        r"runs_nocol\.csv: missing column\(s\) sigma_ppl",
        "fit.json",
    ),
    Case(
        "fit/runs-is-a-directory",
        ("fit", "--moments", "ppl", "--runs", "{root}", "--out", "{out}"),
        r"is a directory|not a file",
        "fit.json",
    ),
    Case(
        "fit/out-is-a-file",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_good.csv", "--out", "{root}/a_file"),
        r"--out .*a_file: exists and is not a directory",
        None,
    ),
    Case(
        "fit/blank-group-cell",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_blank_group.csv", "--out", "{out}"),
        r"runs_blank_group\.csv: line 4 \(run .*\): column 'group' is blank",
        "fit.json",
    ),
    Case(
        "fit/out-is-a-dangling-link",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_good.csv", "--out", "{root}/dangling"),
        r"--out .*dangling: a symbolic link to .*nowhere, which does not exist",
        None,
    ),
    Case(
        "fit/every-run-twice",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_twice.csv", "--out", "{out}"),
        r"runs_twice\.csv: line 14 repeats line 2: a duplicated run",
        "fit.json",
    ),
    Case(
        "fit/budgets-spanning-1.05x",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_narrow.csv", "--out", "{out}"),
        r"runs_narrow\.csv: the runs' token counts span only 1\.0\d+x",
        "fit.json",
    ),
    Case(
        "fit/as-many-runs-as-parameters",
        ("fit", "--moments", "ppl", "--runs", "{root}/runs_seven.csv", "--out", "{out}", "--law", "ppl"),
        r"runs_seven\.csv: too few runs for law 'ppl': 7 < 2 x its 7 parameters = 14",
        "fit.json",
    ),
    Case(
        "runs/the-same-run-twice",
        ("runs", "--run", "g1={root}/run_done", "--run", "g2={root}/run_done", "--out", "{out}"),
        r"run_done is collected twice",
        None,
    ),
    # ------------------------------------------------------------------ select
    Case(
        "select/design-budget-of-one-chunk",
        ("select", "design", "--landscape", "{root}/land", "--budgets", "100", "1e4", "1e5", "--out", "{out}"),
        r"--budgets: the smallest budget 100 holds about [0-9.]+ chunks",
        "design.json",
    ),
    Case(
        "select/missing-landscape",
        (*SELECT, "--landscape", "{root}/nope", "--out", "{out}"),
        r"nope: landscape directory not found",
        "summary.json",
    ),
    Case(
        "select/incomplete-landscape",
        (*SELECT, "--landscape", "{root}/land_incomplete", "--out", "{out}"),
        r"land_incomplete: landscape incomplete \(no summary\.json",
        "summary.json",
    ),
    Case(
        "select/part-not-parquet",
        (*SELECT, "--landscape", "{root}/land_corrupt", "--out", "{out}"),
        r"host000-part00000\.parquet: cannot read Parquet",
        "summary.json",
    ),
    Case(
        "select/lost-part-marker",
        (*SELECT, "--landscape", "{root}/land_lost", "--out", "{out}"),
        r"1 completed parts, but summary\.json records 2",
        "summary.json",
    ),
    Case(
        "select/summary-non-utf8",
        (*SELECT, "--landscape", "{root}/land_nonutf8", "--out", "{out}"),
        r"land_nonutf8/summary\.json: cannot read",
        "summary.json",
    ),
    Case(
        "select/tokens-zero",
        ("select", "--landscape", "{root}/land", "--tokens", "0", "--method", "random", "--out", "{out}"),
        r"--tokens",
        "summary.json",
    ),
    Case(
        "select/tokens-text",
        ("select", "--landscape", "{root}/land", "--tokens", "lots", "--method", "random", "--out", "{out}"),
        r"--tokens.*'lots'",
        "summary.json",
    ),
    Case(
        "select/missing-fit",
        ("select", "--landscape", "{root}/land", "--tokens", "1000", "--fit", "{root}/nope_fit", "--out", "{out}"),
        r"nope_fit",
        "summary.json",
    ),
    Case(
        "select/fit-json-malformed",
        ("select", "--landscape", "{root}/land", "--tokens", "1000", "--fit", "{root}/fit_malformed", "--out", "{out}"),
        r"fit_malformed/fit\.json",
        "summary.json",
    ),
    Case(
        "select/fit-json-non-utf8",
        ("select", "--landscape", "{root}/land", "--tokens", "1000", "--fit", "{root}/fit_nonutf8", "--out", "{out}"),
        r"fit_nonutf8/fit\.json",
        "summary.json",
    ),
    Case(
        "select/out-is-a-file",
        (*SELECT, "--landscape", "{root}/land", "--out", "{root}/a_file"),
        r"--out .*a_file: exists and is not a directory",
        None,
    ),
    # ------------------------------------------------------------------ propose
    Case(
        "propose/missing-fit",
        (*PROPOSE, "--fit", "{root}/nope_fit", "--landscape", "{root}/land", "--out", "{out}"),
        r"nope_fit",
        "propose.json",
    ),
    Case(
        "propose/incomplete-landscape",
        (*PROPOSE, "--fit", "{root}/fit_bayes", "--landscape", "{root}/land_incomplete", "--out", "{out}"),
        r"land_incomplete: landscape incomplete",
        "propose.json",
    ),
    Case(
        "propose/n-zero",
        (
            "propose",
            "--n",
            "0",
            "--tokens",
            "1000",
            "--fit",
            "{root}/fit_bayes",
            "--landscape",
            "{root}/land",
            "--out",
            "{out}",
        ),
        r"--n: 0 out of range \(must be >= 1\)",
        "propose.json",
    ),
    # ------------------------------------------------------------------ predict
    Case(
        "predict/missing-fit",
        ("predict", "--fit", "{root}/nope_fit", "--mu", "1", "--sigma", "1", "--tokens", "10", "--out", "{out}"),
        r"nope_fit",
        None,
    ),
    Case(
        "predict/points-missing",
        (*PREDICT, "--points", "{root}/nope.csv", "--out", "{out}"),
        r"nope\.csv: points file not found",
        None,
    ),
    Case(
        "predict/points-empty",
        (*PREDICT, "--points", "{root}/points_empty.csv", "--out", "{out}"),
        r"points_empty\.csv: empty points file",
        None,
    ),
    Case(
        "predict/points-header-only",
        (*PREDICT, "--points", "{root}/points_header.csv", "--out", "{out}"),
        r"points_header\.csv: no points",
        None,
    ),
    Case(
        "predict/points-non-utf8",
        (*PREDICT, "--points", "{root}/points_nonutf8.csv", "--out", "{out}"),
        r"points_nonutf8\.csv: not a readable UTF-8 CSV",
        None,
    ),
    Case(
        "predict/points-out-of-range",
        (*PREDICT, "--points", "{root}/points_zero.csv", "--out", "{out}"),
        r"points_zero\.csv: sigma value 0 \(point 1\) must be a finite number > 0",
        None,
    ),
    Case(
        "predict/level-out-of-range",
        (*PREDICT, "--mu", "1", "--sigma", "1", "--tokens", "10", "--level", "1.5", "--out", "{out}"),
        r"--level",
        None,
    ),
    # ------------------------------------------------------------------ train
    Case(
        "train/missing-data",
        (*TRAIN, "--data", "{root}/nope.jsonl", "--out", "{out}"),
        r"nope\.jsonl': no such file",
        "eval.json",
    ),
    Case(
        "train/malformed-json",
        (*TRAIN, "--data", "{root}/malformed.jsonl", "--out", "{out}"),
        r"malformed\.jsonl:2: malformed JSON",
        "eval.json",
    ),
    Case(
        "train/non-utf8",
        (*TRAIN, "--data", "{root}/nonutf8.jsonl", "--out", "{out}"),
        r"nonutf8\.jsonl:2: not valid UTF-8",
        "eval.json",
    ),
    Case(
        "train/repeated-id",
        (*TRAIN, "--data", "{root}/dupids.jsonl", "--out", "{out}"),
        r"dupids\.jsonl:3: .*'a'.*dupids\.jsonl:1",
        "eval.json",
    ),
    Case("train/empty-data", (*TRAIN, "--data", "{root}/empty.jsonl", "--out", "{out}"), r"empty\.jsonl", "eval.json"),
    Case(
        "train/selection-without-summary",
        (*TRAIN, "--data", "{root}/good.jsonl", "--selection", "{root}/sel_nosummary", "--out", "{out}"),
        r"sel_nosummary/selection\.parquet: no summary\.json beside it",
        "eval.json",
    ),
    Case(
        "train/selection-not-parquet",
        (*TRAIN, "--data", "{root}/good.jsonl", "--selection", "{root}/sel_notparquet", "--out", "{out}"),
        r"sel_notparquet/selection\.parquet: cannot read as parquet",
        "eval.json",
    ),
    Case(
        "train/lr-nan",
        (*TRAIN, "--data", "{root}/good.jsonl", "--lr", "nan", "--out", "{out}"),
        r"--lr: nan out of range \(must be > 0\)",
        "eval.json",
    ),
    Case(
        "train/seq-len-1",
        (*TRAIN, "--data", "{root}/good.jsonl", "--seq-len", "1", "--out", "{out}"),
        r"--seq-len: 1 out of range \(must be >= 2\)",
        "eval.json",
    ),
    Case(
        "train/out-is-a-file",
        (*TRAIN, "--data", "{root}/good.jsonl", "--out", "{root}/a_file"),
        r"--out .*a_file: exists and is not a directory",
        None,
    ),
    Case(
        "train/nan-model",
        (
            "train",
            "--model",
            "{root}/model_nan",
            "--seq-len",
            "32",
            "--batch-size",
            "8",
            "--steps",
            "1",
            "--data",
            "{root}/good.jsonl",
            "--out",
            "{out}",
        ),
        r"loss on the first batch is nan, before any update: the model gives non-finite logits",
        "eval.json",
    ),
    Case(
        "score/nan-model",
        ("score", "--model", "{root}/model_nan", "--seq-len", "32", "--data", "{root}/good.jsonl", "--out", "{out}"),
        r"scores document .* as nan .*non-finite logits",
        "summary.json",
    ),
    Case(
        "eval/nan-model",
        ("eval", "--model", "{root}/model_nan", "--tasks", "{root}/tasks_good.jsonl", "--out", "{out}"),
        r"tasks_good\.jsonl:1: choice 0 has log-likelihood nan",
        None,
    ),
    # ------------------------------------------------------------------ eval
    Case("eval/missing-tasks", (*EVAL, "--tasks", "{root}/nope.jsonl", "--out", "{out}"), r"nope\.jsonl", None),
    Case(
        "eval/empty-tasks",
        (*EVAL, "--tasks", "{root}/tasks_empty.jsonl", "--out", "{out}"),
        r"tasks_empty\.jsonl: no tasks",
        None,
    ),
    Case(
        "eval/malformed-json",
        (*EVAL, "--tasks", "{root}/tasks_malformed.jsonl", "--out", "{out}"),
        r"tasks_malformed\.jsonl:2: not valid JSON",
        None,
    ),
    Case(
        "eval/non-utf8",
        (*EVAL, "--tasks", "{root}/tasks_nonutf8.jsonl", "--out", "{out}"),
        r"tasks_nonutf8\.jsonl:2: not valid UTF-8",
        None,
    ),
    Case(
        "eval/answer-out-of-range",
        (*EVAL, "--tasks", "{root}/tasks_answer.jsonl", "--out", "{out}"),
        r"tasks_answer\.jsonl:2: 'answer' must be an integer index",
        None,
    ),
    Case(
        "eval/choices-wrong-type",
        (*EVAL, "--tasks", "{root}/tasks_choices.jsonl", "--out", "{out}"),
        r"tasks_choices\.jsonl:2: 'choices' must be a list",
        None,
    ),
    Case(
        "eval/out-is-a-directory",
        (*EVAL, "--tasks", "{root}/tasks_answer.jsonl", "--out", "{root}"),
        r"--out .*: is a directory",
        None,
    ),
    # ------------------------------------------------------------------ report
    Case("report/not-a-study", ("report", "{root}/land"), r"land: not a study directory \(no config\.yaml", None),
    Case("report/config-malformed", ("report", "{root}/study_bad"), r"study_bad/config\.yaml is not valid YAML", None),
    Case(
        "report/empty-landscape-summary",
        ("report", "{root}/study_empty"),
        r"landscape/parts: landscape has no completed parts",
        None,
    ),
    # ------------------------------------------------------------------ run
    Case(
        "run/missing-config",
        ("run", "{root}/nope.yaml", "out_dir={out}"),
        r"config file .*nope\.yaml not found",
        "report.md",
    ),
    Case(
        "run/malformed-yaml",
        ("run", "{root}/config_bad.yaml", "out_dir={out}"),
        r"config_bad\.yaml is not valid YAML",
        "report.md",
    ),
    Case(
        "run/non-utf8-yaml",
        ("run", "{root}/config_nonutf8.yaml", "out_dir={out}"),
        r"config_nonutf8\.yaml",
        "report.md",
    ),
    Case("run/unknown-key", (*RUN, "train.learning_rate=1", "out_dir={out}"), r"train\.learning_rate", "report.md"),
    Case(
        "run/bad-enum", (*RUN, "final.methods=[random,bogus]", "out_dir={out}"), r"final\.methods.*bogus", "report.md"
    ),
    Case("run/out-of-range", (*RUN, "train.lr=-1", "out_dir={out}"), r"train\.lr", "report.md"),
    Case("run/not-a-whole-number", (*RUN, "train.seq_len=1.7", "out_dir={out}"), r"train\.seq_len.*1\.7", "report.md"),
    Case(
        "run/missing-corpus",
        (*RUN, "data.general_test={root}/nope.jsonl", "out_dir={out}"),
        r"config data\.general_test: .*nope\.jsonl",
        "report.md",
    ),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The shared (valid and invalid) inputs of every case."""
    from test_select_cli import POINT, write_fit
    from tiny_hf import save_tiny_llama

    root = tmp_path_factory.mktemp("bad_inputs")
    for name, data in INPUTS.items():
        (root / name).write_bytes(data)
    save_tiny_llama(root / "model", seed=0)
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(root / "model", root / "model_nan")  # the same model with NaN weights
    weights = load_file(root / "model" / "model.safetensors")
    save_file(
        {k: np.full_like(v, np.nan) if "norm" in k else v for k, v in weights.items()},
        root / "model_nan" / "model.safetensors",
    )
    good = synthetic_runs(n=12, seed=0).drop(columns="loss_true")
    write_runs_table(root / "runs_good.csv", good)
    write_runs_table(root / "runs_twice.csv", pd.concat([good, good], ignore_index=True))
    write_runs_table(root / "runs_narrow.csv", good.assign(tokens=np.linspace(1e6, 1.05e6, len(good)).round()))
    write_runs_table(root / "runs_seven.csv", good.head(7))
    write_runs_table(root / "runs_blank_group.csv", good.assign(group=["g"] * 2 + [""] + ["g"] * (len(good) - 3)))
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "run_done").mkdir()
    (root / "run_done" / "eval.json").write_text(
        json.dumps(
            {
                "domain_loss": 3.0,
                "tokens": 100,
                "trained_tokens": 100,
                "mu_ppl": 5.0,
                "sigma_ppl": 1.0,
                "mu_logppl": 1.5,
                "sigma_logppl": 0.2,
            }
        )
    )
    table = synthetic_landscape(400, seed=0)
    write_landscape(root / "land", table, rows_per_part=200)
    write_landscape(root / "land_incomplete", table, rows_per_part=200, complete=False)
    write_landscape(root / "land_corrupt", table, rows_per_part=200)
    (root / "land_corrupt" / "parts" / "host000-part00000.parquet").write_bytes(b"PAR1 garbage")
    write_landscape(root / "land_lost", table, rows_per_part=200)
    (root / "land_lost" / "parts" / "host000-part00001.done").unlink()
    write_landscape(root / "land_nonutf8", table, rows_per_part=200)
    (root / "land_nonutf8" / "summary.json").write_bytes(NON_UTF8)
    write_fit(root / "fit_good")
    (root / "study_bad").mkdir()
    (root / "study_bad" / "config.yaml").write_bytes(INPUTS["config_bad.yaml"])
    (root / "study_empty" / "landscape").mkdir(parents=True)  # a study whose landscape summary is {}
    (root / "study_empty" / "config.yaml").write_text(yaml.safe_dump(config_to_dict(StudyConfig())))
    (root / "study_empty" / "landscape" / "summary.json").write_text("{}")
    write_fit(root / "fit_bayes", {k: np.full(400, v) for k, v in POINT.items()})
    for name, data in (("fit_malformed", b'{"law": "ppl",'), ("fit_nonutf8", NON_UTF8)):
        (root / name).mkdir()
        (root / name / "fit.json").write_bytes(data)
    for name in ("sel_nosummary", "sel_notparquet"):
        (root / name).mkdir()

    pd.DataFrame({"doc_id": ["a"], "chunk": [0], "n_tokens": [5], "ppl": [3.0]}).to_parquet(
        root / "sel_nosummary" / "selection.parquet"
    )
    (root / "sel_notparquet" / "selection.parquet").write_bytes(b"not parquet")
    (root / "sel_notparquet" / "summary.json").write_text(json.dumps({"n_chunks": 1}))
    return root


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_exits_2_with_one_line_and_no_complete_output(case, root, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.format(root=root, out=out) for a in case.argv]
    before = {p: p.lstat().st_mtime_ns for p in root.rglob("*")}
    code = main(argv)
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip() and not _progress(line)]
    assert code == 2, (code, captured.err[-2000:])
    assert len(err) == 1, captured.err[-2000:]
    assert err[0].startswith(f"pplaw {argv[0]}: error: "), err[0]
    assert re.search(case.message, err[0]), err[0]
    assert "Traceback" not in captured.err
    if case.complete is None:
        assert not out.exists()
    else:
        assert not (out / case.complete).exists()
    assert {p: p.lstat().st_mtime_ns for p in root.rglob("*")} == before  # inputs untouched


def _progress(line: str) -> bool:
    """Progress output (tqdm bars, `pplaw_jax.logs` records) that may precede the error line."""
    return re.search(r"\[\d\d:\d\d", line) is not None or re.match(r"\d\d:\d\d:\d\d pplaw\.", line) is not None
