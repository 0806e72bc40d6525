"""Streaming, sharded, resumable scoring of every chunk of a corpus with a frozen causal LM.

The pieces, from the inside out:

* :func:`make_score_fn` — the one sharded forward of the project (`models.sharded.ShardedLM`:
  the model and `models.loss.token_nll`, log-softmax in float32 whatever the compute dtype; target
  ``t+1`` predicted at position ``t``; padding masked; the start token at position 0 is never a
  target, so it is context only) under one ``jax.jit`` with explicit shardings over a ``(data,
  fsdp, tensor)`` mesh: batch rows over ``data x fsdp``, parameters by the partition rules of
  :mod:`pplaw_jax.distributed`. Shapes are fixed ``[batch_size, seq_len]``, so it compiles once.
* :func:`score_corpus` — the driver. It takes the forward as an injected ``score_fn(input_ids,
  mask) -> (sum_nll[B], n_tokens[B])`` so it can be tested against an independent computation.

Parts and resume. A host's documents (its shard, in order) are cut into parts of
``docs_per_part`` documents; part ``k`` holds the rows of documents ``[k*n, (k+1)*n)`` of that
host, and batches never straddle parts, so a part's content is a pure function of its document
range (same batches, same arithmetic, bit-identical rows). A finished part gets a ``.done`` marker
after its Parquet file is in place. On restart, parts with a marker are skipped — their documents
are read (to advance the stream, and to check that the first/last document ids and the count still
match) but not tokenized or scored — and an unfinished part is redone from scratch, whatever
partial files it left. ``run_args.json`` pins everything that defines the rows (model, data,
seq_len, dtype, fields, max_docs, docs_per_part, process_count, start token); a run with different
values on an existing directory is refused. Batch size and mesh may change between attempts (the
rows then agree to floating-point round-off rather than bit for bit).

Hosts. Each host scores only its own documents (document ``i`` of the global order goes to host
``i % process_count``) on a mesh of its *local* devices, so hosts never wait on each other while
scoring and can finish different numbers of batches. When a host has finished all its parts it
writes ``parts/host{h:03d}.done`` and waits until every host's marker exists (the output directory
must be shared between hosts); then process 0 writes ``histogram.png`` and finally
``summary.json`` from all completed parts. A host whose scoring raises writes
``parts/host{h:03d}.failed`` with the error, and the waiting hosts then stop with that error
instead of waiting forever. (A host killed outright writes nothing; under ``jax.distributed`` the
coordination service's heartbeat check ends the job.)

Memory is bounded by one tokenization group of documents plus two batches (one being filled while
the previous one runs on the device); a part's rows (a few numbers per chunk) are kept until the
part is written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import chain, islice
from typing import Any

import jax
import numpy as np

from pplaw_jax.data import Document, chunk_token_ids, iter_tokenized, pad_batch
from pplaw_jax.data.chunking import window_bytes
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import check_identity, write_json
from pplaw_jax.landscape import directory
from pplaw_jax.logs import get_logger
from pplaw_jax.logs import progress as progress_display
from pplaw_jax.paths import AnyPath, as_path

HOST_WAIT_POLL_S = 2.0

ScoreFn = Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]
"""``score_fn(input_ids int32[B, T], mask int32[B, T]) -> (sum_nll[B], n_tokens[B])``.

``mask`` is 1 on real tokens (the start token included) and 0 on right padding; the scored targets
are the positions ``t >= 1`` with ``mask[t] == 1``. May return device arrays (fetched lazily)."""


def make_score_fn(model: Any, mesh: jax.sharding.Mesh) -> ScoreFn:
    """The ``score_fn`` ``pplaw score`` uses: the one sharded forward (`models.sharded.ShardedLM`)
    over `mesh`, rows of right-padded chunks described by their length (the mask's sum)."""
    from pplaw_jax.models.sharded import ShardedLM

    lm = ShardedLM(model, mesh)
    return lambda input_ids, mask: lm.forward(input_ids, mask.sum(axis=1).astype(np.int32))


# ---------------------------------------------------------------------------------------- driver
def check_run_args(out_dir: str | os.PathLike, run_args: Mapping[str, Any]) -> None:
    """Record `run_args` in ``DIR/run_args.json``, or refuse if the directory holds another run's
    (`fileio.check_identity`). Every host may call this: the file's content does not depend on the
    host, so concurrent atomic writes of it are harmless."""
    path = as_path(out_dir) / directory.RUN_ARGS
    if not path.exists():
        (as_path(out_dir) / directory.PARTS).mkdir(parents=True, exist_ok=True)
    check_identity(
        path,
        dict(run_args),
        f"{out_dir} holds a landscape scored with different arguments "
        "({changes}); rerun with the same arguments to resume it, or choose another --out",
        sort_keys=True,
    )


def score_corpus(
    documents: Iterable[Document],
    *,
    out_dir: str | os.PathLike,
    score_fn: ScoreFn,
    encode_batch: Callable[[list[str]], list[tuple[list[int], list[int]]]],  # (ids, token start chars)
    start_id: int,
    seq_len: int,
    batch_size: int,
    run_args: Mapping[str, Any],
    process_index: int = 0,
    process_count: int = 1,
    docs_per_part: int = directory.DEFAULT_DOCS_PER_PART,
    summary_info: Mapping[str, Any] | None = None,
    progress: bool = True,
    vocab_size: int | None = None,
) -> dict[str, Any] | None:
    """Score this host's `documents` into ``out_dir``, wait for all hosts, and on process 0 write
    the summary.

    `documents` must be this host's shard (see :func:`pplaw_jax.data.iter_documents`).
    `run_args` (JSON-serialisable: model, data, dtype, fields, max_docs, ...) identifies the run;
    seq_len, docs_per_part, process_count and start_id are added to it here. `summary_info` is
    copied into ``summary.json`` (mesh, batch size, ...). Returns the summary on process 0, else None.
    A token id at or past `vocab_size` (a tokenizer that does not match the model), or a chunk whose
    summed NLL is not finite (a broken model), stops the run naming the document and chunk: such a
    row is never written as a score.
    """
    if docs_per_part < 1:
        raise PplawError(f"docs_per_part must be >= 1, got {docs_per_part}")
    if batch_size < 1:
        raise PplawError(f"batch size must be >= 1, got {batch_size}")
    if seq_len < 2:
        raise PplawError(f"seq_len must be at least 2, got {seq_len}")
    identity = {
        **run_args,
        "seq_len": seq_len,
        "docs_per_part": docs_per_part,
        "process_count": process_count,
        "start_id": start_id,
    }
    check_run_args(out_dir, identity)
    failure = directory.host_failure(out_dir, process_index)
    failure.unlink(missing_ok=True)  # from an earlier attempt
    started = time.perf_counter()
    try:
        with progress_display(f"score host {process_index}", unit="doc", disable=not progress) as bar:
            scorer = _PartScorer(score_fn, encode_batch, start_id, seq_len, batch_size, bar, vocab_size)
            host = _score_host(documents, out_dir, scorer, process_index, docs_per_part, bar)
    except BaseException as e:  # tell the other hosts not to wait for this one, then fail as usual
        write_json(failure, {"error": f"{type(e).__name__}: {e}"}, sort_keys=True)
        raise
    write_json(directory.host_marker(out_dir, process_index), host, sort_keys=True)
    # Every host waits, not only process 0: under jax.distributed a process that exits early sits in
    # the shutdown barrier, which times out (300 s by default) if the other hosts are still scoring.
    _wait_for_hosts(out_dir, process_count)
    if process_index != 0:
        return None
    summary_info = {**identity, **(summary_info or {}), "run_seconds": time.perf_counter() - started}
    return directory.write_summary(out_dir, process_count, summary_info)


def _score_host(
    documents: Iterable[Document],
    out_dir: str | os.PathLike,
    scorer: _PartScorer,
    host: int,
    docs_per_part: int,
    bar: Any,
) -> dict[str, Any]:
    """Score or skip this host's parts in order; the host's totals (for its ``.done`` marker)."""
    totals = {"parts": 0, "docs": 0, "skipped": 0, "rows": 0, "tokens": 0, "seconds": 0.0}
    it = iter(documents)
    part = 0
    while (first := next(it, None)) is not None:
        part_docs = chain([first], islice(it, docs_per_part - 1))  # islice never reads ahead
        done = directory.part_stem(out_dir, host, part).with_suffix(".done")
        if done.exists():
            marker = directory.read_json(done)
            _check_skipped_part(done, marker, part_docs)
            bar.update(marker["docs"])
        else:
            directory.discard_unfinished(out_dir, host, part)
            table, marker = scorer.score_part(part_docs)
            marker["part"] = part
            directory.write_part(out_dir, host, part, table, marker)
        for key in ("docs", "skipped", "rows", "tokens", "seconds"):
            totals[key] += marker[key]
        part += 1
    totals["parts"] = part
    return totals


def _check_skipped_part(done: AnyPath, marker: Mapping[str, Any], part_docs: Iterator[Document]) -> None:
    """Consume a finished part's documents, checking they are the ones it was scored from."""
    n = 0
    first = last = None
    for doc in part_docs:
        first = doc.doc_id if first is None else first
        last = doc.doc_id
        n += 1
    if (n, first, last) != (marker["docs"], marker["first_doc_id"], marker["last_doc_id"]):
        raise PplawError(
            f"{done}: the data changed since this part was written (it covered {marker['docs']} documents "
            f"{marker['first_doc_id']!r}..{marker['last_doc_id']!r}, the data now gives {n} documents "
            f"{first!r}..{last!r}); score into a new --out"
        )


class _PartScorer:
    """Tokenize, chunk, batch and score one part's documents; keeps one batch in flight."""

    def __init__(
        self,
        score_fn: ScoreFn,
        encode_batch,
        start_id: int,
        seq_len: int,
        batch_size: int,
        bar: Any,
        vocab_size: int | None = None,
    ):
        self.vocab_size = vocab_size
        self.score_fn = score_fn
        self.encode_batch = encode_batch
        self.start_id = start_id
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.bar = bar
        self.run_tokens = 0
        self.run_started = time.perf_counter()

    def score_part(self, part_docs: Iterable[Document]) -> tuple[Any, dict[str, Any]]:
        started = time.perf_counter()
        doc_ids: list[str] = []
        chunks: list[int] = []
        n_tokens: list[int] = []
        n_bytes: list[int] = []
        sum_nll: list[np.ndarray] = []
        seqs: list[list[int]] = []
        in_flight = None
        docs = skipped = 0
        first = last = None

        def collect(pending: tuple[np.ndarray, list, tuple[Any, Any]]) -> None:
            expected, rows, (nll, count) = pending
            count = np.asarray(count)[: len(expected)]
            if not np.array_equal(count, expected):  # the mask contract is broken: never write such rows
                raise RuntimeError(f"score_fn counted {count.tolist()} scored tokens, expected {expected.tolist()}")
            nll = np.asarray(nll, dtype=np.float64)[: len(expected)]
            bad = np.flatnonzero(~np.isfinite(nll))
            if bad.size:
                doc_id, chunk = rows[bad[0]]
                raise PplawError(
                    f"the model scores document {doc_id!r} chunk {chunk} as {nll[bad[0]]} (and "
                    f"{bad.size - 1} more chunks of its batch): non-finite logits; nothing of this "
                    "part is written (check the model's weights and dtype)"
                )
            sum_nll.append(nll)
            self._advance(int(expected.sum()))

        def dispatch() -> None:
            nonlocal in_flight
            ids, mask = pad_batch(seqs, self.batch_size, self.seq_len)
            out = self.score_fn(ids, mask)  # asynchronous for jax: the device works while we go on
            if in_flight is not None:
                collect(in_flight)
            in_flight = (
                np.asarray([len(seq) - 1 for seq in seqs]),
                list(zip(doc_ids[-len(seqs) :], chunks[-len(seqs) :])),
                out,
            )
            seqs.clear()

        for doc, (ids, starts) in iter_tokenized(part_docs, self.encode_batch):
            docs += 1
            first = doc.doc_id if first is None else first
            last = doc.doc_id
            doc_chunks = chunk_token_ids(ids, self.seq_len, self.start_id)
            skipped += not doc_chunks
            if doc_chunks:
                n_bytes += window_bytes(doc.text, starts, self.seq_len)
            if self.vocab_size is not None and doc_chunks:
                top = max(max(seq) for seq in doc_chunks)
                if top >= self.vocab_size:
                    raise PplawError(
                        f"document {doc.doc_id!r}: token id {top} is outside the model's vocabulary of "
                        f"{self.vocab_size} (the tokenizer does not belong to this model)"
                    )
            for k, seq in enumerate(doc_chunks):
                doc_ids.append(doc.doc_id)
                chunks.append(k)
                n_tokens.append(len(seq) - 1)
                seqs.append(seq)
                if len(seqs) == self.batch_size:
                    dispatch()
            self.bar.update(1)
        if seqs:
            dispatch()
        if in_flight is not None:
            collect(in_flight)
        nll = np.concatenate(sum_nll) if sum_nll else np.zeros(0)
        table = directory.part_table(doc_ids, np.asarray(chunks), np.asarray(n_tokens), nll, np.asarray(n_bytes))
        marker = {
            "docs": docs,
            "skipped": skipped,
            "rows": len(doc_ids),
            "tokens": int(sum(n_tokens)),
            "first_doc_id": first,
            "last_doc_id": last,
            "seconds": time.perf_counter() - started,
        }
        return table, marker

    def _advance(self, tokens: int) -> None:
        self.run_tokens += tokens
        rate = self.run_tokens / max(time.perf_counter() - self.run_started, 1e-9)
        self.bar.set_postfix(tokens=f"{self.run_tokens:,}", tok_s=f"{rate:,.0f}", refresh=False)


def _wait_for_hosts(out_dir: str | os.PathLike, process_count: int) -> None:
    """Block until every host has written its ``host{h}.done`` marker (shared output directory).

    PplawError as soon as a host reports a failure instead (its ``.failed`` marker).
    """
    announced = False
    while missing := [h for h in range(process_count) if not directory.host_marker(out_dir, h).exists()]:
        for h in missing:
            failure = directory.host_failure(out_dir, h)
            if failure.exists():
                error = directory.read_json(failure).get("error")
                raise PplawError(f"host {h} failed ({error}); fix the cause and rerun to resume {out_dir}")
        if not announced:
            get_logger("score").info(f"waiting for hosts {missing} to finish writing into {out_dir}")
            announced = True
        time.sleep(HOST_WAIT_POLL_S)
