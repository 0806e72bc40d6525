"""Cloze tasks: the answer is the text that really follows the question; distractors do not."""

import pytest

from pplaw_jax.data.cloze import make_cloze_tasks
from pplaw_jax.errors import PplawError


def test_answer_is_the_true_continuation_and_tasks_are_deterministic():
    texts = [" ".join(f"d{d}w{i}" for i in range(200)) for d in range(6)]  # every word is unique
    tasks = make_cloze_tasks(texts, n_tasks=50, seed=3)
    assert tasks == make_cloze_tasks(texts, n_tasks=50, seed=3)
    assert {t["answer"] for t in tasks} == {0, 1, 2, 3}  # the answer position varies
    for t in tasks:
        assert len(t["choices"]) == 4 and len(t["question"].split()) == 48
        followed = [any((t["question"] + c) in text for text in texts) for c in t["choices"]]
        assert followed == [i == t["answer"] for i in range(4)]


def test_too_few_long_documents_is_an_error():
    with pytest.raises(PplawError, match=r"need at least 4 test documents of 60\+ words, found 0"):
        make_cloze_tasks(["short text"] * 10, n_tasks=1)
