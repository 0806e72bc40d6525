"""`pplaw eval --lm-eval-tasks`: lm-evaluation-harness tasks on a pplaw model, offline.

Small PubMedQA-style (yes/no/maybe after an abstract) and MMLU-style (4-way) items are written to
temporary JSONL files with lm-eval task YAMLs that read them (`dataset_path: json`); the adapter's
per-choice log-likelihoods must equal `pplaw eval`'s on the same prompts (its own JSONL path) and a
PyTorch/transformers computation written out here; rolling log-likelihoods are checked the same way.
The shipped tasks in experiments/lm_eval_tasks run on files laid out like shared/data/eval.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_hf import save_tiny_llama

from pplaw_jax.cli import main
from pplaw_jax.train.evaluate import wilson_interval

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "experiments" / "lm_eval_tasks"
MAX_LENGTH = 48  # the long abstract below is cut from the left
LETTERS = "ABCD"

PUBMEDQA = [
    {"id": "p1", "text": "the quick brown fox jumps over a lazy dog", "question": "does the fox jump?", "answer": "yes",
     "long_answer": "the fox jumps"},
    {"id": "p2", "text": "seven wizards quietly pack boxes of liquor jugs", "question": "are the wizards loud?",
     "answer": "no", "long_answer": "they are quiet"},
    {"id": "p3", "text": " ".join(["zebras graze near the old mill in spring"] * 12), "question": "do zebras graze?",
     "answer": "maybe", "long_answer": "perhaps"},
]  # fmt: skip
MMLU_DEV = [{"id": "d1", "text": "which animal is quick?", "choices": ["the fox", "the dog", "a jug", "the mill"],
             "answer": "A", "subject": "anatomy"}]  # fmt: skip
MMLU_VAL = [
    {"id": "v1", "text": "who packs boxes?", "choices": ["zebras", "seven wizards", "the lazy dog", "spring"],
     "answer": "B", "subject": "anatomy"},
    {"id": "v2", "text": "where do zebras graze?", "choices": ["in boxes", "over a dog", "near the old mill", "jugs"],
     "answer": "C", "subject": "anatomy"},
]  # fmt: skip


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _task_yamls(d: Path, data: Path) -> Path:
    """Task YAMLs over local JSON files: PubMedQA-style (0-shot), MMLU-style with dev exemplars, rolling."""
    tasks = d / "tasks"
    tasks.mkdir()
    source = f"dataset_path: json\ndataset_kwargs:\n  cache_dir: {d / 'hf_cache'}\n  data_files:\n"
    metrics = "metric_list:\n" + "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n"
                                         for m in ("acc", "acc_norm"))  # fmt: skip
    (tasks / "tiny_pubmedqa.yaml").write_text(
        "task: tiny_pubmedqa\n" + source + f"    validation: {data / 'pubmedqa.jsonl'}\n"
        "output_type: multiple_choice\nvalidation_split: validation\nnum_fewshot: 0\n"
        'doc_to_text: "{{text}}\\n\\nQuestion: {{question}}\\nAnswer:"\n'
        'doc_to_choice: ["yes", "no", "maybe"]\ndoc_to_target: answer\n' + metrics
    )
    (tasks / "tiny_mmlu.yaml").write_text(
        "task: tiny_mmlu\n"
        + source
        + f"    dev: {data / 'mmlu_dev.jsonl'}\n    validation: {data / 'mmlu_val.jsonl'}\n"
        "output_type: multiple_choice\nvalidation_split: validation\nfewshot_split: dev\n"
        "fewshot_config:\n  sampler: first_n\n"
        'doc_to_text: "{{text}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\n'
        "doc_to_target: \"{{['A', 'B', 'C', 'D'].index(answer)}}\"\n" + metrics
    )
    (tasks / "tiny_rolling.yaml").write_text(
        "task: tiny_rolling\n" + source + f"    validation: {data / 'pubmedqa.jsonl'}\n"
        "output_type: loglikelihood_rolling\nvalidation_split: validation\nnum_fewshot: 0\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n"
    )
    (tasks / "tiny_generate.yaml").write_text(
        "task: tiny_generate\n" + source + f"    validation: {data / 'pubmedqa.jsonl'}\n"
        "output_type: generate_until\nvalidation_split: validation\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    return tasks


def _mc_pairs() -> tuple[list[dict], list[tuple[str, str]]]:
    """The temporary tasks as pplaw eval rows, and the (context, continuation) pairs lm-eval builds.

    PubMedQA-style: prompt `text + "\\n\\n" + "Question: q\\nAnswer:"`, choices " yes"/" no"/" maybe"
    (lm-eval's default target delimiter " "). MMLU-style, one-shot: the first dev item, its answer,
    a blank line, then the question; choices are the answer texts after a space.
    """
    rows = [
        {"context": p["text"], "question": f"Question: {p['question']}\nAnswer:",
         "choices": [" yes", " no", " maybe"], "answer": ["yes", "no", "maybe"].index(p["answer"])}
        for p in PUBMEDQA
    ]  # fmt: skip
    ex = MMLU_DEV[0]
    shot = f"{ex['text']}\nAnswer: {ex['choices'][LETTERS.index(ex['answer'])]}\n\n"
    rows += [
        {"question": f"{shot}{m['text']}\nAnswer:", "choices": [" " + c for c in m["choices"]],
         "answer": LETTERS.index(m["answer"])}
        for m in MMLU_VAL
    ]  # fmt: skip
    pairs = []
    for r in rows:
        prompt = f"{r['context']}\n\n{r['question']}" if r.get("context") else r["question"]
        pairs += [(prompt, c) for c in r["choices"]]
    return rows, pairs


class TorchReference:
    """The tiny model's log-likelihoods with transformers' tokenizer and PyTorch, written out here.

    lm-eval's HF protocol with the start token leading every sequence: trailing context whitespace
    moves to the continuation, continuation = whole-pair tokens after the context's tokens, the
    sequence is cut from the left to `max_length` tokens.
    """

    def __init__(self, model_dir: Path, max_length: int):
        import torch
        import transformers

        self.torch = torch
        self.tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.max_length = max_length

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _logp(self, seq: list[int]):
        with self.torch.no_grad():
            return self.torch.log_softmax(self.model(self.torch.tensor([seq])).logits[0].double(), -1)

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        ctx = self._ids(context)
        cont = self._ids(context + continuation)[len(ctx) :]
        seq = [self.tok.bos_token_id] + (ctx + cont)[-(self.max_length - 1) :]
        logp = self._logp(seq)
        scored = range(len(seq) - min(len(cont), len(seq) - 1), len(seq))
        ll = sum(logp[j - 1, seq[j]].item() for j in scored)
        return ll, all(int(logp[j - 1].argmax()) == seq[j] for j in scored)

    def rolling(self, text: str) -> float:
        """Every token scored once: blocks of max_length - 1 tokens, the first after the start token,
        each later one after the token before it, the last one with a full window of context
        (lm-eval's documented rolling windows)."""
        ids, m, total, s = self._ids(text), self.max_length - 1, 0.0, 0
        while s < len(ids):
            e = min(s + m, len(ids))
            seq = [self.tok.bos_token_id] + ids[:e] if s == 0 else ids[e - m - 1 : e]
            logp = self._logp(seq)
            total += sum(logp[j - 1, seq[j]].item() for j in range(len(seq) - (e - s), len(seq)))
            s = e
        return total


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("lm_eval")
    d = tmp_path_factory.mktemp("harness")
    model = save_tiny_llama(d / "model", seed=3)
    data = d / "data"
    _jsonl(data / "pubmedqa.jsonl", PUBMEDQA)
    _jsonl(data / "mmlu_dev.jsonl", MMLU_DEV)
    _jsonl(data / "mmlu_val.jsonl", MMLU_VAL)
    return {"dir": d, "model": model, "tasks": _task_yamls(d, data), "ref": TorchReference(model, MAX_LENGTH)}


@pytest.fixture(scope="module")
def lm_eval_run(setup):
    """One `pplaw eval --lm-eval-tasks` run of the temporary tasks, 1-shot where a task allows it."""
    out = setup["dir"] / "lm_eval.json"
    argv = ["eval", "--model", str(setup["model"]), "--lm-eval-tasks", "tiny_pubmedqa,tiny_mmlu,tiny_rolling",
            "--lm-eval-include", str(setup["tasks"]), "--lm-eval-num-fewshot", "1", "--out", str(out),
            "--batch-size", "8", "--max-length", str(MAX_LENGTH)]  # fmt: skip
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_choice_logliks_equal_pplaw_eval_and_pytorch(setup, lm_eval_run):
    import lm_eval

    rows, pairs = _mc_pairs()
    tasks_file = _jsonl(setup["dir"] / "pplaw_tasks.jsonl", rows)
    out = setup["dir"] / "pplaw.json"
    argv = ["eval", "--model", str(setup["model"]), "--tasks", str(tasks_file), "--out", str(out),
            "--batch-size", "8", "--max-length", str(MAX_LENGTH)]  # fmt: skip
    assert main(argv) == 0
    pplaw = np.concatenate([e["logliks"] for e in json.loads(out.read_text())["examples"]])

    tasks = lm_eval_run["tasks"]
    assert tasks["tiny_pubmedqa"]["num_fewshot"] == 0 and tasks["tiny_mmlu"]["num_fewshot"] == 1
    harness = np.concatenate([e["logliks"] for t in ("tiny_pubmedqa", "tiny_mmlu") for e in tasks[t]["examples"]])
    torch_ll = np.array([setup["ref"].loglikelihood(c, x)[0] for c, x in pairs])
    np.testing.assert_allclose(harness, pplaw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(harness, torch_ll, rtol=1e-4, atol=1e-4)

    # acc from the raw log-likelihoods; lm-eval's acc_norm divides by the choice's character length
    # (without the delimiter), which differs from pplaw eval's byte length with it.
    offsets = np.cumsum([0] + [len(r["choices"]) for r in rows])
    first = 0
    for name, n_docs in (("tiny_pubmedqa", len(PUBMEDQA)), ("tiny_mmlu", len(MMLU_VAL))):
        correct = correct_norm = 0
        for i in range(first, first + n_docs):
            ll, answer = torch_ll[offsets[i] : offsets[i + 1]], rows[i]["answer"]
            lengths = np.array([len(c.strip()) for c in rows[i]["choices"]])
            correct += int(np.argmax(ll)) == answer
            correct_norm += int(np.argmax(ll / lengths)) == answer
        first += n_docs
        assert tasks[name]["n"] == n_docs
        assert tasks[name]["acc"] == pytest.approx(correct / n_docs)
        assert tasks[name]["acc_norm"] == pytest.approx(correct_norm / n_docs)
        assert tasks[name]["acc_ci95"] == pytest.approx(list(wilson_interval(correct, n_docs)))
    assert lm_eval_run["lm_eval_version"] == lm_eval.__version__
    assert lm_eval_run["max_length"] == MAX_LENGTH


def test_rolling_logliks_equal_pytorch(setup, lm_eval_run):
    rolling = lm_eval_run["tasks"]["tiny_rolling"]
    ours = np.array([e["logliks"][0] for e in rolling["examples"]])
    ref = np.array([setup["ref"].rolling(p["text"]) for p in PUBMEDQA])
    assert len(setup["ref"]._ids(PUBMEDQA[2]["text"])) > 2 * MAX_LENGTH  # several windows
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    n_bytes = sum(len(p["text"].encode()) for p in PUBMEDQA)
    assert rolling["bits_per_byte"] == pytest.approx(-ref.sum() / n_bytes / math.log(2), rel=1e-5)


def test_registered_model_answers_requests_like_pytorch(setup, caplog):
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    import pplaw_jax.train.harness as harness
    from pplaw_jax.errors import PplawError

    lm = get_model("pplaw").create_from_arg_string(f"model={setup['model']},batch_size=8,max_length={MAX_LENGTH}")
    ref = setup["ref"]
    # a continuation that is the model's greedy next token, so is_greedy is True at least once
    context = "the quick brown"
    seq = [ref.tok.bos_token_id] + ref._ids(context)
    greedy_text = ref.tok.decode([int(ref._logp(seq)[-1].argmax())])
    letters = [("the old mill\nAnswer:", f" {letter}") for letter in LETTERS]  # share one forward pass
    assert all(len(ref._ids(x)) == 2 for _, x in letters)
    pairs = [(context, greedy_text), (context, " fox jumps"), ("", "seven wizards"), ("a lazy dog ", "near"),
             ("x " * 60, " spring"), *letters]  # fmt: skip
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    logging.getLogger("pplaw").addHandler(caplog.handler)  # pplaw's loggers do not propagate once set up
    try:
        got = lm.loglikelihood(requests)
    finally:
        logging.getLogger("pplaw").removeHandler(caplog.handler)
    # only the 60-word context is longer than MAX_LENGTH: one cut, and said so
    assert f"1 of {len(pairs)} lm-eval requests were longer than max_length {MAX_LENGTH}" in caplog.text
    want = [ref.loglikelihood(*pair) for pair in pairs]
    assert want[0][1], "the greedy continuation should be greedy under the reference"
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=1e-4, atol=1e-4)
    assert [g[1] for g in got] == [w[1] for w in want]
    with pytest.raises(NotImplementedError, match="does not generate text"):
        lm.generate_until([Instance("generate_until", {}, ("q", {}), 0)])
    with pytest.raises(PplawError, match="unknown model argument"):
        harness.PplawLM.create_from_arg_string(f"model={setup['model']},temperature=0")
    with pytest.raises(PplawError, match="batch_size='auto' must be a positive integer"):
        harness.PplawLM.create_from_arg_string(f"model={setup['model']},batch_size=auto")


def test_requests_differing_in_the_last_token_share_a_row():
    pytest.importorskip("lm_eval")
    from pplaw_jax.train.evaluate import Request
    from pplaw_jax.train.harness import SharedRows

    requests = [Request((0, 5, 6, 7), 3), Request((0, 5, 6, 8), 3), Request((0, 5, 6, 8), 2),
                Request((0, 5, 9), 2), Request((0, 5, 6, 9), 3)]  # fmt: skip
    shared = SharedRows.of(requests)
    assert shared.members == [[0, 1, 4], [2], [3]]
    assert [r.ids for r in shared.rows] == [(0, 5, 6, 7), (0, 5, 6, 8), (0, 5, 9)]
    np.testing.assert_array_equal(shared.candidates, [[7, 8, 9], [8, 0, 0], [9, 0, 0]])


def test_shipped_medical_tasks_match_pplaw_eval(setup, monkeypatch):
    """experiments/lm_eval_tasks (PubMedQA PQA-L, MMLU-medical) on files laid out like shared/data/eval."""
    sys.path.insert(0, str(SHIPPED))
    try:
        from medical_data import SUBJECTS
    finally:
        sys.path.remove(str(SHIPPED))
    data = setup["dir"] / "eval_data"
    _jsonl(data / "pubmedqa_pqal" / "train_dev.jsonl", PUBMEDQA)
    val = [{**MMLU_VAL[i % 2], "id": f"v{i}", "subject": s} for i, s in enumerate(SUBJECTS)]
    _jsonl(data / "mmlu_medical" / "dev.jsonl", [{**MMLU_DEV[0], "subject": s} for s in SUBJECTS])
    _jsonl(data / "mmlu_medical" / "val.jsonl", val)
    monkeypatch.setenv("PPLAW_EVAL_DATA", str(data))
    out = setup["dir"] / "shipped.json"
    argv = [
        "eval",
        "--model",
        str(setup["model"]),
        "--lm-eval-tasks",
        "pubmedqa_pqal,mmlu_medical",
        "--lm-eval-include",
        str(SHIPPED),
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--max-length",
        str(MAX_LENGTH),
    ]
    assert main(argv) == 0
    results = json.loads(out.read_text())

    # the same prompts as pplaw eval rows: lm-eval's pubmedqa and mmlu formats
    rows = [
        {"question": f"Abstract: {p['text']}\nQuestion: {p['question']}\nAnswer:", "choices": [" yes", " no", " maybe"],
         "answer": ["yes", "no", "maybe"].index(p["answer"])}
        for p in PUBMEDQA
    ]  # fmt: skip
    for m in val:
        options = "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, m["choices"]))
        about = m["subject"].replace("_", " ")
        rows.append({"question": f"The following are multiple choice questions (with answers) about {about}.\n\n"
                                 f"{m['text']}{options}\nAnswer:",
                     "choices": [" A", " B", " C", " D"], "answer": LETTERS.index(m["answer"])})  # fmt: skip
    tasks_file = _jsonl(setup["dir"] / "shipped_tasks.jsonl", rows)
    pplaw_out = setup["dir"] / "shipped_pplaw.json"
    argv = ["eval", "--model", str(setup["model"]), "--tasks", str(tasks_file), "--out", str(pplaw_out),
            "--batch-size", "8", "--max-length", str(MAX_LENGTH)]  # fmt: skip
    assert main(argv) == 0
    pplaw = [e["logliks"] for e in json.loads(pplaw_out.read_text())["examples"]]

    names = ["pubmedqa_pqal"] * len(PUBMEDQA) + [f"mmlu_medical_{s}" for s in SUBJECTS]
    doc = {name: 0 for name in names}
    for name, want in zip(names, pplaw):
        np.testing.assert_allclose(results["tasks"][name]["examples"][doc[name]]["logliks"], want, rtol=1e-5, atol=1e-5)
        doc[name] += 1
    accs = [results["tasks"][f"mmlu_medical_{s}"]["acc"] for s in SUBJECTS]  # one question per subject
    assert results["groups"]["mmlu_medical"]["acc"] == pytest.approx(np.mean(accs))


def test_bad_lm_eval_input_is_one_line_exit_2(setup, capsys, monkeypatch):
    monkeypatch.setenv("PPLAW_EVAL_DATA", str(setup["dir"] / "no_data"))
    base = ["eval", "--model", "nowhere", "--lm-eval-include", str(setup["tasks"])]
    cases = [
        (["--lm-eval-tasks", "pubmedqa_pqal", "--lm-eval-include", str(SHIPPED)],
         "no_data/pubmedqa_pqal/train_dev.jsonl: no such file; set PPLAW_EVAL_DATA"),
        (["--lm-eval-tasks", "tiny_generate"], "tiny_generate generate text (generate_until)"),
        (["--lm-eval-tasks", "tiny_pubmedqa", "--lm-eval-include", str(setup["dir"] / "missing")],
         "missing: no such directory (--lm-eval-include)"),
        (["--lm-eval-tasks", "tiny_pubmedqa,no_such_task"], "unknown lm-eval task(s) no_such_task"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_missing_lm_eval_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    assert main(["eval", "--model", "nowhere", "--lm-eval-tasks", "anything"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install -e '.[eval]'" in err and len(err.splitlines()) == 1
    assert main(["eval", "--model", "nowhere", "--tasks", "t.jsonl", "--lm-eval-include", str(tmp_path)]) == 2
    assert "--lm-eval-include needs --lm-eval-tasks" in capsys.readouterr().err


def test_eval_help_does_not_import_lm_eval():
    code = (
        "import sys\nfrom pplaw_jax.cli import main\n"
        "try:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'lm_eval' not in sys.modules and 'jax' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "--lm-eval-tasks" in done.stdout
