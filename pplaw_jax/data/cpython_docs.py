"""A corpus pair that ships with every CPython: the quickstart needs no download.

- general: the docstrings of the standard library's public modules (one document per module);
- domain: the Python language reference topics bundled for `help()` (`pydoc_data.topics`),
  cut into documents of about `doc_chars` characters at paragraph boundaries.

Both are split deterministically into train/valid/test (every `test_every`-th document goes to
test, the one before it to valid) and written as JSONL `{"id", "text"}`, the format every other
corpus uses.

What the general corpus holds depends on the Python build (a module that does not import on this
platform, e.g. `winreg` on Linux, is left out), so `write_cpython_docs` records it: the Python
version and platform, the modules left out with the error each raised, and every file's sha256 in
`cpython_docs.json`, written last.
"""

from __future__ import annotations

import importlib
import inspect
import platform
import sys
import warnings
from pathlib import Path

from pplaw_jax.fileio import file_sha256, write_json, write_jsonl
from pplaw_jax.paths import as_path

# Modules that open windows, print on import, or are not documentation.
_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "pydoc_data"}


def stdlib_docstrings(left_out: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(module name, text) for each importable public stdlib module with documentation; the
    modules that do not import here go to `left_out` (name -> the error's class and message)."""
    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules warn on import; their docs still count
        for name in sorted(sys.stdlib_module_names):
            if name.startswith("_") or name in _SKIP:
                continue
            try:
                module = importlib.import_module(name)
            except Exception as e:  # platform-specific modules (winreg, msvcrt, ...)
                if left_out is not None:
                    left_out[name] = f"{type(e).__name__}: {e}"
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


MANIFEST = "cpython_docs.json"


def write_cpython_docs(out_dir: str | Path, test_every: int = 10) -> dict[str, str]:
    """Write general/domain train/valid/test JSONL files and, last, `MANIFEST` (what they hold and
    where it came from); returns {split name: path}."""
    out = as_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the directory is incomplete
    paths: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for kind, docs in (("general", stdlib_docstrings(left_out)), ("domain", language_reference())):
        splits = {  # every test_every-th document to test, the one before it to valid, the rest to train
            "test": [d for i, d in enumerate(docs) if i % test_every == test_every - 1],
            "valid": [d for i, d in enumerate(docs) if i % test_every == test_every - 2],
            "train": [d for i, d in enumerate(docs) if i % test_every < test_every - 2],
        }
        for split, rows in splits.items():
            path = out / f"{kind}_{split}.jsonl"
            write_jsonl(path, ({"id": doc_id, "text": text} for doc_id, text in rows))
            paths[f"{kind}_{split}"] = str(path)
    write_json(
        out / MANIFEST,
        {
            "python": sys.version,
            "platform": platform.platform(),
            "test_every": test_every,
            "files": {
                name: {
                    "path": as_path(p).name,
                    "documents": sum(1 for _ in as_path(p).open(encoding="utf-8")),
                    "sha256": file_sha256(p),
                }
                for name, p in paths.items()
            },
            "modules_left_out": left_out,
        },
    )
    return paths
