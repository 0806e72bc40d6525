"""Corpus readers, host sharding, the chunking contract and batch padding."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pplaw_jax.data import Document, chunk_token_ids, iter_chunks, iter_documents, iter_tokenized, pad_batch
from pplaw_jax.errors import PplawError

RECORDS = [
    {"id": "a", "text": "first document"},
    {"id": 7, "text": "integer id"},
    {"text": "no id here"},
    {"id": "e", "text": ""},
    {"id": "w", "text": "  \n "},
    {"id": "u", "text": "unicode: naïve café ☕ — 日本語"},
]


def write_jsonl(path: Path, records, blank_after_first: bool = False) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    if blank_after_first:
        lines.insert(1, "")
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def expected_docs(source: str, records, first_line: int = 1, line_step=None) -> list[Document]:
    out = []
    for i, r in enumerate(records):
        line = first_line + i if line_step is None else line_step[i]
        doc_id = str(r["id"]) if "id" in r else f"{source}:{line}"
        out.append(Document(doc_id, r["text"], source, line))
    return out


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_jsonl_formats(tmp_path, name):
    path = write_jsonl(tmp_path / name, RECORDS, blank_after_first=True)
    docs = list(iter_documents(str(path)))
    # the blank second line is not a document, but it still counts for line numbers
    assert docs == expected_docs(name, RECORDS, line_step=[1, 3, 4, 5, 6, 7])
    assert docs[2].doc_id == f"{name}:4"


def test_parquet_and_txt(tmp_path):
    table = pa.table({"id": ["p1", None, "p3"], "text": ["one", "two", ""], "other": [1, 2, 3]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    assert list(iter_documents(str(tmp_path / "t.parquet"))) == [
        Document("p1", "one", "t.parquet", 1),
        Document("t.parquet:2", "two", "t.parquet", 2),
        Document("p3", "", "t.parquet", 3),
    ]
    (tmp_path / "book.txt").write_text("line one\nline two\n")
    assert list(iter_documents(str(tmp_path / "book.txt"))) == [
        Document("book.txt", "line one\nline two\n", "book.txt", 1)
    ]
    # a Parquet file without an id column, custom text column
    pq.write_table(pa.table({"body": ["x", "y"]}), tmp_path / "b.parquet")
    docs = list(iter_documents(str(tmp_path / "b.parquet"), text_field="body"))
    assert [(d.doc_id, d.text) for d in docs] == [("b.parquet:1", "x"), ("b.parquet:2", "y")]


def test_directory_and_glob_order(tmp_path):
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "b.jsonl", [{"text": "b1"}, {"text": "b2"}])
    write_jsonl(tmp_path / "a.jsonl.gz", [{"text": "a1"}])
    write_jsonl(tmp_path / "sub" / "c.jsonl", [{"text": "c1"}])
    (tmp_path / "z.txt").write_text("z")
    (tmp_path / "README.md").write_text("not data")
    (tmp_path / ".hidden.jsonl").write_text('{"text": "hidden"}\n')
    docs = list(iter_documents(str(tmp_path)))
    assert [(d.doc_id, d.text) for d in docs] == [
        ("a.jsonl.gz:1", "a1"),
        ("b.jsonl:1", "b1"),
        ("b.jsonl:2", "b2"),
        ("sub/c.jsonl:1", "c1"),
        ("z.txt", "z"),
    ]
    globbed = list(iter_documents(str(tmp_path / "*.jsonl*")))
    assert [(d.source, d.text) for d in globbed] == [("a.jsonl.gz", "a1"), ("b.jsonl", "b1"), ("b.jsonl", "b2")]
    assert [d.text for d in iter_documents(str(tmp_path), max_docs=2)] == ["a1", "b1"]


def test_a_path_that_exists_is_read_as_named_not_as_a_glob(tmp_path):
    """`c[1].jsonl` names a file: it is read, not the `c1.jsonl` its glob would match (and it is
    not 'no files' when only it exists)."""
    write_jsonl(tmp_path / "c[1].jsonl", [{"text": "literal"}])
    assert [d.text for d in iter_documents(str(tmp_path / "c[1].jsonl"))] == ["literal"]
    write_jsonl(tmp_path / "c1.jsonl", [{"text": "glob match"}])
    assert [d.text for d in iter_documents(str(tmp_path / "c[1].jsonl"))] == ["literal"]
    assert [d.text for d in iter_documents(str(tmp_path / "c[0-9].jsonl"))] == ["glob match"]  # still a glob


def test_host_sharding_partitions_documents(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}"} for i in range(7)])
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(4)])
    everything = [d.text for d in iter_documents(str(tmp_path))]
    assert len(everything) == 11
    for count in (1, 2, 3, 4):
        for max_docs in (None, 9):
            full = everything if max_docs is None else everything[:max_docs]
            shards = [
                [d.text for d in iter_documents(str(tmp_path), process_index=h, process_count=count, max_docs=max_docs)]
                for h in range(count)
            ]
            assert [full[i::count] for i in range(count)] == shards
    with pytest.raises(PplawError, match="process_index"):
        iter_documents(str(tmp_path), process_index=2, process_count=2)


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "ok"}\n{"text": "broken\n', r"bad\.jsonl:2: malformed JSON"),
        (b'{"text": "ok"}\n\n["a list"]\n', r"bad\.jsonl:3: expected a JSON object"),
        (b'{"body": "x"}\n', r"bad\.jsonl:1: missing text field 'text'"),
        (b'{"text": 5}\n', r"bad\.jsonl:1: text field 'text' is int, not a string"),
        (b'{"text": null}\n', r"bad\.jsonl:1: text field 'text' is NoneType"),
        (b'{"text": "a"}\n{"text": "caf\xe9"}\n', r"bad\.jsonl:2: not valid UTF-8"),
        (b'{"text": "\\ud800"}\n', r"bad\.jsonl:1: text contains an invalid code point"),
        (b'{"text": "x", "id": [1]}\n', r"bad\.jsonl:1: id field 'id' is list"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_bytes(content)
    with pytest.raises(PplawError, match=message):
        list(iter_documents(str(tmp_path / "bad.jsonl")))


def test_repeated_ids_are_refused_naming_both_lines(tmp_path):
    # a repeated id would make a selection of the second document train on the first one's chunks
    write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": "one"}, {"id": 2, "text": "two"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "y", "text": "three"}, {"id": "2", "text": "four"}])
    for host in (0, 1):  # every host sees the repeat, whichever shard holds it
        with pytest.raises(PplawError, match=r"b\.jsonl:2: document id '2' repeats a\.jsonl:2"):
            list(iter_documents(str(tmp_path), process_index=host, process_count=2))
    # without the id field the FILE:LINE ids are unique by construction
    assert len(list(iter_documents(str(tmp_path), id_field="no_such_field"))) == 4
    # max_docs stops before the repeat: nothing to refuse
    assert len(list(iter_documents(str(tmp_path), max_docs=3))) == 3


def test_bad_files(tmp_path):
    with pytest.raises(PplawError, match="no such file or directory"):
        iter_documents(str(tmp_path / "missing.jsonl"))
    (tmp_path / "notes.docx").write_text("a,b\n")
    with pytest.raises(PplawError, match="unsupported format"):
        iter_documents(str(tmp_path / "notes.docx"))
    with pytest.raises(PplawError, match="matches no files"):
        iter_documents(str(tmp_path / "*.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PplawError, match="contains no"):
        iter_documents(str(tmp_path / "empty"))
    (tmp_path / "latin1.txt").write_bytes(b"fine\nstill fine\nna\xefve\n")
    with pytest.raises(PplawError, match=r"latin1\.txt:3: not valid UTF-8"):
        list(iter_documents(str(tmp_path / "latin1.txt")))
    good = gzip.compress(b'{"text": "a"}\n' * 200)
    (tmp_path / "trunc.jsonl.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(PplawError, match=r"trunc\.jsonl\.gz:\d+: cannot read"):
        list(iter_documents(str(tmp_path / "trunc.jsonl.gz")))
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(PplawError, match=r"ints\.parquet: text column 'text' has type int64"):
        list(iter_documents(str(tmp_path / "ints.parquet")))
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "nulls.parquet")
    with pytest.raises(PplawError, match=r"nulls\.parquet:2: text column 'text' is null"):
        list(iter_documents(str(tmp_path / "nulls.parquet")))
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PplawError, match=r"garbage\.parquet: cannot read Parquet"):
        list(iter_documents(str(tmp_path / "garbage.parquet")))


def test_gcs_without_backend_is_a_clear_error():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(PplawError, match="gs://bucket/corpus.jsonl"):
            iter_documents("gs://bucket/corpus.jsonl")
    else:
        pytest.skip("gcsfs is installed; there is no offline GCS to read from")


# ----------------------------------------------------------------------------------------- TFDS
def _build_tfds(data_dir: Path, n: int) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({"text": tfds.features.Text(), "doc": tfds.features.Text()})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(n)}

        def _generate_examples(self, count):
            for i in range(count):
                yield i, {"text": f"tfds text {i} é", "doc": f"doc-{i}"}

    TinyCorpus(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_data_source_without_tensorflow(tmp_path, monkeypatch):
    _build_tfds(tmp_path, 9)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    docs = list(iter_documents("tfds:tiny_corpus:train", id_field="doc"))
    # the order is the array_record order (TFDS shuffles at preparation), fixed from then on
    assert sorted(d.doc_id for d in docs) == [f"doc-{i}" for i in range(9)]
    assert all(d.text == f"tfds text {d.doc_id[4:]} é" for d in docs)
    assert [d.line for d in docs] == list(range(1, 10))
    again = [d.doc_id for d in iter_documents("tfds:tiny_corpus:train", id_field="doc")]
    assert again == [d.doc_id for d in docs]
    shards = [
        [
            d.doc_id
            for d in iter_documents(
                "tfds:tiny_corpus:train", id_field="doc", process_index=h, process_count=2, max_docs=7
            )
        ]
        for h in range(2)
    ]
    assert shards == [again[0:7:2], again[1:7:2]]
    no_id = list(iter_documents("tfds:tiny_corpus:train[:2]"))
    assert [d.doc_id for d in no_id] == ["tfds:tiny_corpus:train[:2]:1", "tfds:tiny_corpus:train[:2]:2"]
    with pytest.raises(PplawError, match="missing text feature 'body'"):
        list(iter_documents("tfds:tiny_corpus:train", text_field="body"))
    with pytest.raises(PplawError, match="cannot open TFDS dataset 'no_such_corpus'"):
        list(iter_documents("tfds:no_such_corpus:train"))
    with pytest.raises(PplawError, match="split 'test'"):
        list(iter_documents("tfds:tiny_corpus:test"))
    with pytest.raises(PplawError, match="bad TFDS spec"):
        iter_documents("tfds:tiny_corpus")


# ------------------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 9, 15, 16, 17, 40])
def test_chunk_token_ids_contract(n):
    seq_len, start = 9, 99  # windows of 8 tokens
    ids = list(range(1, n + 1))
    chunks = chunk_token_ids(ids, seq_len, start)
    assert len(chunks) == -(-n // 8)
    assert all(c[0] == start and 2 <= len(c) <= seq_len for c in chunks)
    assert [t for c in chunks for t in c[1:]] == ids
    assert all(len(c) == seq_len for c in chunks[:-1])


def test_chunk_token_ids_edges():
    seq_len = 4
    assert chunk_token_ids([], seq_len, 0) == []
    assert chunk_token_ids([5], seq_len, 0) == [[0, 5]]
    assert chunk_token_ids([5, 6, 7], seq_len, 0) == [[0, 5, 6, 7]]  # len = seq_len - 1: one full chunk
    assert chunk_token_ids([5, 6, 7, 8], seq_len, 0) == [[0, 5, 6, 7], [0, 8]]  # len = seq_len
    assert chunk_token_ids([5, 6], 2, 1) == [[1, 5], [1, 6]]
    with pytest.raises(PplawError, match="seq_len"):
        chunk_token_ids([5], 1, 0)


def test_pad_batch():
    ids, mask = pad_batch([[1, 2, 3], [4]], batch_size=4, seq_len=5, pad_id=0)
    assert ids.dtype == np.int32 and ids.shape == (4, 5)
    np.testing.assert_array_equal(ids[:2], [[1, 2, 3, 0, 0], [4, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0] * 5, [0] * 5])
    with pytest.raises(ValueError):
        pad_batch([[1] * 6], batch_size=1, seq_len=5)
    with pytest.raises(ValueError):
        pad_batch([[1]] * 3, batch_size=2, seq_len=5)


class CharTokenizer:
    """One token per character (code point mod 97, plus 1); 0 starts documents."""

    doc_start_id = 0

    def __init__(self):
        self.encoded = []

    def encode_batch(self, texts):
        self.encoded.extend(texts)
        return [[ord(c) % 97 + 1 for c in t] for t in texts]


def test_iter_chunks_all_and_wanted(tmp_path):
    texts = ["abcdefghij", "", "xyz", "0123456789012345"]
    write_jsonl(tmp_path / "c.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    tok = CharTokenizer()
    got = list(iter_chunks(str(tmp_path / "c.jsonl"), tok, seq_len=5))
    want = [
        (f"d{i}", k, c)
        for i, t in enumerate(texts)
        for k, c in enumerate(chunk_token_ids([ord(ch) % 97 + 1 for ch in t], 5, 0))
    ]
    assert [tuple(c) for c in got] == want
    tok = CharTokenizer()
    picked = list(iter_chunks(str(tmp_path / "c.jsonl"), tok, seq_len=5, wanted={"d3": {1, 3}, "d2": [0]}))
    assert [tuple(c) for c in picked] == [w for w in want if (w[0], w[1]) in {("d3", 1), ("d3", 3), ("d2", 0)}]
    assert tok.encoded == ["xyz", "0123456789012345"]  # other documents are not tokenized


def test_iter_tokenized_groups_bounded_and_ordered():
    docs = [Document(f"d{i}", "x" * n, "mem", i + 1) for i, n in enumerate([5, 600, 3, 3, 3, 900, 1, 2])]
    groups = []

    def encode_batch(texts):
        groups.append([len(t) for t in texts])
        return [[len(t)] for t in texts]

    out = list(iter_tokenized(iter(docs), encode_batch, group_docs=3, group_chars=500))
    assert [(d.doc_id, ids) for d, ids in out] == [(d.doc_id, [len(d.text)]) for d in docs]
    assert groups == [[5, 600], [3, 3, 3], [900], [1, 2]]


def test_a_file_that_cannot_be_opened_is_named(tmp_path, monkeypatch):
    """An unreadable file gives one error naming it. The refusal is injected at open(): permission
    bits cannot make a file unreadable for root, which CI runs as."""
    import builtins

    from pplaw_jax.data import readers

    locked = tmp_path / "locked.jsonl"
    locked.write_text('{"text": "a"}\n')

    def refuse(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(readers, "open", refuse, raising=False)
    with pytest.raises(PplawError, match=r"locked\.jsonl: cannot open .*Permission denied"):
        list(iter_documents(str(locked)))
