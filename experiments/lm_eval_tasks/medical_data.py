"""Documents of the medical lm-eval tasks in this directory, read offline from local JSONL files.

The files are the development splits of `shared/data/eval/` (see its README): PubMedQA PQA-L
`pubmedqa_pqal/train_dev.jsonl` and MMLU-medical `mmlu_medical/{dev,val}.jsonl`. Their directory is,
in order: the lm-eval metadata field `data_dir` (`lm_eval --metadata '{"data_dir": "..."}'`), the
environment variable PPLAW_EVAL_DATA, or `../shared/data/eval` beside the project root (where
DESIGN.md keeps development data). The task YAMLs call these through `custom_dataset`, which
lm-eval gives the task's metadata and `dataset_kwargs` as keyword arguments.

Only the fields the prompts use are kept: PubMedQA's `long_answer` (the abstract's conclusion)
would give the answer away and never reaches the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets

DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval"
SUBJECTS = (
    "anatomy", "clinical_knowledge", "college_biology", "college_medicine",
    "medical_genetics", "nutrition", "professional_medicine", "virology",
)  # fmt: skip


def _data_dir(data_dir: str | None) -> Path:
    return Path(data_dir or os.environ.get("PPLAW_EVAL_DATA") or DEFAULT_DIR)


def _rows(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """The JSONL rows of `path`, restricted to `fields`; a missing file says how to point at the data."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; set PPLAW_EVAL_DATA (or lm-eval metadata data_dir) to the directory "
            "holding pubmedqa_pqal/ and mmlu_medical/"
        )
    with open(path, encoding="utf-8") as f:
        return [{k: row[k] for k in fields} for row in map(json.loads, f) if row]


def pubmedqa(data_dir: str | None = None, **_metadata) -> datasets.DatasetDict:
    """PubMedQA PQA-L's 500 labelled questions outside the official test split, as split `validation`."""
    rows = _rows(_data_dir(data_dir) / "pubmedqa_pqal" / "train_dev.jsonl", ("id", "text", "question", "answer"))
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})


def mmlu_medical(subject: str, data_dir: str | None = None, **_metadata) -> datasets.DatasetDict:
    """One MMLU medical subject: `dev` (the few-shot exemplars) and `validation` (the scored questions)."""
    if subject not in SUBJECTS:
        raise ValueError(f"unknown MMLU medical subject {subject!r} (known: {', '.join(SUBJECTS)})")
    root = _data_dir(data_dir) / "mmlu_medical"
    fields = ("id", "text", "choices", "answer", "subject")
    splits = {}
    for split, name in (("dev", "dev.jsonl"), ("validation", "val.jsonl")):
        rows = [r for r in _rows(root / name, fields) if r["subject"] == subject]
        splits[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)
