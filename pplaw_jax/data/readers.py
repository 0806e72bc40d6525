"""Corpus readers: one deterministic stream of documents from files, directories, globs or TFDS.

A data spec is one of
  * a file: ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` (one JSON object per line), ``.json`` (one
    array of objects), ``.csv`` (a header row, then one row per document), ``.parquet`` or
    ``.arrow`` (an Arrow IPC stream, as Hugging Face ``datasets`` writes; one row per document) or
    ``.txt`` (the whole file is one document);
  * a directory: every supported file below it (recursively), sorted by relative path; other files
    (README, checksums, scripts) are ignored. A Hugging Face ``datasets`` directory
    (``Dataset.save_to_disk``: ``state.json`` beside ``.arrow`` shards) is read as its shards in
    the order ``state.json`` lists; a ``DatasetDict`` directory is refused naming its splits (pass
    ``DIR/SPLIT``);
  * a glob (``data/*.jsonl.gz``): the supported files that match, sorted; a spec that names an
    existing file or directory is that path, even when its name holds ``*?[`` (``c[1].jsonl``);
  * ``tfds:NAME[/CONFIG][:VERSION]:SPLIT``: a TFDS dataset prepared in ``array_record`` format,
    read through ``tfds.data_source`` (no TensorFlow needed) from ``$TFDS_DATA_DIR``; never
    downloads. Split slicing (``train[:10%]``) works as in TFDS;
  * ``hf:ORG/NAME[@REVISION][:SPLIT]``: a Hugging Face hub dataset: its data files (the supported
    formats above) from the hub cache (`huggingface_hub.snapshot_download`, ``repo_type="dataset"``;
    offline when ``HF_HUB_OFFLINE`` is set or the hub cannot be reached), those of SPLIT only when
    one is given (files or folders named after the split, as in the hub's own convention).

Paths with a protocol (``gs://...``, ``s3://...``, any fsspec URL) go through fsspec; GCS and S3
need the optional extras ``gcs`` (gcsfs) and ``s3`` (s3fs), and a missing one
is an error naming it (`pplaw_jax.paths.filesystem`).

Order and host sharding: documents are numbered globally in reading order (files sorted, then line /
row order); document ``i`` belongs to host ``i % process_count``. ``max_docs`` cuts the *global*
stream before sharding, so the union over hosts is always the same set. Every host parses and
validates every document (not only its own), so a bad line makes all hosts fail with the same
message instead of one host dying while the others wait for it.

Documents whose text is empty or whitespace are still yielded: the tokenizer decides whether they
have tokens, and the scorer counts the ones without tokens as skipped. Blank lines in JSONL files
are not documents (they are ignored, but line numbers still count them).

A document's id is its ``id_field`` (a string or an integer) when present, else
``"{source}:{line}"`` where ``source`` is the file's path relative to the spec's root (the directory,
the glob's fixed prefix, or the file's own directory) and ``line`` is the 1-based line (JSONL), row
(Parquet, Arrow), record (JSON array, TFDS) or the CSV line a row starts on. A ``.txt`` document's id is its ``source``.

Ids are unique or refused: selections and landscapes join on ``(doc_id, chunk)``, so a repeated id
would silently train on another document's chunks.  The reader keeps a 64-bit digest of every id it
has seen (files: over the whole global stream, on every host; TFDS: over this host's records) and
raises on a repeat, naming both places (the first is found by re-reading, only on that error path).
Memory: about 70 bytes per document.

Bad input raises :class:`PplawError` naming the file and line: a missing or unreadable file, a
corrupt gzip stream, malformed JSON, a line that is not an object, a missing text field, text that
is not a string, bytes that are not UTF-8, an id that is neither string nor integer, a repeated id.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import content_fingerprint
from pplaw_jax.paths import URLPath, filesystem, hub_snapshot, is_url

SUPPORTED_SUFFIXES = (".jsonl.gz", ".jsonl.zst", ".jsonl", ".json", ".csv", ".parquet", ".arrow", ".txt")
TFDS_PREFIX = "tfds:"
HUB_PREFIX = "hf:"
HUB_DATASET = re.compile(r"^hf:([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?(?::([\w.-]+))?$")
_PARQUET_BATCH_ROWS = 1024
_TFDS_READ_BATCH = 256


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a corpus: its id, text, and where it came from (for error messages)."""

    doc_id: str
    text: str
    source: str
    line: int


def iter_documents(
    spec: str,
    *,
    text_field: str = "text",
    id_field: str = "id",
    process_index: int = 0,
    process_count: int = 1,
    max_docs: int | None = None,
) -> Iterator[Document]:
    """Yield this host's documents of `spec` in deterministic global order (see module docstring)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise PplawError(f"process_index {process_index} is not in [0, process_count={process_count})")
    if max_docs is not None and max_docs < 0:
        raise PplawError(f"max_docs must be >= 0, got {max_docs}")
    if spec.startswith(TFDS_PREFIX):
        return _iter_tfds(spec, text_field, id_field, process_index, process_count, max_docs)
    return _iter_files(spec, text_field, id_field, process_index, process_count, max_docs)


def _iter_files(
    spec: str, text_field: str, id_field: str, process_index: int, process_count: int, max_docs: int | None
) -> Iterator[Document]:
    fs, files = resolve_files(spec)  # eager: a bad spec fails before any model is loaded

    def everything() -> Iterator[Document]:
        for path, source in files:
            yield from _read_file(fs, path, source, text_field, id_field)

    def generate() -> Iterator[Document]:
        if max_docs == 0:
            return
        index = 0
        ids = _UniqueIds(everything)
        for path, source in files:
            for doc in _read_file(fs, path, source, text_field, id_field):
                ids.add(doc)
                if index % process_count == process_index:
                    yield doc
                index += 1
                if index == max_docs:  # stop before reading (or blocking on) one more line
                    return

    return generate()


class _UniqueIds:
    """Digests of the ids seen so far; `add` raises on a repeat, naming both places.  `rescan`
    re-reads the stream from its start (used only to find the first occurrence for the message)."""

    def __init__(self, rescan: Callable[[], Iterable[Document]]) -> None:
        self.seen: set[int] = set()
        self.rescan = rescan

    @staticmethod
    def _digest(doc_id: str) -> int:
        return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")

    def add(self, doc: Document) -> None:
        h = self._digest(doc.doc_id)
        if h not in self.seen:
            self.seen.add(h)
            return
        for first in self.rescan():
            if first.doc_id == doc.doc_id:
                raise PplawError(
                    f"{doc.source}:{doc.line}: document id {doc.doc_id!r} repeats "
                    f"{first.source}:{first.line}; ids must be unique (fix the data, or "
                    "pass an --id-field the corpus does not have to use FILE:LINE ids)"
                )
            if (first.source, first.line) == (doc.source, doc.line):
                break  # a digest collision of two different ids (chance ~n^2 / 2^65): not a repeat
        self.seen.add(h)


def corpus_fingerprint(spec: str) -> str | None:
    """`fileio.content_fingerprint` of a corpus's files (in reading order; on an object store
    through ranged reads of each object's ends); None for TFDS and streams (a named pipe cannot be
    read twice), whose content is not known here."""
    if spec.startswith(TFDS_PREFIX):
        return None
    if is_url(spec):
        fs, files = resolve_files(spec)
        return content_fingerprint(URLPath(fs.unstrip_protocol(p), fs, p) for p, _ in files)
    paths = [path for path, _ in resolve_files(spec)[1]]
    if not all(stat.S_ISREG(os.stat(path).st_mode) for path in paths):
        return None
    return content_fingerprint(paths)


def resolve_files(spec: str) -> tuple[Any, list[tuple[str, str]]]:
    """Expand a file / directory / glob spec into (filesystem, [(path, relative_source), ...])."""
    import fsspec

    if spec.startswith(HUB_PREFIX):
        return _resolve_hub_dataset(spec)
    if is_url(spec):
        fs, path = filesystem(spec)  # a missing backend names the extra that installs it
    else:
        try:
            fs, path = fsspec.core.url_to_fs(spec)
        except (ImportError, ValueError) as e:
            raise PplawError(f"cannot open data spec {spec!r}: {e}") from e
    if any(c in path for c in "*?[") and not fs.exists(path):  # a path that exists as named is literal
        root = _glob_root(path)
        # like a shell glob, a wildcard does not match names that start with a dot
        matches = [p for p in sorted(fs.glob(path)) if not fs.isdir(p) and not _is_hidden(p, root)]
        if not matches:
            raise PplawError(f"data glob {spec!r} matches no files")
        files = [p for p in matches if _is_supported(p)]
        if not files:
            raise PplawError(f"data glob {spec!r} matches no {'/'.join(SUPPORTED_SUFFIXES)} files")
    elif fs.isdir(path):
        root = path
        saved = _saved_dataset_files(fs, path, spec)
        if saved is not None:
            files = saved
        else:
            files = sorted(p for p in fs.find(path) if _is_supported(p) and not _is_hidden(p, root))
        if not files:
            raise PplawError(f"data directory {spec!r} contains no {'/'.join(SUPPORTED_SUFFIXES)} files")
    elif fs.exists(path):
        if not _is_supported(path):
            raise PplawError(f"data file {spec!r} has an unsupported format (expected {', '.join(SUPPORTED_SUFFIXES)})")
        root = posixpath.dirname(path)
        files = [path]
    else:
        raise PplawError(f"data spec {spec!r}: no such file or directory")
    return fs, [(p, posixpath.relpath(p, root) if root else p) for p in files]


def _saved_dataset_files(fs: Any, path: str, spec: str) -> list[str] | None:
    """The `.arrow` shards of a `datasets.Dataset.save_to_disk` directory in `state.json`'s order;
    None for any other directory."""
    if fs.exists(posixpath.join(path, "dataset_dict.json")):
        splits = json.loads(fs.cat(posixpath.join(path, "dataset_dict.json"))).get("splits", [])
        raise PplawError(
            f"data directory {spec!r} is a Hugging Face DatasetDict with splits {splits}; "
            f"name one, e.g. {posixpath.join(spec, splits[0] if splits else 'train')}"
        )
    state = posixpath.join(path, "state.json")
    if not fs.exists(state):
        return None
    try:
        shards = [entry["filename"] for entry in json.loads(fs.cat(state))["_data_files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise PplawError(f"{state}: not a Hugging Face datasets state file ({type(e).__name__}: {e})") from None
    if not shards:
        raise PplawError(f"data directory {spec!r}: its state.json lists no .arrow shards")
    return [posixpath.join(path, name) for name in shards]


def _resolve_hub_dataset(spec: str) -> tuple[Any, list[tuple[str, str]]]:
    """`hf:ORG/NAME[@REVISION][:SPLIT]` -> the supported data files of its hub-cache snapshot."""
    import fsspec

    match = HUB_DATASET.match(spec)
    if match is None:
        raise PplawError(f"bad hub dataset spec {spec!r}: expected hf:ORG/NAME[@REVISION][:SPLIT]")
    repo_id, revision, split = match.groups()
    patterns = [f"*{suffix}" for suffix in SUPPORTED_SUFFIXES]
    try:
        root = str(hub_snapshot(repo_id, revision, patterns, repo_type="dataset"))
    except PplawError as e:
        raise PplawError(f"{spec}: {e}") from None
    fs = fsspec.filesystem("file")
    files = sorted(p for p in fs.find(root) if _is_supported(p) and not _is_hidden(p, root))
    if split is not None:
        # the hub's convention: a file or a folder whose name starts with the split's name
        named = re.compile(rf"(^|/){re.escape(split)}([-._/0-9]|$)")
        files = [p for p in files if named.search(posixpath.relpath(p, root))]
    if not files:
        raise PplawError(
            f"{spec}: the dataset's snapshot {root} has no {'/'.join(SUPPORTED_SUFFIXES)} files"
            + (f" for split {split!r}" if split else "")
        )
    return fs, [(p, posixpath.relpath(p, root)) for p in files]


def _glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed)


def _is_supported(path: str) -> bool:
    return path.endswith(SUPPORTED_SUFFIXES)


def _is_hidden(path: str, root: str) -> bool:
    return any(part.startswith(".") for part in posixpath.relpath(path, root).split("/"))


def _read_file(fs: Any, path: str, source: str, text_field: str, id_field: str) -> Iterator[Document]:
    from fsspec.implementations.local import LocalFileSystem

    try:  # local files through plain open(): fsspec's local opener needs seekable files (no pipes)
        handle = open(path, "rb") if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")
    except OSError as e:
        raise PplawError(f"{source}: cannot open {path}: {e}") from e
    with handle:
        if path.endswith(".jsonl.gz"):
            yield from _read_jsonl(gzip.GzipFile(fileobj=handle, mode="rb"), source, text_field, id_field)
        elif path.endswith(".jsonl.zst"):
            import zstandard

            yield from _read_jsonl(
                io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(handle)), source, text_field, id_field
            )
        elif path.endswith(".jsonl"):
            yield from _read_jsonl(handle, source, text_field, id_field)
        elif path.endswith(".json"):
            yield from _read_json_array(handle, source, text_field, id_field)
        elif path.endswith(".csv"):
            yield from _read_csv(handle, source, text_field, id_field)
        elif path.endswith((".parquet", ".arrow")):
            yield from _read_table(handle, source, text_field, id_field, arrow=path.endswith(".arrow"))
        else:
            yield _read_txt(handle, source)


def _read_jsonl(
    handle: IO[bytes] | io.BufferedIOBase, source: str, text_field: str, id_field: str
) -> Iterator[Document]:
    line_no = 0
    while True:
        try:
            raw = handle.readline()
        except (OSError, EOFError, zlib.error, ValueError) as e:  # zstandard raises ZstdError (a ValueError)
            raise PplawError(f"{source}:{line_no + 1}: cannot read ({e})") from e
        if not raw:
            return
        line_no += 1
        if not raw.strip():
            continue
        where = f"{source}:{line_no}"
        line = _decode(raw, where)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PplawError(f"{where}: malformed JSON ({e.msg.removesuffix(' at')}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise PplawError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield _make_document(record, where, source, line_no, text_field, id_field)


def _read_json_array(handle: IO[bytes], source: str, text_field: str, id_field: str) -> Iterator[Document]:
    """A `.json` file holding one array of objects (the whole file is parsed at once)."""
    try:
        records = json.loads(_decode(handle.read(), source))
    except json.JSONDecodeError as e:
        raise PplawError(
            f"{source}:{e.lineno}: malformed JSON ({e.msg.removesuffix(' at')}, column {e.colno})"
        ) from None
    except OSError as e:
        raise PplawError(f"{source}: cannot read ({e})") from e
    if not isinstance(records, list):
        raise PplawError(
            f"{source}: expected a JSON array of objects, got {type(records).__name__} (one object per line is .jsonl)"
        )
    for number, record in enumerate(records, 1):
        where = f"{source}: record {number}"
        if not isinstance(record, dict):
            raise PplawError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield _make_document(record, where, source, number, text_field, id_field)


def _read_csv(handle: IO[bytes], source: str, text_field: str, id_field: str) -> Iterator[Document]:
    """A `.csv` file with a header row; a row's number is the line it starts on."""
    csv.field_size_limit(2**31 - 1)  # a document is one field; the default limit is 128 KiB
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    reader = csv.DictReader(text)
    start = 2
    try:
        if reader.fieldnames is not None and text_field not in reader.fieldnames:
            raise PplawError(f"{source}:1: missing text column {text_field!r} (columns: {reader.fieldnames[:10]})")
        for record in reader:
            where = f"{source}:{start}"
            if None in record:
                assert reader.fieldnames is not None  # read from the header row, before any record
                raise PplawError(f"{where}: more fields than the header's {len(reader.fieldnames)}")
            if record.get(id_field) == "":
                record[id_field] = None
            yield _make_document(record, where, source, start, text_field, id_field)
            start = reader.line_num + 1
    except UnicodeDecodeError as e:
        raise PplawError(f"{source}:{reader.line_num + 1}: not valid UTF-8 ({e.reason})") from None
    except csv.Error as e:
        raise PplawError(f"{source}:{reader.line_num}: malformed CSV ({e})") from None


def _make_document(
    record: dict[str, Any], where: str, source: str, line_no: int, text_field: str, id_field: str
) -> Document:
    if text_field not in record:
        raise PplawError(f"{where}: missing text field {text_field!r} (fields: {sorted(record)[:10]})")
    text = record[text_field]
    if not isinstance(text, str):
        raise PplawError(f"{where}: text field {text_field!r} is {type(text).__name__}, not a string")
    _check_encodable(text, where)
    return Document(_doc_id(record.get(id_field), where, source, line_no, id_field), text, source, line_no)


def _doc_id(value: Any, where: str, source: str, line_no: int, id_field: str) -> str:
    if value is None:
        return f"{source}:{line_no}"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PplawError(f"{where}: id field {id_field!r} is {type(value).__name__}, not a string or integer")
    return str(value)


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PplawError(f"{where}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None


def _check_encodable(text: str, where: str) -> None:
    """Reject lone surrogates (from JSON escapes like "\\ud800"), which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PplawError(
            f"{where}: text contains an invalid code point (lone surrogate at character {e.start})"
        ) from None


def _read_txt(handle: IO[bytes], source: str) -> Document:
    try:
        raw = handle.read()
    except OSError as e:
        raise PplawError(f"{source}: cannot read ({e})") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = raw.count(b"\n", 0, e.start) + 1
        raise PplawError(f"{source}:{line_no}: not valid UTF-8 (byte {raw[e.start]:#04x})") from None
    return Document(source, text, source, 1)


def _read_table(handle: IO[bytes], source: str, text_field: str, id_field: str, arrow: bool) -> Iterator[Document]:
    """A Parquet file, or an Arrow IPC stream (`arrow`), in batches of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = "Arrow" if arrow else "Parquet"
    try:
        if arrow:
            stream = pa.ipc.open_stream(handle)
            schema = stream.schema
        else:
            pfile = pq.ParquetFile(handle)
            schema = pfile.schema_arrow
    except (OSError, pa.ArrowException) as e:
        raise PplawError(f"{source}: cannot read {kind} ({e})") from e
    if text_field not in schema.names:
        raise PplawError(f"{source}: missing text column {text_field!r} (columns: {schema.names[:10]})")
    text_type = schema.field(text_field).type
    if str(text_type) not in ("string", "large_string", "string_view"):
        raise PplawError(f"{source}: text column {text_field!r} has type {text_type}, not string")
    columns = [text_field] + ([id_field] if id_field in schema.names and id_field != text_field else [])
    batches = stream if arrow else pfile.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns)
    row = 0
    try:
        for batch in batches:
            texts = _column_pylist(batch.column(text_field), source, row)
            ids = _column_pylist(batch.column(id_field), source, row) if len(columns) == 2 else [None] * len(texts)
            for text, doc_id in zip(texts, ids):
                row += 1
                where = f"{source}:{row}"
                if text is None:
                    raise PplawError(f"{where}: text column {text_field!r} is null")
                _check_encodable(text, where)
                yield Document(_doc_id(doc_id, where, source, row, id_field), text, source, row)
    except (OSError, pa.ArrowException) as e:
        raise PplawError(f"{source}: cannot read {kind} after row {row} ({e})") from e


def _column_pylist(column: Any, source: str, first_row: int) -> list[Any]:
    try:
        return column.to_pylist()
    except UnicodeDecodeError as e:
        raise PplawError(
            f"{source}: rows {first_row + 1}..{first_row + len(column)}: not valid UTF-8 ({e.reason})"
        ) from None


def parse_tfds_spec(spec: str) -> tuple[str, str]:
    """``tfds:NAME[/CONFIG][:VERSION]:SPLIT`` -> (TFDS name, split)."""
    body = spec[len(TFDS_PREFIX) :]
    bracket = body.find("[")  # split slices ("train[:10%]") contain colons of their own
    head, tail = (body, "") if bracket < 0 else (body[:bracket], body[bracket:])
    name, sep, split = head.rpartition(":")
    split += tail
    if not sep or not name or not split:
        raise PplawError(f"bad TFDS spec {spec!r}: expected tfds:NAME[/CONFIG]:SPLIT, e.g. tfds:wiki40b/en:train")
    return name, split


def _iter_tfds(
    spec: str, text_field: str, id_field: str, process_index: int, process_count: int, max_docs: int | None
) -> Iterator[Document]:
    name, split = parse_tfds_spec(spec)
    source = spec
    data_dir = os.environ.get("TFDS_DATA_DIR")
    try:
        import tensorflow_datasets as tfds

        ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False, try_gcs=False)
        n = len(ds)
    except Exception as e:  # TFDS raises many unrelated types (not found, bad split, wrong file format)
        where = data_dir or "the default TFDS data dir ($TFDS_DATA_DIR unset)"
        raise PplawError(
            f"{spec}: cannot open TFDS dataset {name!r} split {split!r} in {where}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''} (it must be prepared locally in array_record "
            "format; TensorFlow is not installed so tfrecord datasets cannot be read)"
        ) from e
    if max_docs is not None:
        n = min(n, max_docs)
    own = range(process_index, n, process_count)

    def own_documents() -> Iterator[Document]:
        for start in range(0, len(own), _TFDS_READ_BATCH):
            indices = list(own[start : start + _TFDS_READ_BATCH])
            for i, record in zip(indices, ds.__getitems__(indices)):
                yield _tfds_document(record, source, i + 1, text_field, id_field)

    def generate() -> Iterator[Document]:
        ids = _UniqueIds(own_documents)
        for doc in own_documents():
            ids.add(doc)
            yield doc

    return generate()


def _tfds_document(record: dict[str, Any], source: str, line_no: int, text_field: str, id_field: str) -> Document:
    where = f"{source}:{line_no}"
    if text_field not in record:
        raise PplawError(f"{where}: missing text feature {text_field!r} (features: {sorted(record)[:10]})")
    text = _tfds_str(record[text_field], where, text_field)
    raw_id: Any = record.get(id_field)
    if isinstance(raw_id, bytes):
        raw_id = _tfds_str(raw_id, where, id_field)
    elif hasattr(raw_id, "item"):  # numpy integer scalar
        raw_id = raw_id.item()
    return Document(_doc_id(raw_id, where, source, line_no, id_field), text, source, line_no)


def _tfds_str(value: Any, where: str, field: str) -> str:
    if isinstance(value, bytes):
        return _decode(value, f"{where} ({field})")
    if isinstance(value, str):
        return value
    raise PplawError(f"{where}: feature {field!r} is {type(value).__name__}, not text")
