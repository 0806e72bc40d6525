"""A corpus pair that ships with every CPython: the quickstart needs no download.

- general: the docstrings of the standard library's public modules (one document per module);
- domain: the Python language reference topics bundled for `help()` (`pydoc_data.topics`),
  cut into documents of about `doc_chars` characters at paragraph boundaries.

Both are split deterministically into train/test (every `test_every`-th document goes to test) and
written as JSONL `{"id", "text"}`, the format every other corpus uses.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from pathlib import Path

from pplaw_jax.fileio import write_jsonl

# Modules that open windows, print on import, or are not documentation.
_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "pydoc_data"}


def stdlib_docstrings() -> list[tuple[str, str]]:
    """(module name, text) for each importable public stdlib module with documentation."""
    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names):
            if name.startswith("_") or name in _SKIP:
                continue
            try:
                module = importlib.import_module(name)
            except Exception:  # platform-specific modules (winreg, msvcrt, ...)
                continue
            parts = [inspect.getdoc(module) or ""]
            for attr, obj in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                    continue
                doc = inspect.getdoc(obj)
                if doc:
                    parts.append(f"{attr}\n{doc}")
            text = "\n\n".join(p for p in parts if p.strip())
            if text.strip():
                docs.append((name, text))
    return docs


def language_reference(doc_chars: int = 1500) -> list[tuple[str, str]]:
    """(topic:part, text) pieces of the bundled language reference, cut at paragraph breaks."""
    from pydoc_data.topics import topics

    docs = []
    for topic in sorted(topics):
        buf, part = [], 0
        for para in topics[topic].split("\n\n"):
            buf.append(para)
            if sum(len(p) for p in buf) >= doc_chars:
                docs.append((f"{topic}:{part}", "\n\n".join(buf)))
                buf, part = [], part + 1
        if buf and "\n\n".join(buf).strip():
            docs.append((f"{topic}:{part}", "\n\n".join(buf)))
    return docs


def write_cpython_docs(out_dir: str | Path, test_every: int = 10) -> dict[str, str]:
    """Write general/domain train/test JSONL files; returns {split name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, docs in (("general", stdlib_docstrings()), ("domain", language_reference())):
        splits = {
            "test": [d for i, d in enumerate(docs) if i % test_every == test_every - 1],
            "train": [d for i, d in enumerate(docs) if i % test_every != test_every - 1],
        }
        for split, rows in splits.items():
            path = out / f"{kind}_{split}.jsonl"
            write_jsonl(path, ({"id": doc_id, "text": text} for doc_id, text in rows))
            paths[f"{kind}_{split}"] = str(path)
    return paths
