"""Corpus readers (jsonl, jsonl.gz, parquet, txt, tfds:), the chunking contract, and batch padding."""

from pplaw_jax.data.chunking import (
    Chunk,
    TokenizerLike,
    chunk_token_ids,
    iter_chunks,
    iter_tokenized,
    pad_batch,
)
from pplaw_jax.data.readers import SUPPORTED_SUFFIXES, Document, iter_documents, parse_tfds_spec, resolve_files

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Chunk",
    "Document",
    "TokenizerLike",
    "chunk_token_ids",
    "iter_chunks",
    "iter_documents",
    "iter_tokenized",
    "pad_batch",
    "parse_tfds_spec",
    "resolve_files",
]
