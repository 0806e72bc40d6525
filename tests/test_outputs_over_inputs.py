"""No command writes over its inputs: for every subcommand and every input it reads, an --out that
is that input, lies inside it, or contains it is refused (exit 2, one line naming both) before
anything is written, and the input is left byte for byte as it was."""

import hashlib

import pytest

from pplaw_jax.cli import INPUTS, main

# every subcommand with an --out, its required arguments (inputs as {placeholders}), and which
# inputs are directories
BASE = {
    "data cut": (["data", "cut", "--data", "{data}"], {}),
    "data cloze": (["data", "cloze", "--data", "{data}"], {}),
    "data contaminate": (["data", "contaminate", "--data", "{data}", "--general", "{general}"], {}),
    "scratch": (["scratch", "--data", "{data}", "--vocab-size", "300"], {}),
    "score": (["score", "--model", "{model}", "--data", "{data}"], {"model"}),
    "landscape export": (["landscape", "export", "--landscape", "{landscape}", "--data", "{data}"], {"landscape"}),
    "runs": (
        ["runs", "--include", "{include}", "--manifest", "{manifest}", "--runs-dir", "{runs_dir}", "--run", "g={run}"],
        {"manifest", "runs_dir", "run"},
    ),
    "fit": (["fit", "--runs", "{runs}"], {}),
    "predict": (["predict", "--fit", "{fit}", "--points", "{points}"], {"fit"}),
    "select": (
        [
            "select",
            "--landscape",
            "{landscape}",
            "--fit",
            "{fit}",
            "--tokens",
            "100",
            "--method",
            "oracle",
            "--labels",
            "{labels}",
        ],
        {"landscape", "fit"},
    ),
    "select design": (["select", "design", "--landscape", "{landscape}"], {"landscape"}),
    "select windows": (["select", "windows", "--landscape", "{landscape}"], {"landscape"}),
    "propose": (
        ["propose", "--fit", "{fit}", "--landscape", "{landscape}", "--n", "2", "--tokens", "100"],
        {"fit", "landscape"},
    ),
    "train": (
        [
            "train",
            "--model",
            "{model}",
            "--tokenizer",
            "{tokenizer}",
            "--data",
            "{data}",
            "--selection",
            "{selection}",
            "--eval-data",
            "{eval_data}",
            "--general-eval-data",
            "{general_eval_data}",
            "--target-eval-data",
            "{target_eval_data}",
            "--steps",
            "1",
        ],
        {"model", "tokenizer"},
    ),
    "eval": (
        ["eval", "--model", "{model}", "--tasks", "{tasks}", "--lm-eval-include", "{lm_eval_include}"],
        {"model", "lm_eval_include"},
    ),
}
FILE_OUT = {"data cut", "data cloze", "data contaminate", "runs", "predict", "eval"}
CASES = [
    (command, dest, how)
    for command, dests in INPUTS.items()
    for dest in dests
    for how in ("is", "inside", "contains")
    # a file output cannot contain anything, and nothing can be inside a file input
    if not (how == "contains" and command in FILE_OUT) and not (how == "inside" and dest not in BASE[command][1])
]


def test_every_subcommand_with_an_output_declares_its_inputs():
    assert set(BASE) == set(INPUTS)
    for command, (argv, _) in BASE.items():
        named = {a.strip("{}") for a in argv if a.startswith("{")} | {
            a.split("=")[1].strip("{}") for a in argv if "={" in a
        }
        assert named == set(INPUTS[command]), command


@pytest.mark.parametrize("command, dest, how", CASES, ids=lambda x: str(x))
def test_an_output_over_an_input_is_refused(tmp_path, capsys, command, dest, how):
    argv, dirs = BASE[command]
    paths = {}
    for d in INPUTS[command]:
        p = tmp_path / "in" / d / d  # each input alone in its own folder
        if d in dirs:
            p.mkdir(parents=True)
            (p / "kept.txt").write_text("input " + d)
        else:
            p = p.with_suffix(".jsonl")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text('{"id": "a", "text": "input"}\n')
        paths[d] = p
    target = paths[dest]
    out = {
        "is": target,
        "inside": target / "out.jsonl" if command in FILE_OUT else target / "out",
        "contains": target.parent,
    }[how]
    before = {p: hashlib.sha256((p / "kept.txt" if p.is_dir() else p).read_bytes()).hexdigest() for p in paths.values()}
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv] + ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert str(target) in err and len(err.splitlines()) == 1
    # an output of the wrong kind (a directory over a file input, or the reverse) is refused as such first
    assert "a command never writes over its inputs" in err or (how == "is" and "directory" in err), err
    after = {p: hashlib.sha256((p / "kept.txt" if p.is_dir() else p).read_bytes()).hexdigest() for p in paths.values()}
    assert after == before
    if how == "inside":
        assert not out.exists()
