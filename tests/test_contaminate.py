"""`pplaw data contaminate` (planted junk of known kinds and fraction) and `pplaw data cut --skip-docs`.

Every property is checked independently of the implementation: counts from the recipe's formulas,
each junk kind by what it should look like (same words as a clean document, ~25% of characters
edited, table columns, compressibility, a substring of the general corpus), byte-identical reruns,
the manifest written last, and exit 2 with a message naming the flag for each bad input.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
import string
import zlib
from collections import Counter

import pytest

import pplaw_jax.cli as top
import pplaw_jax.fileio as fileio
from pplaw_jax.cli import main
from pplaw_jax.data.contaminate import contaminate

ALL = ("general", "boilerplate", "garbled", "shuffled", "table")
LOW = ("general", "boilerplate")
HIGH = ("garbled", "shuffled", "table")
REGISTERED_FILE_OUTPUTS = set(top.FILE_OUTPUTS)  # as pplaw_jax/cli.py declares it, before the fixture


@pytest.fixture(autouse=True)
def _file_output(monkeypatch):
    # `--out` of `data contaminate` is a file; pplaw_jax/cli.py must list it in FILE_OUTPUTS
    # (test_out_is_declared_a_file_output checks that it does)
    monkeypatch.setattr(top, "FILE_OUTPUTS", top.FILE_OUTPUTS | {"data contaminate"})


def test_out_is_declared_a_file_output():
    assert "data contaminate" in REGISTERED_FILE_OUTPUTS


def _words(rng: random.Random, vocab: list[str], n: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))


def _vocab(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(n)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def corpora(tmp_path):
    rng = random.Random(7)
    vocab = _vocab(rng, 3000)
    clean = [{"id": f"doc-{i}", "text": _words(rng, vocab, rng.randint(60, 260)) + "."} for i in range(40)]
    general_vocab = _vocab(rng, 500)
    general = [{"id": f"book-{i}", "text": _words(rng, general_vocab, 2000)} for i in range(3)]
    return _write(tmp_path / "clean.jsonl", clean), _write(tmp_path / "general.jsonl", general), clean, general


def _run(clean_path, general_path, out, *extra):
    argv = ["data", "contaminate", "--data", str(clean_path), "--out", str(out), *extra]
    if general_path is not None:
        argv += ["--general", str(general_path)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    manifest = json.loads(out.with_name(out.name.removesuffix(".jsonl") + ".manifest.json").read_text())
    return rows, manifest


def _expected_counts(n_clean, fraction, low_share, kinds):
    n_junk = round(fraction * n_clean / (1 - fraction))
    low = [k for k in LOW if k in kinds]
    high = [k for k in HIGH if k in kinds]
    n_low = round(low_share * n_junk) if low and high else (n_junk if low else 0)
    counts = {}
    for members, n in ((low, n_low), (high, n_junk - n_low)):
        for i, kind in enumerate(members):  # round robin: the first n % k kinds get one more
            counts[kind] = n // len(members) + (i < n % len(members))
    return n_junk, n_low, counts


@pytest.mark.parametrize(
    "fraction,low_share,kinds",
    [
        (0.3, 0.5, "general,boilerplate,garbled,shuffled,table"),
        (0.5, 0.25, "table,garbled"),
        (0.2, 1.0, "shuffled,general"),
        (0.1, 0.7, "boilerplate"),
        (0.6, 0.0, "boilerplate,shuffled"),
        (0.0, 0.5, "general,boilerplate,garbled,shuffled,table"),
    ],
)
def test_counts_and_fractions_follow_the_recipe(corpora, tmp_path, fraction, low_share, kinds):
    clean_path, general_path, clean, _ = corpora
    rows, manifest = _run(
        clean_path,
        general_path if "general" in kinds else None,
        tmp_path / "out.jsonl",
        "--fraction",
        str(fraction),
        "--low-share",
        str(low_share),
        "--kinds",
        kinds,
    )
    requested = kinds.split(",")
    n_junk, n_low, expected = _expected_counts(len(clean), fraction, low_share, requested)
    labels = Counter(r["junk"] for r in rows)
    assert labels == Counter({"none": len(clean), **{k: n for k, n in expected.items() if n}})
    assert len(rows) == len(clean) + n_junk
    assert manifest["documents"] == {"clean": len(clean), "junk": n_junk, "total": len(clean) + n_junk}
    for kind in requested:
        texts = [r["text"] for r in rows if r["junk"] == kind]
        assert manifest["counts"][kind] == {"documents": expected[kind], "characters": sum(map(len, texts))}
        assert manifest["kind_class"][kind] == ("low" if kind in LOW else "high")
    assert manifest["classes"]["low"]["documents"] == n_low
    assert manifest["counts"]["none"]["characters"] == sum(len(d["text"]) for d in clean)
    junk_chars = sum(len(r["text"]) for r in rows if r["junk"] != "none")
    total_chars = sum(len(r["text"]) for r in rows)
    assert manifest["junk_fraction_documents"] == pytest.approx(n_junk / len(rows))
    assert manifest["junk_fraction_characters"] == pytest.approx(junk_chars / total_chars)
    if n_junk >= 20:  # lengths drawn from the clean documents: characters follow documents
        assert abs(manifest["junk_fraction_characters"] - manifest["junk_fraction_documents"]) < 0.12
    one_class = not any(k in LOW for k in requested) or not any(k in HIGH for k in requested)
    assert (manifest["class_note"] is not None) == one_class
    assert manifest["recipe"]["seed"] == 0 and manifest["recipe"]["fraction"] == fraction
    # every junk id follows junk-<kind>-<k>, k = 0..count-1
    for kind, n in expected.items():
        assert sorted(r["id"] for r in rows if r["junk"] == kind) == sorted(f"junk-{kind}-{k}" for k in range(n))


def test_clean_documents_are_all_there_unchanged_and_interleaved(corpora, tmp_path):
    clean_path, general_path, clean, _ = corpora
    rows, _ = _run(clean_path, general_path, tmp_path / "out.jsonl", "--fraction", "0.4")
    kept = [(r["id"], r["text"]) for r in rows if r["junk"] == "none"]
    assert sorted(kept) == sorted((d["id"], d["text"]) for d in clean)
    assert set(rows[0]) == {"id", "text", "junk"}
    positions = [i for i, r in enumerate(rows) if r["junk"] != "none"]
    assert positions != list(range(len(clean), len(rows)))  # junk not appended at the end
    assert positions[0] < len(rows) // 4 and positions[-1] > 3 * len(rows) // 4
    assert [i for i, _ in kept] != [d["id"] for d in clean]  # one permutation of all rows


def test_max_docs_takes_the_first_documents(corpora, tmp_path):
    clean_path, general_path, clean, _ = corpora
    rows, manifest = _run(clean_path, general_path, tmp_path / "out.jsonl", "--max-docs", "10")
    assert sorted(r["id"] for r in rows if r["junk"] == "none") == sorted(d["id"] for d in clean[:10])
    assert manifest["documents"]["junk"] == round(0.3 * 10 / 0.7)
    assert manifest["sources"]["data"]["documents_read"] == 10


def _edit_fraction(source: str, changed: str) -> float:
    ops = difflib.SequenceMatcher(None, source, changed, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal") / len(source)


def test_each_junk_kind_has_its_property(corpora, tmp_path):
    clean_path, general_path, clean, general = corpora
    rows, _ = _run(clean_path, general_path, tmp_path / "out.jsonl", "--fraction", "0.5")
    by_kind = {k: [r["text"] for r in rows if r["junk"] == k] for k in ALL}
    assert all(len(v) >= 6 for v in by_kind.values())
    clean_texts = [d["text"] for d in clean]
    clean_lengths = {len(t) for t in clean_texts}
    word_bags = [sorted(t.split()) for t in clean_texts]

    for text in by_kind["shuffled"]:  # the same multiset of words as a clean document, another order
        assert sorted(text.split()) in word_bags
        assert text not in clean_texts and text == " ".join(text.split())

    for text in by_kind["garbled"]:  # ~25% of the characters of its source edited
        words = set(text.split())
        source = max(clean_texts, key=lambda t: len(words & set(t.split())))
        assert 0.17 <= _edit_fraction(source, text) <= 0.33
        assert abs(len(text) - len(source)) < 0.15 * len(source)
        assert re.search(r"[0-9" + re.escape(string.punctuation.replace(".", "")) + "]", text)  # noise marks

    row = re.compile(r"^NCT\d{8} \| \d{1,3}\.\d \| [01]\.\d{3} \| [0-9A-F]{4}-\d{2} \| \d{4}-\d{2}-\d{2}$")
    for text in by_kind["table"]:  # a header and rows of five " | " columns of ids, decimals, dates
        lines = text.split("\n")
        assert len(lines) >= 2 and len(lines[0].split(" | ")) == 5 and not row.match(lines[0])
        assert all(row.match(line) for line in lines[1:])
        assert len(text) <= max(clean_lengths)

    boilerplate = "\n".join(by_kind["boilerplate"])
    clean_sample = "\n".join(clean_texts)[: len(boilerplate)]
    ratio = len(zlib.compress(boilerplate.encode(), 9)) / len(boilerplate)
    clean_ratio = len(zlib.compress(clean_sample.encode(), 9)) / len(clean_sample)
    assert ratio < 0.5 * clean_ratio, (ratio, clean_ratio)  # near-duplicate templates: highly redundant
    assert all(len(t) <= max(clean_lengths) and len(t) > 0 for t in by_kind["boilerplate"])

    general_texts = [g["text"] for g in general]
    for text in by_kind["general"]:  # a window of a general document, of a clean document's length
        assert any(text in g for g in general_texts)
        assert len(text) in clean_lengths
        assert text[0] != " "


def test_the_core_alone_negative_control_and_kind_order():
    texts = [f"clean text number {i} " * (i + 1) for i in range(12)]
    ids = [f"c{i}" for i in range(12)]
    rows, manifest = contaminate(texts, ids, fraction=0.0, kinds=("garbled",), seed=3)
    assert sorted((r["id"], r["text"]) for r in rows) == sorted(zip(ids, texts))
    assert {r["junk"] for r in rows} == {"none"} and manifest["junk_fraction_characters"] == 0
    a, _ = contaminate(texts, ids, fraction=0.5, kinds=("table", "shuffled"), seed=3)
    b, _ = contaminate(texts, ids, fraction=0.5, kinds=("shuffled", "table"), seed=3)
    assert a == b


def test_same_seed_same_bytes_other_seed_other_bytes(corpora, tmp_path):
    clean_path, general_path, _, _ = corpora
    (tmp_path / "b").mkdir()
    outs = [tmp_path / "a.jsonl", tmp_path / "b" / "a.jsonl", tmp_path / "c.jsonl"]
    for out, seed in zip(outs, ("5", "5", "6")):
        _run(clean_path, general_path, out, "--seed", seed)
    manifests = [o.with_name(o.name.replace(".jsonl", ".manifest.json")) for o in outs]
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert manifests[0].read_bytes() == manifests[1].read_bytes()
    assert outs[0].read_bytes() != outs[2].read_bytes()
    assert manifests[0].read_bytes() != manifests[2].read_bytes()


def test_manifest_is_written_last_with_hashes(corpora, tmp_path, monkeypatch):
    clean_path, general_path, _, _ = corpora
    written = []
    original = fileio.atomic_write

    def recording(path, write):
        original(path, write)
        written.append(str(path))

    monkeypatch.setattr(fileio, "atomic_write", recording)
    out = tmp_path / "train_junk30.jsonl"
    _, manifest = _run(clean_path, general_path, out)
    assert written == [str(out), str(tmp_path / "train_junk30.manifest.json")]
    assert manifest["version"]
    assert manifest["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["output"]["rows"] == len(out.read_text().splitlines())
    data_files = manifest["sources"]["data"]["files"]
    assert data_files == [{"path": "clean.jsonl", "sha256": hashlib.sha256(clean_path.read_bytes()).hexdigest()}]
    assert manifest["sources"]["general"]["files"][0]["sha256"] == hashlib.sha256(general_path.read_bytes()).hexdigest()
    assert manifest["recipe"]["data"] == str(clean_path) and manifest["recipe"]["general"] == str(general_path)


def test_a_failed_rewrite_leaves_no_marker(corpora, tmp_path, monkeypatch, capsys):
    clean_path, general_path, _, _ = corpora
    out = tmp_path / "out.jsonl"
    _run(clean_path, general_path, out)
    manifest = tmp_path / "out.manifest.json"
    assert manifest.exists()

    def failing(path, rows):
        raise fileio.PplawError(f"{path}: disk full")

    monkeypatch.setattr(fileio, "write_jsonl", failing)
    argv = [
        "data",
        "contaminate",
        "--data",
        str(clean_path),
        "--out",
        str(out),
        "--general",
        str(general_path),
        "--seed",
        "1",
    ]
    assert main(argv) == 2
    assert not manifest.exists()  # the old marker no longer vouches for a file that was being rewritten


def _bad(tmp_path, corpora, extra, message, capsys, data=None):
    clean_path, general_path, _, _ = corpora
    argv = ["data", "contaminate", "--data", str(data or clean_path), *extra]
    if "--out" not in extra:
        argv += ["--out", str(tmp_path / "bad" / "out.jsonl")]
    before = clean_path.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert clean_path.read_bytes() == before
    assert not (tmp_path / "bad" / "out.manifest.json").exists()
    assert not (tmp_path / "bad" / "out.jsonl").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--fraction", "1.0", "--kinds", "table"], r"--fraction"),
        (["--fraction", "-0.1", "--kinds", "table"], r"--fraction"),
        (["--fraction", "nan", "--kinds", "table"], r"--fraction"),
        (["--low-share", "1.5", "--kinds", "table"], r"--low-share"),
        (["--low-share", "-0.5", "--kinds", "table"], r"--low-share"),
        (["--kinds", "garbled,spam"], r"--kinds.*'spam'"),
        (["--kinds", ","], r"--kinds"),
        (["--kinds", "general,table"], r"--general"),
        ([], r"--general"),  # the default kinds include general
        (["--kinds", "table", "--max-docs", "0"], r"--max-docs"),
        (["--kinds", "table", "--seed", "-1"], r"--seed"),
    ],
)
def test_bad_settings_exit_2_naming_the_flag(corpora, tmp_path, capsys, extra, message):
    _bad(tmp_path, corpora, extra, message, capsys)


def test_bad_corpora_exit_2(corpora, tmp_path, capsys):
    clean_path = corpora[0]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _bad(tmp_path, corpora, ["--kinds", "table"], r"--data .*empty\.jsonl.*no documents", capsys, data=empty)
    blank = _write(tmp_path / "blank.jsonl", [{"id": "x", "text": "  \n"}])
    _bad(tmp_path, corpora, ["--kinds", "table"], r"--data", capsys, data=blank)
    colliding = _write(
        tmp_path / "colliding.jsonl",
        [{"id": "junk-table-0", "text": "a clean text"}] * 1
        + [{"id": f"d{i}", "text": "more clean text"} for i in range(5)],
    )
    _bad(tmp_path, corpora, ["--kinds", "table"], r"junk-table-0", capsys, data=colliding)
    # --out is the input, spelled another way: refused, the input untouched
    same = str(tmp_path / "bad" / ".." / clean_path.name)
    (tmp_path / "bad").mkdir()
    _bad(tmp_path, corpora, ["--kinds", "table", "--out", same], r"--out .*--data", capsys)
    _bad(
        tmp_path, corpora, ["--kinds", "table", "--out", str(tmp_path / "bad" / "out.txt")], r"--out .*\.jsonl", capsys
    )


def test_general_corpus_is_never_overwritten(corpora, tmp_path, capsys):
    clean_path, general_path, _, _ = corpora
    before = general_path.read_bytes()
    argv = [
        "data",
        "contaminate",
        "--data",
        str(clean_path),
        "--general",
        str(general_path),
        "--out",
        str(general_path),
    ]
    assert main(argv) == 2
    assert "--general" in capsys.readouterr().err
    assert general_path.read_bytes() == before


@pytest.fixture
def ten_docs(tmp_path):
    return _write(tmp_path / "ten.jsonl", [{"id": f"d{i}", "text": f"document {i} " * 5} for i in range(10)])


@pytest.mark.parametrize(
    "skip,max_docs,expected",
    [
        (3, 4, [3, 4, 5, 6]),
        (8, 5, [8, 9]),
        (0, None, list(range(10))),
        (7, None, [7, 8, 9]),
    ],
)
def test_cut_skip_docs(ten_docs, tmp_path, skip, max_docs, expected):
    out = tmp_path / "cut.jsonl"
    argv = ["data", "cut", "--data", str(ten_docs), "--chars", "1000", "--out", str(out), "--skip-docs", str(skip)]
    if max_docs is not None:
        argv += ["--max-docs", str(max_docs)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"d{i}" for i in expected]
    assert [r["text"] for r in rows] == [f"document {i} " * 5 for i in expected]


@pytest.mark.parametrize("skip,max_docs", [(12, 2), (2, 0)])
def test_cut_that_would_write_no_document_is_refused(ten_docs, tmp_path, capsys, skip, max_docs):
    """An empty validation split would make every law-fitting run's loss meaningless: refused."""
    out = tmp_path / "cut.jsonl"
    assert (
        main(
            [
                "data",
                "cut",
                "--data",
                str(ten_docs),
                "--chars",
                "1000",
                "--out",
                str(out),
                "--skip-docs",
                str(skip),
                "--max-docs",
                str(max_docs),
            ]
        )
        == 2
    )
    assert "no documents to write" in capsys.readouterr().err and not out.exists()


def test_cut_negative_skip_is_refused(ten_docs, tmp_path, capsys):
    out = tmp_path / "cut.jsonl"
    assert main(["data", "cut", "--data", str(ten_docs), "--chars", "10", "--out", str(out), "--skip-docs", "-1"]) == 2
    assert "--skip-docs" in capsys.readouterr().err and not out.exists()
