"""``pplaw data``: the corpus files a study builds before anything is trained.

    pplaw data cpython-docs --out DIR      the quickstart's corpora (general: stdlib docstrings,
                                           domain: the language reference), + cpython_docs.json
    pplaw data cut --data SPEC --chars N --out FILE.jsonl [--max-docs M]
                                           each document cut to its central N characters
    pplaw data cloze --data SPEC --out FILE.jsonl [--n 200] [--seed S]
                                           multiple-choice cloze tasks from held-out text

Each is a step of `pplaw run`'s data stage, so a study's `commands.log` rebuilds its data too.
"""

from __future__ import annotations

import argparse

from pplaw_jax.paths import as_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pplaw_jax.config import parser_options

    options = parser_options()
    options.pop("parser_class")
    modes = parser.add_subparsers(dest="mode", metavar="{cpython-docs,cut,cloze}", required=True)
    docs = modes.add_parser("cpython-docs", help="the quickstart's corpora from this Python installation", **options)
    docs.add_argument("--out", required=True, help="directory for {general,domain}_{train,test}.jsonl")
    docs.add_argument("--test-every", type=int, default=10, help="every K-th document goes to test")
    cut = modes.add_parser("cut", help="a copy of a corpus with each document cut to its central characters",
                           **options)
    cloze = modes.add_parser("cloze", help="cloze tasks for `pplaw eval` from held-out text", **options)
    for sub in (cut, cloze):
        sub.add_argument("--data", required=True, help="corpus (same spec as pplaw score)")
        sub.add_argument("--out", required=True, help="JSONL file to write")
        sub.add_argument("--text-field", default="text", help="JSON field / Parquet column with the text")
        sub.add_argument("--id-field", default="id", help="document id field")
    cut.add_argument("--chars", type=int, required=True, help="characters kept from the middle of each document")
    cut.add_argument("--max-docs", type=int, default=None, help="the first N documents only")
    cloze.add_argument("--n", type=int, default=200, help="number of tasks")
    cloze.add_argument("--seed", type=int, default=0, help="seed of the prefixes and distractors")


def run(args: argparse.Namespace) -> int:
    from pplaw_jax.data import iter_documents
    from pplaw_jax.errors import PplawError
    from pplaw_jax.fileio import write_jsonl

    if args.mode == "cpython-docs":
        from pplaw_jax.data.cpython_docs import write_cpython_docs

        if args.test_every < 2:
            raise PplawError(f"--test-every must be >= 2, got {args.test_every}")
        write_cpython_docs(args.out, test_every=args.test_every)
        return 0
    as_path(args.out).parent.mkdir(parents=True, exist_ok=True)
    docs = iter_documents(args.data, text_field=args.text_field, id_field=args.id_field,
                          max_docs=getattr(args, "max_docs", None))
    if args.mode == "cut":
        if args.chars < 1:
            raise PplawError(f"--chars must be >= 1, got {args.chars}")
        rows = []
        for doc in docs:  # a central window keeps each document represented and skips front matter
            start = max(0, (len(doc.text) - args.chars) // 2)
            rows.append({args.id_field: doc.doc_id, args.text_field: doc.text[start:start + args.chars]})
        write_jsonl(args.out, rows)
        return 0
    from pplaw_jax.data.cloze import make_cloze_tasks

    if args.n < 1:
        raise PplawError(f"--n must be >= 1, got {args.n}")
    write_jsonl(args.out, make_cloze_tasks([doc.text for doc in docs], n_tasks=args.n, seed=args.seed))
    return 0
