"""Evaluation: mean token loss over a corpus, and multiple-choice accuracy by log-likelihood.

Multiple choice follows lm-evaluation-harness' log-likelihood protocol. A task row is
`{"question", "choices": [...], "answer": index}` with an optional `"context"`; the prompt is
`context + "\\n\\n" + question` (or just `question`) and each choice is appended *verbatim*, so a
task states its own formatting (a leading space on the choices, a "Question: ... Answer:" frame).
As in the harness, trailing whitespace of the prompt moves to the front of the continuation, the
pair is tokenized whole and the continuation is the tokens after the prompt's own tokenization;
the sequence starts with the tokenizer's document start token, and over-long prompts are cut from
the left. A choice's score is the summed log-probability of its tokens:
- `acc`: the highest raw log-likelihood is the prediction;
- `acc_norm`: log-likelihood divided by the choice's UTF-8 byte length (the harness's length
  normalisation), which removes the bias toward short answers.
Each accuracy comes with a 95% Wilson score interval (binomial, over examples).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.paths import as_path


@dataclass(frozen=True)
class Task:
    """One multiple-choice question; `line` is its 1-based line in the task file."""

    prompt: str
    choices: tuple[str, ...]
    answer: int
    line: int


def read_tasks(path: str | os.PathLike, max_examples: int | None = None) -> list[Task]:
    """Parse a task JSONL file; PplawError naming `file:line` for any malformed row."""
    tasks = []
    try:
        with as_path(path).open("rb") as f:
            raw_lines = f.read().splitlines()
    except OSError as e:
        raise PplawError(f"{path}: cannot read task file ({e.strerror or e})") from e
    for lineno, raw in enumerate(raw_lines, 1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PplawError(f"{where}: not valid UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise PplawError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise PplawError(f"{where}: expected a JSON object")
        question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
        context = row.get("context")
        if not isinstance(question, str):
            raise PplawError(f"{where}: 'question' must be a string")
        if context is not None and not isinstance(context, str):
            raise PplawError(f"{where}: 'context' must be a string when present")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise PplawError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise PplawError(f"{where}: 'answer' must be an integer index into 'choices' (0..{len(choices) - 1})")
        prompt = f"{context}\n\n{question}" if context else question
        tasks.append(Task(prompt, tuple(choices), answer, lineno))
        if max_examples is not None and len(tasks) >= max_examples:
            break
    if not tasks:
        raise PplawError(f"{path}: no tasks")
    return tasks


def encode_pair(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids) as lm-evaluation-harness splits them (see module docstring)."""
    n_spaces = len(prompt) - len(prompt.rstrip())
    if n_spaces:
        prompt, continuation = prompt[:-n_spaces], prompt[-n_spaces:] + continuation
    whole = tokenizer.encode(prompt + continuation)
    context = tokenizer.encode(prompt)
    return context, whole[len(context) :]


@dataclass(frozen=True)
class Request:
    """A token sequence whose tokens `first..len(ids)-1` are the scored continuation."""

    ids: tuple[int, ...]
    first: int


def truncated_request(start: int, context: Sequence[int], continuation: Sequence[int], max_length: int) -> Request:
    """`[start] + (context + continuation)`, cut from the left to `max_length` tokens, continuation scored.

    As lm-evaluation-harness truncates for its HF model: the prompt loses its oldest tokens first,
    and a continuation longer than the window keeps only its last `max_length - 1` tokens.
    """
    body = (list(context) + list(continuation))[-(max_length - 1) :]
    n_cont = min(len(continuation), len(body))
    return Request(tuple([start] + body), 1 + len(body) - n_cont)


def build_requests(tasks: Sequence[Task], tokenizer, max_length: int, source: str = "tasks") -> list[Request]:
    """One request per (task, choice), in order; the start token leads, prompts are left-truncated.

    `source` (the task file) prefixes error messages as `source:line`.
    """
    start = tokenizer.doc_start_id
    requests = []
    for task in tasks:
        for choice in task.choices:
            context, continuation = encode_pair(tokenizer, task.prompt, choice)
            if not continuation:
                raise PplawError(f"{source}:{task.line}: choice {choice!r} encodes to no tokens")
            requests.append(truncated_request(start, context, continuation, max_length))
    return requests


def bucket_length(n: int, max_length: int, minimum: int = 16) -> int:
    """Padded length for a sequence of n tokens: the next power of two (few distinct jit shapes)."""
    return min(max(minimum, 1 << (n - 1).bit_length()), max_length)


def batched_apply(
    fn: Callable[..., tuple[np.ndarray, ...]],
    requests: Sequence[Request],
    batch_size: int,
    max_length: int,
    progress: Callable[[int], None] | None = None,
    extras: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, ...]:
    """Run `fn(input_ids [B, T], lengths [B], first [B], *extras) -> per-row outputs` over all requests.

    Batches have a fixed `batch_size` rows (the last is padded with empty rows); requests are sorted
    by length so each batch pads little, and lengths are bucketed to powers of two so a jitted `fn`
    compiles once per bucket. `extras` are per-request arrays (leading axis: requests) batched the
    same way. Returns each output (leading axis: rows) as an array in request order.
    """
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].ids))
    outs: list[np.ndarray] | None = None
    for b in range(0, len(order), batch_size):
        rows = order[b : b + batch_size]
        t = bucket_length(len(requests[rows[0]].ids), max_length)
        ids = np.zeros((batch_size, t), dtype=np.int32)
        lengths = np.zeros(batch_size, dtype=np.int32)
        first = np.ones(batch_size, dtype=np.int32)
        for r, i in enumerate(rows):
            req = requests[i]
            ids[r, : len(req.ids)] = req.ids
            lengths[r], first[r] = len(req.ids), req.first
        side = []
        for extra in extras:
            batch_extra = np.zeros((batch_size,) + extra.shape[1:], dtype=extra.dtype)
            batch_extra[: len(rows)] = extra[rows]
            side.append(batch_extra)
        batch = [np.asarray(x) for x in fn(ids, lengths, first, *side)]
        if outs is None:
            outs = [np.zeros((len(requests),) + x.shape[1:], dtype=x.dtype) for x in batch]
        for out, x in zip(outs, batch):
            out[rows] = x[: len(rows)]
        if progress is not None:
            progress(len(rows))
    return tuple(outs or ())


def score_requests(
    nll_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    requests: Sequence[Request],
    batch_size: int,
    max_length: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Log-likelihood (nats, float64) of each request's continuation.

    `nll_fn(input_ids [B, T], lengths [B], first [B]) -> (sum_nll [B], n_tokens [B])`, run by
    `batched_apply`.
    """
    if not requests:
        return np.zeros(0, dtype=np.float64)
    sum_nll, _ = batched_apply(nll_fn, requests, batch_size, max_length, progress)
    return -sum_nll.astype(np.float64)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy's ``binomtest``; default 95%)."""
    from scipy import stats

    if n == 0:
        return (float("nan"), float("nan"))
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def mc_metrics(tasks: Sequence[Task], logliks: np.ndarray, source: str = "tasks") -> dict:
    """acc and acc_norm with 95% Wilson intervals, plus per-example predictions.  A choice whose
    log-likelihood is not finite (a broken model) is an error naming the task, never a coin flip."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(logliks, dtype=np.float64)))
    if bad.size:
        k = 0
        for task in tasks:
            if k <= bad[0] < k + len(task.choices):
                raise PplawError(
                    f"{source}:{task.line}: choice {bad[0] - k} has log-likelihood {logliks[bad[0]]} "
                    f"(and {bad.size - 1} more choices): the model's logits are not finite; no "
                    "accuracy is computed"
                )
            k += len(task.choices)
    examples, k = [], 0
    correct = correct_norm = 0
    for task in tasks:
        ll = np.asarray(logliks[k : k + len(task.choices)])
        k += len(task.choices)
        nbytes = np.array([len(c.encode("utf-8")) for c in task.choices], dtype=np.float64)
        pred, pred_norm = int(np.argmax(ll)), int(np.argmax(ll / nbytes))
        correct += pred == task.answer
        correct_norm += pred_norm == task.answer
        examples.append(
            {"line": task.line, "answer": task.answer, "pred": pred, "pred_norm": pred_norm, "logliks": ll.tolist()}
        )
    n = len(tasks)
    return {
        "n": n,
        "acc": correct / n,
        "acc_ci95": list(wilson_interval(correct, n)),
        "acc_norm": correct_norm / n,
        "acc_norm_ci95": list(wilson_interval(correct_norm, n)),
        "ci_method": "wilson score interval, 95%",
        "examples": examples,
    }
