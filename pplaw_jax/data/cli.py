"""``pplaw data``: the corpus files a study builds before anything is trained.

    pplaw data cpython-docs --out DIR      the quickstart's corpora (general: stdlib docstrings,
                                           domain: the language reference), + cpython_docs.json
    pplaw data cut --data SPEC [--chars N] --out FILE.jsonl [--max-docs M] [--skip-docs K]
                                           each document cut to its central N characters
                                           (documents K..K+M-1 of the corpus)
    pplaw data cloze --data SPEC --out FILE.jsonl [--n 200] [--seed S]
                                           multiple-choice cloze tasks from held-out text
    pplaw data contaminate --data CLEAN --out OUT.jsonl [--fraction 0.3] [--low-share 0.5]
        [--kinds general,boilerplate,garbled,shuffled,table] [--general GENERAL] [--max-docs N]
        [--seed 0] [--text-field text] [--id-field id]
                                           the clean documents with planted junk of known kinds
                                           and fraction (a positive control; --fraction 0 is the
                                           negative control) + OUT.manifest.json, written last;
                                           the recipe is `pplaw_jax.data.contaminate`'s docstring

Each is a step of `pplaw run`'s data stage, so a study's `commands.log` rebuilds its data too.
"""

from __future__ import annotations

import argparse
import itertools
import os

from pplaw_jax.commands import ClozeCommand, ContaminateCommand, CpythonDocsCommand, CutCommand, add_command
from pplaw_jax.paths import as_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pplaw_jax.config import parser_options

    options = parser_options()
    options.pop("parser_class")
    modes = parser.add_subparsers(dest="mode", metavar="{cpython-docs,cut,cloze,contaminate}", required=True)
    for cls, text, example in (
        (
            CpythonDocsCommand,
            "the quickstart's corpora from this Python installation",
            "pplaw data cpython-docs --out data",
        ),
        (
            CutCommand,
            "a copy of a corpus with each document cut to its central characters",
            "pplaw data cut --data corpus/train.jsonl.gz --skip-docs 2000 --max-docs 120 --chars 20000 "
            "--out valid.jsonl",
        ),
        (
            ClozeCommand,
            "cloze tasks for `pplaw eval` from held-out text",
            "pplaw data cloze --data corpus/test.jsonl.gz --n 200 --out cloze.jsonl",
        ),
        (
            ContaminateCommand,
            "a corpus with planted junk of known kinds and fraction (a positive control)",
            "pplaw data contaminate --data corpus/train.jsonl.gz --general books.jsonl.gz --fraction 0.3 "
            "--out pool.jsonl",
        ),
    ):
        sub = modes.add_parser(cls.WORDS[1], help=text, description=text, epilog=f"example:\n  {example}", **options)
        add_command(sub, cls)


def run(args: CpythonDocsCommand | CutCommand | ClozeCommand | ContaminateCommand) -> int:
    from pplaw_jax.data import iter_documents
    from pplaw_jax.errors import PplawError
    from pplaw_jax.fileio import write_jsonl

    if isinstance(args, CpythonDocsCommand):
        from pplaw_jax.data.cpython_docs import write_cpython_docs

        if args.test_every < 3:
            raise PplawError(f"--test-every must be >= 3, got {args.test_every}")
        write_cpython_docs(args.out, test_every=args.test_every)
        return 0
    if isinstance(args, ContaminateCommand):
        return _contaminate(args)
    as_path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(args, CutCommand):
        if args.chars is not None and args.chars < 1:
            raise PplawError(f"--chars must be >= 1, got {args.chars}")
        if args.skip_docs < 0:
            raise PplawError(f"--skip-docs must be >= 0, got {args.skip_docs}")
        if args.max_docs is not None and args.max_docs < 0:
            raise PplawError(f"--max-docs must be >= 0, got {args.max_docs}")
        # the skipped documents are read (and checked) once, as the stream passes them
        docs = itertools.islice(
            iter_documents(
                args.data,
                text_field=args.text_field,
                id_field=args.id_field,
                max_docs=None if args.max_docs is None else args.skip_docs + args.max_docs,
            ),
            args.skip_docs,
            None,
        )
        rows = []
        for doc in docs:  # a central window keeps each document represented and skips front matter
            keep = len(doc.text) if args.chars is None else args.chars
            start = max(0, (len(doc.text) - keep) // 2)
            rows.append({args.id_field: doc.doc_id, args.text_field: doc.text[start : start + keep]})
        if not rows:
            raise PplawError(
                f"{args.data}: no documents to write"
                + (f" after --skip-docs {args.skip_docs}" if args.skip_docs else "")
            )
        write_jsonl(args.out, rows)
        return 0
    from pplaw_jax.data.cloze import make_cloze_tasks

    if args.n < 1:
        raise PplawError(f"--n must be >= 1, got {args.n}")
    texts = [doc.text for doc in iter_documents(args.data, text_field=args.text_field, id_field=args.id_field)]
    write_jsonl(args.out, make_cloze_tasks(texts, n_tasks=args.n, seed=args.seed))
    return 0


def _contaminate(args: ContaminateCommand) -> int:
    """Read the clean (and general) corpus, build the rows with the pure core, write OUT and then
    its manifest (the completion marker; a stale one is removed first)."""
    import time

    from pplaw_jax import __version__
    from pplaw_jax.data import iter_documents
    from pplaw_jax.data.contaminate import check_settings, contaminate, parse_kinds
    from pplaw_jax.errors import PplawError
    from pplaw_jax.fileio import file_sha256, write_json, write_jsonl
    from pplaw_jax.logs import get_logger

    started = time.perf_counter()
    kinds = parse_kinds(args.kinds)
    check_settings(args.fraction, args.low_share, kinds, args.general is not None, args.seed)
    if args.max_docs is not None and args.max_docs < 1:
        raise PplawError(f"--max-docs must be >= 1, got {args.max_docs}")
    out = os.fspath(args.out)
    if not out.endswith(".jsonl"):
        raise PplawError(f"--out {out}: must end with .jsonl (the manifest goes beside it as .manifest.json)")
    if as_path(out).is_dir():
        raise PplawError(f"--out {out}: is a directory; expected a .jsonl file path")
    manifest_path = out[: -len(".jsonl")] + ".manifest.json"
    use_general = "general" in kinds
    data_files = _source_files(args.data)
    general = args.general if use_general else None  # given when used (check_settings)
    general_files = _source_files(general) if general is not None else []
    for name, path in (("--out", out), ("--out's manifest", manifest_path)):
        key = _path_key(path)
        for flag, files in (("--data", data_files), ("--general", general_files)):
            if any(_path_key(f) == key for f, _ in files):
                raise PplawError(
                    f"{name} {path} is an input file of {flag}; write the output elsewhere "
                    "(inputs are never overwritten)"
                )

    docs = list(iter_documents(args.data, text_field=args.text_field, id_field=args.id_field, max_docs=args.max_docs))
    if not docs:
        raise PplawError(f"--data {args.data}: the clean corpus has no documents")
    general_texts = None
    if general is not None:
        general_texts = [d.text for d in iter_documents(general, text_field=args.text_field, id_field=args.id_field)]
        if not general_texts:
            raise PplawError(f"--general {args.general}: the general corpus has no documents")
    rows, manifest = contaminate(
        [d.text for d in docs],
        [d.doc_id for d in docs],
        fraction=args.fraction,
        low_share=args.low_share,
        kinds=kinds,
        general_texts=general_texts,
        seed=args.seed,
        text_field=args.text_field,
        id_field=args.id_field,
    )
    manifest["recipe"].update(
        data=args.data, general=args.general if use_general else None, max_docs=args.max_docs, kinds_flag=args.kinds
    )
    manifest = {
        "version": manifest.pop("version"),
        "pplaw": __version__,
        **manifest,
        "sources": {
            "data": {"spec": args.data, "documents_read": len(docs), "files": _hashes(data_files)},
            "general": (
                {"spec": args.general, "documents_read": len(general_texts), "files": _hashes(general_files)}
                if general_texts is not None  # (read exactly when use_general)
                else None
            ),
        },
    }
    as_path(out).parent.mkdir(parents=True, exist_ok=True)
    as_path(manifest_path).unlink(missing_ok=True)  # no stale marker beside a half-written output
    write_jsonl(out, rows)
    manifest["output"] = {"rows": len(rows), "sha256": file_sha256(out)}
    write_json(manifest_path, manifest)
    get_logger("data").info(
        "%s: %d clean + %d junk documents (junk %.3f of documents, %.3f of characters) in %.1f s; manifest %s",
        out,
        manifest["documents"]["clean"],
        manifest["documents"]["junk"],
        manifest["junk_fraction_documents"],
        manifest["junk_fraction_characters"],
        time.perf_counter() - started,
        manifest_path,
    )
    return 0


def _source_files(spec: str) -> list[tuple[str, str]]:
    """(full path or URL, path relative to the spec's root) of each file of a corpus spec; none for TFDS."""
    from pplaw_jax.data import resolve_files
    from pplaw_jax.data.readers import TFDS_PREFIX
    from pplaw_jax.paths import is_url

    if spec.startswith(TFDS_PREFIX):
        return []
    fs, files = resolve_files(spec)
    return [(fs.unstrip_protocol(p) if is_url(spec) else p, source) for p, source in files]


def _path_key(path: str) -> str:
    from pplaw_jax.paths import is_url

    return path if is_url(path) else os.path.realpath(path)


def _hashes(files: list[tuple[str, str]]) -> list[dict]:
    """The sha256 of each local source file (None for an object-store URL or a stream)."""
    import stat

    from pplaw_jax.fileio import file_sha256
    from pplaw_jax.paths import is_url

    out = []
    for path, source in files:
        local = not is_url(path) and stat.S_ISREG(os.stat(path).st_mode)
        out.append({"path": source, "sha256": file_sha256(path) if local else None})
    return out
