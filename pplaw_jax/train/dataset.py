"""Training and evaluation sequences: selection -> token ids on disk -> a deterministic batch order.

Chunking is the one `pplaw score` uses (`pplaw_jax.data.chunk_token_ids`), so a selection row
`(doc_id, chunk)` is exactly one training sequence. The chosen chunks are tokenized once and
cached in the run directory as `.npy` arrays (`tokens` int32[N, seq_len] padded with 0, `lengths`
int32[N]), which later invocations (a resumed run) memory-map instead of re-reading the corpus.

Data order: the sample stream is the concatenation of per-epoch permutations of the N sequences,
permutation `e` drawn from `SeedSequence([seed, e])`; batch `s` is samples
`[s * batch_size, (s + 1) * batch_size)` of that stream. Batch `s` is therefore a pure function of
`(seed, s)`, which is what makes a resumed run replay exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import atomic_write, write_text
from pplaw_jax.select.io import SelectedChunks


@dataclass(frozen=True)
class TokenSequences:
    """Padded token sequences: row i is `tokens[i, :lengths[i]]` (start token first)."""

    tokens: np.ndarray  # int32 [N, seq_len]
    lengths: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def num_scored_tokens(self) -> int:
        """Tokens that are prediction targets (every token but each row's start token)."""
        return int(np.maximum(self.lengths.astype(np.int64) - 1, 0).sum())


def pack_sequences(chunks: Iterable[list[int]], seq_len: int, block_rows: int = 4096) -> TokenSequences:
    """Stack variable-length chunks (each at most seq_len ids) into padded arrays.

    Rows are written into fixed-size numpy blocks as they arrive, so peak memory is about twice
    the final arrays rather than Python lists of every token.
    """
    blocks, block_lengths = [], []
    tokens: np.ndarray  # the current block (the first chunk starts one: row == block_rows)
    lengths: np.ndarray
    row = block_rows
    for ids in chunks:
        if len(ids) > seq_len:
            raise ValueError(f"chunk of {len(ids)} tokens exceeds seq_len={seq_len}")
        if row == block_rows:
            tokens, lengths, row = np.zeros((block_rows, seq_len), np.int32), np.zeros(block_rows, np.int32), 0
            blocks.append(tokens)
            block_lengths.append(lengths)
        tokens[row, : len(ids)] = ids
        lengths[row] = len(ids)
        row += 1
    if not blocks:
        return TokenSequences(np.zeros((0, seq_len), np.int32), np.zeros(0, np.int32))
    blocks[-1], block_lengths[-1] = blocks[-1][:row], block_lengths[-1][:row]
    return TokenSequences(np.concatenate(blocks), np.concatenate(block_lengths))


def build_sequences(
    spec: str,
    tokenizer,
    seq_len: int,
    *,
    selection: SelectedChunks | None = None,
    text_field: str = "text",
    id_field: str = "id",
    max_docs: int | None = None,
) -> TokenSequences:
    """All chunks of corpus `spec`, or only the selected ones, in corpus order.

    With a selection, every row must be found, with the same scored-token count the landscape
    recorded (a mismatch means the landscape was scored with another tokenizer or seq_len);
    PplawError names a few offending rows otherwise. Every host reads the whole corpus: the
    global batch order needs every sequence, and each host then loads only its own rows.
    """
    from pplaw_jax.data import iter_chunks

    if selection is None:
        chunks = iter_chunks(spec, tokenizer, seq_len, text_field=text_field, id_field=id_field, max_docs=max_docs)
        seqs = pack_sequences((c.token_ids for c in chunks), seq_len)
        if len(seqs) == 0:
            raise PplawError(f"{spec}: no non-empty documents to train or evaluate on")
        return seqs

    expected = {(d, int(c)): int(n) for d, c, n in zip(selection.doc_ids, selection.chunks, selection.n_tokens)}
    wanted: dict[str, set[int]] = {}
    for d, c in expected:
        wanted.setdefault(d, set()).add(c)
    mismatched = []

    def selected():
        for chunk in iter_chunks(
            spec, tokenizer, seq_len, text_field=text_field, id_field=id_field, max_docs=max_docs, wanted=wanted
        ):
            n = expected.pop((chunk.doc_id, chunk.chunk), None)
            if n is None:  # a repeated document id: its first occurrence was the one scored
                continue
            if n != len(chunk.token_ids) - 1:
                mismatched.append(
                    f"({chunk.doc_id!r}, chunk {chunk.chunk}): selection n_tokens={n}, "
                    f"data gives {len(chunk.token_ids) - 1}"
                )
            yield chunk.token_ids

    seqs = pack_sequences(selected(), seq_len)
    if expected:
        examples = ", ".join(f"({d!r}, chunk {c})" for d, c in list(expected)[:5])
        raise PplawError(
            f"{selection.path}: {len(expected)} of {len(selection)} selected rows are not in {spec}, e.g. {examples} "
            f"(wrong --data, --seq-len or model/tokenizer?)"
        )
    if mismatched:
        raise PplawError(
            f"{selection.path}: {len(mismatched)} selected chunks have a different token count in {spec} "
            f"(was the landscape scored with another tokenizer or --seq-len?), e.g. " + "; ".join(mismatched[:3])
        )
    return seqs


def fingerprint(**fields) -> str:
    """A short hash of the inputs that determine a cached dataset."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_sequences(cache_dir: str | os.PathLike, name: str, key: str, build) -> TokenSequences:
    """Load `cache_dir/name.*.npy` if its stored key matches, else `build()` and save atomically.

    The key file is written last, after both arrays have been renamed into place, so a cache
    interrupted mid-write is rebuilt rather than trusted.
    """
    cache = Path(cache_dir)
    key_path, tok_path, len_path = (cache / f"{name}.{s}" for s in ("key.json", "tokens.npy", "lengths.npy"))
    if key_path.is_file() and json.loads(key_path.read_text()).get("key") == key:
        return TokenSequences(np.load(tok_path, mmap_mode="r"), np.load(len_path))
    seqs = build()
    cache.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)
    for path, arr in ((tok_path, seqs.tokens), (len_path, seqs.lengths)):
        atomic_write(path, functools.partial(_save_npy, arr=arr))
    write_text(key_path, json.dumps({"key": key, "sequences": len(seqs), "tokens": seqs.num_scored_tokens}))
    return seqs


def _save_npy(path: Path, arr: np.ndarray) -> None:
    # Through a file object: given a name, np.save would append ".npy" to the temporary name.
    with open(path, "wb") as f:
        np.save(f, arr)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(n)


def batch_indices(seed: int, step: int, batch_size: int, num_sequences: int) -> np.ndarray:
    """Row indices of batch `step`: a pure function of (seed, step), see the module docstring."""
    pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, within = np.divmod(pos, num_sequences)
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        out[sel] = _epoch_permutation(seed, int(e), num_sequences)[within[sel]]
    return out


def eval_batches(num_sequences: int, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices covering all sequences once, in order; the last batch is padded with -1."""
    for start in range(0, num_sequences, batch_size):
        idx = np.arange(start, start + batch_size, dtype=np.int64)
        idx[idx >= num_sequences] = -1
        yield idx


def gather(seqs: TokenSequences, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids [len(idx), seq_len], lengths) for row indices; index -1 gives an empty row."""
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    rows, inverse = np.unique(safe, return_inverse=True)  # one sorted read of a memory map
    tokens = np.asarray(seqs.tokens[rows])[inverse]
    input_ids = np.where(valid[:, None], tokens, 0).astype(np.int32)
    lengths = np.where(valid, seqs.lengths[safe], 0).astype(np.int32)
    return input_ids, lengths
