"""Multiple-choice cloze tasks built from held-out domain text.

For a corpus with no curated benchmark, a standard substitute (LAMBADA/HellaSwag-style) is to show a
passage prefix and ask which of several continuations really follows; the distractors are
continuations of the same length taken from other documents. A model that learned the domain
ranks the true continuation higher. Output rows follow `pplaw eval`'s task format:
`{"question": prefix, "choices": [...], "answer": index}`.
"""

from __future__ import annotations

import numpy as np

from pplaw_jax.errors import PplawError


def make_cloze_tasks(
    texts: list[str],
    n_tasks: int,
    *,
    n_choices: int = 4,
    prefix_words: int = 48,
    continuation_words: int = 12,
    seed: int = 0,
) -> list[dict]:
    """Sample `n_tasks` cloze questions from `texts` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    need = prefix_words + continuation_words
    words = [t.split() for t in texts]
    usable = [i for i, w in enumerate(words) if len(w) >= need]
    if len(usable) < n_choices:
        raise PplawError(f"cloze tasks need at least {n_choices} test documents of {need}+ words, found {len(usable)}")
    tasks = []
    for _ in range(n_tasks):
        picks = rng.choice(usable, size=n_choices, replace=False)
        spans = []
        for doc in picks:
            start = int(rng.integers(0, len(words[doc]) - need + 1))
            spans.append(words[doc][start : start + need])
        answer = int(rng.integers(n_choices))
        # The question is the prefix of the answer document; every choice is a continuation.
        question = " ".join(spans[0][:prefix_words])
        choices = [" " + " ".join(s[prefix_words:]) for s in spans[1:]]
        choices.insert(answer, " " + " ".join(spans[0][prefix_words:]))
        tasks.append({"question": question, "choices": choices, "answer": answer})
    return tasks
