"""lm-evaluation-harness on a pplaw model: an lm-eval `LM` over the JAX decoder, and task running.

`PplawLM` answers lm-eval's `loglikelihood` and `loglikelihood_rolling` requests, so every
log-likelihood task of the harness (multiple choice, perplexity) runs on a pplaw checkpoint; it
is registered with lm-eval as model ``pplaw`` (`lm_eval.simple_evaluate(model="pplaw",
model_args="model=RUN/hf")` once this module is imported). Generation (`generate_until`) is not
implemented: pplaw scores text, it does not sample it.

Tokenisation is `pplaw eval`'s (`train.evaluate`), which follows the harness's HF model: trailing
whitespace of the context moves to the continuation, the pair is tokenized whole and the
continuation is what follows the context's own tokens; an over-long input loses its oldest tokens
to fit the window. One difference from the HF model, kept for the project's convention (every
sequence starts with the document-start token, as in scoring and training): the start token (BOS,
else EOS, lm-eval's `prefix_token_id` rule) leads every request, not only those with an empty
context, so a choice scored here and by `pplaw eval` gets the same log-likelihood. The window is
`max_length` tokens *including* the start token and the scored tokens (pplaw's sequence length),
and rolling log-likelihoods use lm-eval's own window split with that length.

Requests that differ only in their last token (one-token answers such as " yes" / " no" or
" A" ... " D" after the same prompt) share one forward pass, as in lm-eval's HF model. Rows are
sorted by length and padded to fixed batches of power-of-two lengths
(`train.evaluate.batched_apply`), so the jitted scorer compiles once per length bucket.

This module imports lm_eval at import time; `pplaw eval` imports it only for `--lm-eval-tasks`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import lm_eval
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from lm_eval import utils as lm_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from pplaw_jax.errors import PplawError
from pplaw_jax.logs import get_logger, progress
from pplaw_jax.models.loading import LoadedModel
from pplaw_jax.models.loss import next_token_nll
from pplaw_jax.models.sharded import ShardedLM, data_parallel_size, shared_jit
from pplaw_jax.paths import is_url, localize
from pplaw_jax.train.evaluate import Request, batched_apply, encode_pair, truncated_request, wilson_interval

MODEL_NAME = "pplaw"
DEFAULT_MESH = "data=-1,fsdp=1,tensor=1"
MODEL_ARGS = ("model", "batch_size", "max_length", "dtype", "mesh")
IGNORED_ARGS = ("device", "max_batch_size")  # lm-eval passes these; the mesh places the model
BINARY_METRICS = ("acc", "acc_norm", "acc_bytes", "exact_match")  # per-document 0/1: Wilson intervals


class GenerationUnsupported(PplawError, NotImplementedError):
    """A generation task reached the adapter (pplaw scores log-likelihoods only)."""


class _Scorer(ShardedLM):
    """ShardedLM plus one jitted scorer for rows that stand for requests differing in their last token.

    A row is a request's tokens; `candidates [B, K]` are the last tokens of the requests it stands
    for. Per row it returns the summed NLL of the scored targets before the last one and whether
    each of them is the argmax (shared by the row's requests), the log-probabilities of the K
    candidates at the last position, and that position's argmax. One forward pass thus scores
    " yes" / " no" / " maybe" after one prompt, as lm-eval's HF model does for one-token choices.
    """

    def __init__(self, model: nnx.Module, mesh):
        super().__init__(model, mesh)
        graphdef, replicated = self.graphdef, NamedSharding(mesh, P())

        def score(params, rest, input_ids, lengths, first, candidates):
            logits = nnx.merge(graphdef, params, rest)(input_ids)
            j = jnp.arange(1, input_ids.shape[1])[None, :]  # target j, as in models.loss.token_nll
            shared = (j >= first[:, None]) & (j < lengths[:, None] - 1)
            shared_nll, _ = next_token_nll(logits, input_ids, shared)
            hits = jnp.argmax(logits[:, :-1], axis=-1) == input_ids[:, 1:]
            last = jnp.take_along_axis(logits, jnp.maximum(lengths - 2, 0)[:, None, None], axis=1)[:, 0]
            last = last.astype(jnp.float32)
            logp = last - jax.nn.logsumexp(last, axis=-1, keepdims=True)
            return (
                shared_nll,
                jnp.all(hits | ~shared, axis=1),
                jnp.take_along_axis(logp, candidates, axis=1),
                jnp.argmax(last, axis=-1).astype(jnp.int32),
            )

        rows, toks = self.rows_sharding, self.tokens_sharding
        # Replicated outputs: every host reads them from its own devices.
        self._score = shared_jit(
            ("lm_eval_score", *self.state_key),
            score,
            in_shardings=(self.param_shardings, self.rest_shardings, toks, rows, rows, toks),
            out_shardings=(replicated,) * 4,
        )

    def score(self, input_ids, lengths, first, candidates) -> tuple[np.ndarray, ...]:
        """(shared_nll [B], shared_greedy [B], candidate_logp [B, K], last_argmax [B]) as numpy."""
        out = self._score(
            self.params, self.rest, self.put(input_ids), self.put(lengths), self.put(first), self.put(candidates)
        )
        return tuple(np.asarray(x.addressable_data(0)) for x in out)

    def loglikelihoods(self, shared: SharedRows, batch_size: int, max_length: int, progress=None):
        """(log-likelihood float64, greedy bool) of each request behind `shared`, in request order."""
        shared_nll, shared_greedy, cand_logp, last_argmax = batched_apply(
            self.score, shared.rows, batch_size, max_length, progress, extras=(shared.candidates,)
        )
        n = sum(len(m) for m in shared.members)
        logliks, greedy = np.zeros(n), np.zeros(n, dtype=bool)
        for g, members in enumerate(shared.members):
            for c, i in enumerate(members):
                logliks[i] = float(cand_logp[g, c]) - float(shared_nll[g])
                greedy[i] = bool(shared_greedy[g]) and int(last_argmax[g]) == int(shared.candidates[g, c])
        return logliks, greedy


@dataclass
class SharedRows:
    """Requests grouped by all their tokens but the last (and their first scored position).

    `rows[g]` is the first request of group g, `members[g]` the indices of its requests, and
    `candidates[g, c]` the last token of request `members[g][c]` (padded with 0 up to the largest
    group, so every batch has the same shape).
    """

    rows: list[Request]
    members: list[list[int]]
    candidates: np.ndarray

    @classmethod
    def of(cls, requests: list[Request]) -> SharedRows:
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault((req.ids[:-1], req.first), []).append(i)
        members = list(groups.values())
        candidates = np.zeros((len(members), max(len(m) for m in members)), dtype=np.int32)
        for g, m in enumerate(members):
            candidates[g, : len(m)] = [requests[i].ids[-1] for i in m]
        return cls([requests[m[0]] for m in members], members, candidates)


def _positive_int(name: str, value) -> int:
    """An lm-eval model argument that must be a positive integer (they arrive as strings or numbers)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PplawError(f"model argument {name}={value!r} must be a positive integer") from None
    if number < 1 or number != float(value):
        raise PplawError(f"model argument {name}={value!r} must be a positive integer")
    return number


@register_model(MODEL_NAME)
class PplawLM(LM):
    """lm-eval `LM` over a loaded pplaw model placed on a device mesh.

    `batch_size` rows per forward pass (a multiple of the mesh's data x fsdp size); `max_length`
    tokens per sequence, start token included (default: the model's context, at most 2048).
    """

    def __init__(self, loaded: LoadedModel, mesh, batch_size: int = 8, max_length: int | None = None):
        super().__init__()
        context = loaded.config.max_position_embeddings
        self.max_length = max_length or min(context, 2048)
        if not 2 <= self.max_length <= context:
            raise PplawError(f"max_length {self.max_length} must be in [2, {context}] (the model's context)")
        if batch_size < 1 or batch_size % data_parallel_size(mesh):
            raise PplawError(
                f"batch size {batch_size} is not a positive multiple of the data x fsdp mesh size "
                f"{data_parallel_size(mesh)}"
            )
        self.batch_size = batch_size
        self.tokenizer = loaded.tokenizer
        self.source = loaded.source
        self._scorer = _Scorer(loaded.model, mesh)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> PplawLM:
        """From lm-eval's ``--model_args`` string, e.g. ``model=RUN/hf,batch_size=8,dtype=bfloat16``."""
        return cls.create_from_arg_obj(lm_utils.simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> PplawLM:
        """Load `model` (any `pplaw_jax.models.load_model` spec) with `dtype`, on `mesh`; see MODEL_ARGS."""
        from pplaw_jax.distributed import make_mesh
        from pplaw_jax.models import load_model

        # lm-eval's own settings (--batch_size, --device) fill in what model_args leave out
        args = {**{k: v for k, v in (additional_config or {}).items() if v is not None}, **arg_dict}
        unknown = sorted(set(args) - set(MODEL_ARGS) - set(IGNORED_ARGS))
        if unknown:
            raise PplawError(
                f"unknown model argument(s) {', '.join(unknown)} for model {MODEL_NAME!r} "
                f"(known: {', '.join(MODEL_ARGS)})"
            )
        if not args.get("model"):
            raise PplawError(
                f"model {MODEL_NAME!r} needs model=PATH (an HF checkpoint directory, a .gguf file or a known name)"
            )
        loaded = load_model(str(args["model"]), dtype=str(args.get("dtype", "float32")))
        max_length = args.get("max_length")
        return cls(
            loaded,
            make_mesh(str(args.get("mesh", DEFAULT_MESH))),
            batch_size=_positive_int("batch_size", args.get("batch_size", 8)),
            max_length=None if max_length is None else _positive_int("max_length", max_length),
        )

    # ------------------------------------------------------------------ lm-eval requests
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log P(continuation | context), whether greedy decoding gives the continuation) per request."""
        start = self.tokenizer.doc_start_id
        built, cut = [], 0
        for request in requests:
            context, continuation = request.args
            context_ids, continuation_ids = encode_pair(self.tokenizer, context, continuation)
            if not continuation_ids:
                raise PplawError(f"lm-eval request: continuation {continuation!r} encodes to no tokens")
            cut += 1 + len(context_ids) + len(continuation_ids) > self.max_length
            built.append(truncated_request(start, context_ids, continuation_ids, self.max_length))
        if cut:
            get_logger("eval").warning(
                f"{cut} of {len(requests)} lm-eval requests were longer than max_length "
                f"{self.max_length} and lost the start of their context (as lm-eval's HF model)"
            )
        logliks, greedy = self._run(built, "loglikelihood", disable_tqdm)
        return [(float(ll), bool(g)) for ll, g in zip(logliks, greedy)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole string, after the start token, in lm-eval's disjoint windows."""
        start = self.tokenizer.doc_start_id
        built, owner = [], []
        for k, request in enumerate(requests):
            (text,) = request.args
            windows = lm_utils.get_rolling_token_windows(
                token_list=self.tokenizer.encode(text), prefix_token=start,
                max_seq_len=self.max_length - 1, context_len=1,
            )  # fmt: skip
            for context, continuation in map(lm_utils.make_disjoint_window, windows):
                built.append(Request(tuple(context + continuation), len(context)))
                owner.append(k)
        logliks, _ = self._run(built, "loglikelihood_rolling", disable_tqdm)
        totals = np.zeros(len(requests), dtype=np.float64)
        np.add.at(totals, np.asarray(owner, dtype=np.int64), logliks)
        return totals.tolist()

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise GenerationUnsupported(
            f"model {MODEL_NAME!r} does not generate text (generate_until); use log-likelihood tasks "
            "(output_type multiple_choice, loglikelihood or loglikelihood_rolling)"
        )

    def _run(self, built: list[Request], what: str, disable_tqdm: bool) -> tuple[np.ndarray, np.ndarray]:
        """(log-likelihood, greedy) of each request, in order."""
        if not built:
            return np.zeros(0), np.zeros(0, dtype=bool)
        shared = SharedRows.of(built)
        hide = disable_tqdm or jax.process_index() != 0
        with progress(what, total=len(shared.rows), unit="seq", disable=hide) as bar:
            return self._scorer.loglikelihoods(shared, self.batch_size, self.max_length, progress=bar.update)

    def get_model_info(self) -> dict:
        """What lm-eval records under results["config"]."""
        return {"model_source": self.source, "max_length": self.max_length, "batch_size": self.batch_size}


# ---------------------------------------------------------------------- tasks and results
@dataclass
class Suite:
    """Requested lm-eval task names, checked, with the task manager that resolves them."""

    names: list[str]
    include: str | None
    manager: object  # lm_eval.tasks.TaskManager


def load_suite(names: list[str], include: str | None = None) -> Suite:
    """Resolve task, group or tag names in `include` (a directory of task YAMLs) and lm-eval's own tasks.

    lm-eval's ~15,000 built-in task files take seconds to index, so they are indexed only when a
    name is not found in `include`. Every task is built here once as a check (its documents read;
    `simple_evaluate` builds them again from the same manager) and generation tasks are refused,
    so a bad name, unreadable data or an unsupported task fails with one message before any model
    work.
    """
    from lm_eval.tasks import TaskManager

    if not names:
        raise PplawError("--lm-eval-tasks names no task")
    if include is not None:
        if is_url(include):  # lm-eval reads its task YAMLs (and their data files) locally
            include = str(localize(include))
        if not os.path.isdir(include):
            raise PplawError(f"{include}: no such directory (--lm-eval-include)")
        include = os.path.abspath(include)
        manager = TaskManager(include_path=include, include_defaults=False)
        if not set(names) <= set(manager.all_tasks):
            manager = TaskManager(include_path=include)
    else:
        manager = TaskManager()
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        where = (
            f"{include} or lm-eval's built-in tasks" if include else "lm-eval's built-in tasks (no --lm-eval-include)"
        )
        raise PplawError(f"unknown lm-eval task(s) {', '.join(unknown)}: not in {where}")
    try:
        loaded = manager.load(list(names))
    except Exception as e:  # lm-eval and datasets raise many types for a bad task file or data file
        raise PplawError(f"cannot load lm-eval task(s) {', '.join(names)}: {' '.join(str(e).split())}") from e
    generating = sorted(n for n, t in loaded["tasks"].items() if t.OUTPUT_TYPE == "generate_until")
    if generating:
        raise PplawError(
            f"lm-eval task(s) {', '.join(generating)} generate text (generate_until); "
            "pplaw evaluates log-likelihood tasks only"
        )
    return Suite(list(names), include, manager)


def _metrics(raw: dict) -> dict:
    """lm-eval's `{"acc,none": x, "acc_stderr,none": s, "alias": ...}` as `{"acc": x, "acc_stderr": s}`."""
    return {k.removesuffix(",none"): v for k, v in raw.items() if k not in ("alias", "name", "sample_len")}


def evaluate_suite(lm: PplawLM, suite: Suite, limit: int | None = None, num_fewshot: int | None = None) -> dict:
    """Run the suite with `lm_eval.simple_evaluate`; per-task metrics, 95% Wilson intervals, examples.

    Per task: lm-eval's metrics (for multiple choice `acc` and `acc_norm`, each with lm-eval's
    `_stderr`), `n` documents, `<metric>_ci95` Wilson intervals for 0/1 metrics, `num_fewshot`,
    the task `version`, and per document the target and the log-likelihood of each request.
    Groups carry lm-eval's aggregated metrics. `limit` evaluates the first N documents of each task;
    `num_fewshot` overrides the tasks' own few-shot setting (lm-eval's `--num_fewshot`).
    """
    results = lm_eval.simple_evaluate(
        model=lm, tasks=suite.names, task_manager=suite.manager, limit=limit, num_fewshot=num_fewshot,
        log_samples=True,
    )  # fmt: skip
    tasks = {}
    for name, samples in sorted(results["samples"].items()):
        entry = {"n": len(samples), **_metrics(results["results"][name])}
        for metric in BINARY_METRICS:
            values = [s[metric] for s in samples if metric in s]
            if values and len(values) == len(samples) and set(values) <= {0, 1}:
                entry[f"{metric}_ci95"] = list(wilson_interval(int(sum(values)), len(values)))
        entry["num_fewshot"] = results["n-shot"].get(name)
        entry["version"] = results["versions"].get(name)
        entry["examples"] = [
            {
                "doc_id": s["doc_id"],
                "target": s["target"],
                "logliks": [r[0] if isinstance(r, (list, tuple)) else r for r in s["filtered_resps"]],
            }
            for s in samples
        ]
        tasks[name] = entry
    groups = {name: _metrics(raw) for name, raw in sorted(results.get("groups", {}).items())}
    return {
        "model": lm.source,
        "lm_eval_version": lm_eval.__version__,
        "include": suite.include,
        "requested": suite.names,
        "max_length": lm.max_length,
        "limit": limit,
        "num_fewshot": num_fewshot,
        "ci_method": "wilson score interval, 95%",
        "tasks": tasks,
        "groups": groups,
    }
