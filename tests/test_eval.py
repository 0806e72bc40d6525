"""`pplaw eval`: multiple-choice log-likelihoods against a PyTorch/transformers reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers

from pplaw_jax.cli import main
from pplaw_jax.errors import PplawError
from pplaw_jax.models import train_bpe_tokenizer
from pplaw_jax.train.evaluate import Task, encode_pair, mc_metrics, read_tasks, wilson_interval

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "paris is the capital of france", "café naïve"] * 10
TASKS = [
    {"question": "The cat sat on the", "choices": [" mat", " park", " capital of france"], "answer": 0},
    {
        "context": "Geography.",
        "question": "Question: capital of france?\nAnswer:",
        "choices": [" paris", " a dog"],
        "answer": 0,
    },
    {"question": "a dog ran in the ", "choices": ["park", "mat", "café naïve"], "answer": 0},  # trailing space moves
    {"question": "x" * 150, "choices": [" the cat", " sat"], "answer": 1},  # longer than --max-length: cut left
]
MAX_LENGTH = 48


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mc")
    tokenizer = train_bpe_tokenizer(CORPUS, 300)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.save_pretrained(d / "model")
    tokenizer.save(d / "model")
    with open(d / "tasks.jsonl", "w") as f:
        for t in TASKS:
            f.write(json.dumps(t) + "\n")
    return d


def _reference_logliks(model_dir, tasks, max_length):
    """The harness protocol written out with transformers' tokenizer and PyTorch log-softmax."""
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for t in tasks:
        prompt = f"{t['context']}\n\n{t['question']}" if t.get("context") else t["question"]
        for choice in t["choices"]:
            ctx, cont = prompt.rstrip(), prompt[len(prompt.rstrip()) :] + choice
            whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
            ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
            cont_ids = whole[len(ctx_ids) :]
            seq = [tok.bos_token_id] + (ctx_ids + cont_ids)[-(max_length - 1) :]
            x = torch.tensor([seq])
            with torch.no_grad():
                logp = torch.log_softmax(model(x).logits[0].double(), -1)
            n = len(cont_ids)
            positions = range(len(seq) - n, len(seq))
            out.append(sum(logp[j - 1, seq[j]].item() for j in positions))
    return np.array(out)


def test_logliks_and_accuracy_match_pytorch(hf_dir, capsys):
    out = hf_dir / "results.json"
    argv = ["eval", "--model", str(hf_dir / "model"), "--tasks", str(hf_dir / "tasks.jsonl"), "--out", str(out)]
    assert main([*argv, "--batch-size", "8", "--max-length", str(MAX_LENGTH)]) == 0
    results = json.loads(out.read_text())
    ours = np.concatenate([e["logliks"] for e in results["examples"]])
    ref = _reference_logliks(hf_dir / "model", TASKS, MAX_LENGTH)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)

    k, correct, correct_norm = 0, 0, 0
    for t in TASKS:
        ll = ref[k : k + len(t["choices"])]
        k += len(t["choices"])
        nbytes = np.array([len(c.encode()) for c in t["choices"]])
        correct += int(np.argmax(ll)) == t["answer"]
        correct_norm += int(np.argmax(ll / nbytes)) == t["answer"]
    assert results["n"] == len(TASKS)
    assert results["acc"] == correct / len(TASKS) and results["acc_norm"] == correct_norm / len(TASKS)
    assert results["acc_ci95"] == pytest.approx(list(wilson_interval(correct, len(TASKS))))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["acc"] == results["acc"]


def test_max_examples_limits_the_tasks(hf_dir):
    out = hf_dir / "two.json"
    argv = ["eval", "--model", str(hf_dir / "model"), "--tasks", str(hf_dir / "tasks.jsonl"), "--out", str(out)]
    assert main([*argv, "--max-examples", "2", "--max-length", str(MAX_LENGTH)]) == 0
    assert json.loads(out.read_text())["n"] == 2


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"question": "q", "choices": ["a"], "answer": 0}), "'choices' must be a list of at least 2"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 2}), r"'answer' must be an integer index"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": True}), r"'answer' must be an integer index"),
        (json.dumps({"choices": ["a", "b"], "answer": 0}), "'question' must be a string"),
        (json.dumps(["q"]), "expected a JSON object"),
    ],
)
def test_bad_task_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "tasks.jsonl"
    good = json.dumps({"question": "q", "choices": ["a", "b"], "answer": 1})
    path.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(PplawError, match=rf"tasks.jsonl:3: {message}"):
        read_tasks(path)


def test_non_utf8_task_line_is_named(tmp_path):
    path = tmp_path / "tasks.jsonl"
    good = json.dumps({"question": "q", "choices": ["a", "b"], "answer": 1}).encode()
    path.write_bytes(good + b"\n" + b'{"question": "caf\xe9"}\n')
    with pytest.raises(PplawError, match=r"tasks.jsonl:2: not valid UTF-8"):
        read_tasks(path)


def test_bad_task_file_through_the_cli(tmp_path, capsys):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 5}\n')
    assert main(["eval", "--model", "nowhere", "--tasks", str(path)]) == 2
    assert "tasks.jsonl:1: 'answer'" in capsys.readouterr().err


def test_encode_pair_moves_trailing_space_to_the_continuation():
    class CharTokenizer:
        def encode(self, text):
            return [ord(c) for c in text]

    ctx, cont = encode_pair(CharTokenizer(), "in the  ", "park")
    assert ctx == [ord(c) for c in "in the"] and cont == [ord(c) for c in "  park"]


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def test_wilson_interval_solves_the_score_equation():
    for k, n in ((8, 10), (0, 5), (37, 50)):
        lo, hi = wilson_interval(k, n)
        p_hat = k / n
        for p in (lo, hi):  # the interval's ends are where the score statistic equals z
            assert (p_hat - p) ** 2 == pytest.approx(Z95**2 * p * (1 - p) / n, abs=1e-12)
        assert lo <= p_hat <= hi
    assert wilson_interval(0, 5)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_mc_metrics_length_normalisation():
    tasks = [Task("q", ("a", "bbbb"), 1, 1), Task("q", ("cc", "d"), 0, 2)]
    # Task 1: raw prefers "a" (-2 > -3); per byte "bbbb" wins (-0.75 > -2). Task 2: both pick "cc".
    metrics = mc_metrics(tasks, np.array([-2.0, -3.0, -1.0, -4.0]))
    assert metrics["acc"] == 0.5 and metrics["acc_norm"] == 1.0
    assert [e["pred"] for e in metrics["examples"]] == [0, 0] and [e["pred_norm"] for e in metrics["examples"]] == [
        1,
        0,
    ]
    assert not math.isnan(metrics["acc_ci95"][0])


def test_a_non_finite_choice_is_an_error_not_a_coin_flip():
    """NaN log-likelihoods (a model whose logits are NaN) used to give acc 0.5 with null logliks."""
    from pplaw_jax.errors import PplawError

    tasks = [Task("q", ("a", "bbbb"), 1, 1), Task("q", ("cc", "d"), 0, 7)]
    with pytest.raises(PplawError, match=r"tasks.jsonl:7: choice 1 has log-likelihood nan \(and 0 more"):
        mc_metrics(tasks, np.array([-2.0, -3.0, -1.0, np.nan]), "tasks.jsonl")
