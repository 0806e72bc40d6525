"""Chunking contract shared by scoring and training, plus padding of chunks into fixed-shape batches.

Each document is tokenized without special tokens and cut into consecutive windows of at most
``seq_len - 1`` tokens; chunk ``k`` is ``[start_id] + window_k`` where ``start_id`` is the tokenizer's
BOS if it has one, else its EOS (the lm-evaluation-harness convention). Every window token is a
scored target; the start token is context only. A ``(doc_id, chunk)`` landscape row therefore maps
to exactly one sequence of at most ``seq_len`` tokens, which :func:`iter_chunks` rebuilds.
Documents that tokenize to nothing have no chunks (the scorer counts them as skipped).

A chunk's text is the document's characters from its window's first token up to the next window's
first token (the first window from the document's start, the last to its end), so the chunks
partition the document and their UTF-8 byte counts (`window_bytes`) add up to the document's:
bits per byte, ``sum_nll / ln 2 / bytes``, compares models with different tokenizers. (A character
split over several tokens, as byte-level BPE splits rare ones, counts where its first token is: a
window lying inside one such character has 0 bytes.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol, TypeVar

import numpy as np

from pplaw_jax.data.readers import Document, iter_documents
from pplaw_jax.errors import PplawError

TOKENIZE_GROUP_DOCS = 64
TOKENIZE_GROUP_CHARS = 1_000_000


class TokenizerLike(Protocol):
    """What chunking needs from a tokenizer (pplaw_jax.models.Tokenizer satisfies it)."""

    doc_start_id: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


class Chunk(NamedTuple):
    """One scored sequence: ``token_ids[0]`` is the start token, the rest are the window."""

    doc_id: str
    chunk: int
    token_ids: list[int]


def chunk_token_ids(ids: Sequence[int], seq_len: int, start_id: int) -> list[list[int]]:
    """Cut a document's token ids into ``[start_id] + window`` sequences of at most ``seq_len``."""
    if seq_len < 2:
        raise PplawError(f"seq_len must be at least 2 (a start token and one scored token), got {seq_len}")
    window = seq_len - 1
    return [[start_id, *ids[i : i + window]] for i in range(0, len(ids), window)]


def window_bytes(text: str, starts: Sequence[int], seq_len: int) -> list[int]:
    """UTF-8 bytes of each window of `chunk_token_ids(ids, seq_len, ...)`, given each token's
    start character in `text`; the windows' texts partition `text` (module docstring)."""
    window = seq_len - 1
    bounds = [0, *(starts[i] for i in range(window, len(starts), window)), len(text)]
    return [len(text[a:b].encode("utf-8")) for a, b in zip(bounds[:-1], bounds[1:])]


EncodedT = TypeVar("EncodedT")  # what a tokenizer gives for one text


def iter_tokenized(
    documents: Iterable[Document],
    encode_batch: Callable[[list[str]], list[EncodedT]],
    group_docs: int = TOKENIZE_GROUP_DOCS,
    group_chars: int = TOKENIZE_GROUP_CHARS,
) -> Iterator[tuple[Document, EncodedT]]:
    """Tokenize a document stream in groups (batched encoding is much faster), keeping order: each
    document with what `encode_batch` gives for it (its token ids, or ids with their start characters).

    A group closes at ``group_docs`` documents or once it holds ``group_chars`` characters, so
    memory stays bounded even for book-length documents, and a finite prefix of an endless stream
    is tokenized as soon as it has arrived.
    """
    group: list[Document] = []
    chars = 0
    for doc in documents:
        group.append(doc)
        chars += len(doc.text)
        if len(group) >= group_docs or chars >= group_chars:
            yield from zip(group, encode_batch([d.text for d in group]))
            group, chars = [], 0
    if group:
        yield from zip(group, encode_batch([d.text for d in group]))


def iter_chunks(
    spec: str,
    tokenizer: TokenizerLike,
    seq_len: int,
    *,
    text_field: str = "text",
    id_field: str = "id",
    process_index: int = 0,
    process_count: int = 1,
    max_docs: int | None = None,
    wanted: Mapping[str, Collection[int]] | None = None,
) -> Iterator[Chunk]:
    """Materialise the chunks of a corpus exactly as ``pplaw score`` defined them.

    With ``wanted`` ({doc_id: chunk indices}, e.g. from a selection table), only those documents are
    tokenized and only those chunks yielded; the other documents are read but not tokenized.
    Arguments other than ``tokenizer``/``wanted`` must match the ones the landscape was scored with
    (they define document ids and windows).
    """
    docs: Iterable[Document] = iter_documents(
        spec,
        text_field=text_field,
        id_field=id_field,
        process_index=process_index,
        process_count=process_count,
        max_docs=max_docs,
    )
    if wanted is not None:
        docs = (d for d in docs if d.doc_id in wanted)
    for doc, ids in iter_tokenized(docs, tokenizer.encode_batch):
        keep = None if wanted is None else wanted[doc.doc_id]
        for k, token_ids in enumerate(chunk_token_ids(ids, seq_len, tokenizer.doc_start_id)):
            if keep is None or k in keep:
                yield Chunk(doc.doc_id, k, token_ids)


def pad_batch(
    sequences: Sequence[Sequence[int]], batch_size: int, seq_len: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad up to ``batch_size`` sequences to ``[batch_size, seq_len]``.

    Returns ``(input_ids int32, mask int32)`` where ``mask`` is 1 on real tokens (start token
    included) and 0 on padding; rows beyond ``len(sequences)`` are all padding (mask 0), so a short
    final batch keeps the compiled shape and its dummy rows score nothing.
    """
    if len(sequences) > batch_size:
        raise ValueError(f"{len(sequences)} sequences do not fit a batch of {batch_size}")
    input_ids = np.full((batch_size, seq_len), pad_id, dtype=np.int32)
    mask = np.zeros((batch_size, seq_len), dtype=np.int32)
    for row, seq in enumerate(sequences):
        if len(seq) > seq_len:
            raise ValueError(f"sequence of length {len(seq)} exceeds seq_len {seq_len}")
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask
