"""Landscape statistics (chunk-level perplexity summary) and the log-perplexity histogram."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from pplaw_jax.fileio import write_bytes
from pplaw_jax.moments import MOMENTS, chunk_values
from pplaw_jax.paths import PathSpec

QUANTILES = (1, 5, 25, 50, 75, 95, 99)


def bits_per_byte(sum_nll: np.ndarray, n_bytes: np.ndarray) -> dict[str, Any]:
    """Tokenizer-independent loss: ``bits_per_byte`` of the corpus (total nats / ln 2 / total UTF-8
    bytes, the figure landscapes of different models and tokenizers can be compared by, as in
    Marin's perplexity-gap tool) and the chunk-level mean, sd and quantiles of each chunk's own."""
    n_bytes = np.asarray(n_bytes, dtype=np.float64)
    sum_nll = np.asarray(sum_nll, dtype=np.float64)
    if n_bytes.size == 0 or n_bytes.sum() == 0:
        return {"bytes": int(n_bytes.sum()), "bits_per_byte": None, "chunk_bits_per_byte": None}
    per_chunk = np.sort(sum_nll[n_bytes > 0] / np.log(2) / n_bytes[n_bytes > 0])  # sorted: row order free
    qs = np.percentile(per_chunk, QUANTILES)
    return {
        "bytes": int(n_bytes.sum()),
        "bits_per_byte": float(np.sum(np.sort(sum_nll)) / np.log(2) / n_bytes.sum()),
        "chunk_bits_per_byte": {
            "mean": float(per_chunk.mean()),
            "std": float(per_chunk.std(ddof=0)),
            "quantiles": {f"q{q:02d}": float(v) for q, v in zip(QUANTILES, qs)},
        },
    }


def ppl_stats(ppl: np.ndarray, sum_nll: np.ndarray, n_tokens: np.ndarray) -> dict[str, Any]:
    """Chunk-level statistics, unweighted over chunks (as the law's mu and sigma are).

    For each moment kind (`pplaw_jax.moments`: ``ppl`` and ``logppl`` = chunk mean NLL) the
    mean / std (ddof=0) / min / max / quantiles ``q01 .. q99``, plus the token-weighted corpus
    perplexity ``exp(sum(sum_nll) / sum(n_tokens))`` for reference.
    """
    # sorted first: the figures do not depend on the row order (how many hosts wrote the parts)
    ppl = np.sort(np.asarray(ppl, dtype=np.float64))
    if ppl.size == 0:
        return {**{kind: None for kind in MOMENTS}, "corpus_ppl": None}
    out: dict[str, Any] = {}
    for kind in MOMENTS:
        x = chunk_values(ppl, kind)
        qs = np.percentile(x, QUANTILES)
        out[kind] = {
            "mean": float(x.mean()),
            "std": float(x.std(ddof=0)),
            "min": float(x.min()),
            "max": float(x.max()),
            "quantiles": {f"q{q:02d}": float(v) for q, v in zip(QUANTILES, qs)},
        }
    out["corpus_ppl"] = float(np.exp(np.sum(np.sort(np.asarray(sum_nll, dtype=np.float64))) / np.sum(n_tokens)))
    return out


def plot_log_ppl_histogram(ppl: np.ndarray, path: PathSpec, title: str) -> None:
    """Histogram of chunk log-perplexity with the median and the 5/95% quantiles marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_ppl = np.log(np.asarray(ppl, dtype=np.float64))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    try:
        if log_ppl.size:
            ax.hist(log_ppl, bins=min(100, max(10, int(np.sqrt(log_ppl.size)))), color="#4c72b0", alpha=0.85)
            for q, style in ((5, ":"), (50, "--"), (95, ":")):
                ax.axvline(np.percentile(log_ppl, q), color="k", linestyle=style, linewidth=1, label=f"q{q:02d}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel("log(chunk perplexity)")
        ax.set_ylabel("chunks")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        write_bytes(path, buffer.getvalue())
    finally:
        plt.close(fig)
