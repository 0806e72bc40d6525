"""A small tokenizer facade over transformers fast tokenizers and raw `tokenizers.Tokenizer`s.

Encoding never adds special tokens: the chunking convention (`data.chunking`, README "Chunking") prepends the
document-start token itself. Encoding goes through the Rust `tokenizers` backend when there is
one (batch-parallel, and no transformers max-length warnings on long documents).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pplaw_jax.errors import PplawError

ENDOFTEXT = "<|endoftext|>"


class Tokenizer:
    """Wraps a transformers tokenizer (`PreTrainedTokenizerBase`) or a raw `tokenizers.Tokenizer`.

    For a raw tokenizer, `bos_id`/`eos_id` say which ids are BOS/EOS (it has no such notion);
    for a transformers tokenizer they default to its `bos_token_id`/`eos_token_id`.
    """

    def __init__(self, tokenizer, *, bos_id: int | None = None, eos_id: int | None = None):
        import tokenizers

        self._backend: tokenizers.Tokenizer | None
        if isinstance(tokenizer, tokenizers.Tokenizer):
            self._hf = None
            self._backend = tokenizer
        else:
            self._hf = tokenizer
            self._backend = getattr(tokenizer, "backend_tokenizer", None)
            bos_id = tokenizer.bos_token_id if bos_id is None else bos_id
            eos_id = tokenizer.eos_token_id if eos_id is None else eos_id
        self._bos_id = bos_id
        self._eos_id = eos_id

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        assert self._hf is not None  # without a Rust backend, the tokenizer is a transformers one
        return self._hf.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (parallel in the Rust backend)."""
        texts = list(texts)
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        assert self._hf is not None  # without a Rust backend, the tokenizer is a transformers one
        return [self._hf.encode(t, add_special_tokens=False) for t in texts]

    def encode_batch_with_starts(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        """(token ids, each token's start character in the text) of each text, without special
        tokens: where each token came from, which byte counts per chunk need (`data.chunking`)."""
        texts = list(texts)
        if self._backend is not None:
            return [
                (e.ids, [a for a, _ in e.offsets]) for e in self._backend.encode_batch(texts, add_special_tokens=False)
            ]
        assert self._hf is not None  # without a Rust backend, the tokenizer is a transformers one
        if not getattr(self._hf, "is_fast", False):
            raise PplawError("byte counts per chunk need a fast tokenizer (character offsets); this one is not")
        out = []
        for t in texts:
            enc = self._hf(t, add_special_tokens=False, return_offsets_mapping=True)
            out.append((enc["input_ids"], [a for a, _ in enc["offset_mapping"]]))
        return out

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self._hf is not None:
            return self._hf.decode(ids)
        assert self._backend is not None  # a raw tokenizer is its own backend
        return self._backend.decode(ids, skip_special_tokens=False)

    # ------------------------------------------------------------------ special ids
    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    @property
    def doc_start_id(self) -> int:
        """The token that starts every chunk: BOS if the tokenizer has one, else EOS."""
        if self._bos_id is not None:
            return self._bos_id
        if self._eos_id is not None:
            return self._eos_id
        raise PplawError("the tokenizer has neither a BOS nor an EOS token; cannot mark document starts")

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (added tokens included)."""
        if self._hf is not None:
            return len(self._hf)
        assert self._backend is not None  # a raw tokenizer is its own backend
        return self._backend.get_vocab_size(with_added_tokens=True)

    # ------------------------------------------------------------------ files
    def to_transformers(self):
        """The transformers tokenizer (a raw tokenizer is wrapped in `PreTrainedTokenizerFast`)."""
        if self._hf is not None:
            return self._hf
        from transformers import PreTrainedTokenizerFast

        token = self._backend.id_to_token
        return PreTrainedTokenizerFast(
            tokenizer_object=self._backend,
            bos_token=None if self._bos_id is None else token(self._bos_id),
            eos_token=None if self._eos_id is None else token(self._eos_id),
        )

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer files that `Tokenizer.load` and `transformers.AutoTokenizer` read."""
        self.to_transformers().save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        """Load the tokenizer files of an HF checkpoint directory (offline)."""
        directory = Path(directory)
        names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
        if not any((directory / n).exists() for n in names):
            raise PplawError(f"{directory}: no tokenizer files (expected one of {', '.join(names)})")
        from transformers import AutoTokenizer

        try:  # never the checkpoint's own code: an `auto_map` would otherwise prompt or run it
            return cls(AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False))
        except Exception as e:  # transformers raises many types for unreadable tokenizer files
            config = directory / "tokenizer_config.json"
            if config.exists() and '"auto_map"' in config.read_text(errors="replace"):
                raise PplawError(
                    f"{config}: names custom tokenizer code (auto_map), which pplaw never runs "
                    "(trust_remote_code=False); use a checkpoint with a standard tokenizer class"
                ) from e
            raise PplawError(f"{directory}: cannot load the tokenizer: {' '.join(str(e).split())}") from e


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style) on `texts`; `<|endoftext|>` (id 0) is BOS and EOS.

    Meant for small from-scratch models; `vocab_size` includes the 256 byte symbols and the
    special token.
    """
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise PplawError(f"vocab_size={vocab_size} is too small for byte-level BPE (at least 257)")
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer)
    eot = raw.token_to_id(ENDOFTEXT)
    return Tokenizer(raw, bos_id=eot, eos_id=eot)
