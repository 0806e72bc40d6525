"""Corpora as users hold them: the same documents written as JSONL (plain, zstd), a JSON array,
CSV, Parquet, a Hugging Face `datasets` directory and a hub dataset in the local cache read back
as the same (id, text) stream; a study runs on a `datasets` directory and a hub id."""

from __future__ import annotations

import csv
import json

import pytest

from pplaw_jax.cli import main
from pplaw_jax.data.readers import iter_documents
from pplaw_jax.errors import PplawError

datasets = pytest.importorskip("datasets")

ROWS = [
    {"id": "a", "text": "plain text"},
    {"id": "b", "text": 'a "quoted", comma\nand a second line'},
    {"id": "c", "text": "naïve café 東京 🙂"},
    {"id": "d", "text": "   "},
    {"id": "e", "text": "x" * 200_000},  # longer than csv's default field limit
]
EXPECTED = [(r["id"], r["text"]) for r in ROWS]


def write_all_formats(root, rows):
    """{format: spec} for `rows` written in every supported format."""
    import pandas as pd
    import zstandard

    root.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (root / "c.jsonl").write_bytes(lines)
    (root / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    (root / "c.json").write_text(json.dumps(rows, indent=1))
    with open(root / "c.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    pd.DataFrame(rows).to_parquet(root / "c.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "saved"), max_shard_size="100KB")
    return {name: str(root / name) for name in ("c.jsonl", "c.jsonl.zst", "c.json", "c.csv", "c.parquet", "saved")}


def hub_cache(root, repo: str, splits: dict) -> None:
    """A hub dataset `repo` as huggingface_hub's cache keeps it: data/SPLIT-00000-of-00001.parquet."""
    import pandas as pd

    commit = "fedcba9876543210fedcba9876543210fedcba98"
    folder = root / "hub" / f"datasets--{repo.replace('/', '--')}"
    data = folder / "snapshots" / commit / "data"
    data.mkdir(parents=True)
    for split, rows in splits.items():
        pd.DataFrame(rows).to_parquet(data / f"{split}-00000-of-00001.parquet")
    (folder / "snapshots" / commit / "README.md").write_text("# a dataset card\n")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    for key, value in (("HF_HOME", home), ("HF_HUB_CACHE", home / "hub"), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_every_format_reads_the_same_documents(tmp_path):
    specs = write_all_formats(tmp_path, ROWS)
    assert len(list((tmp_path / "saved").glob("*.arrow"))) > 1  # shards, read in state.json's order
    for name, spec in specs.items():
        assert [(d.doc_id, d.text) for d in iter_documents(spec)] == EXPECTED, name


def test_hub_dataset_split_from_the_cache(offline_hub):
    held_out = [{"id": f"t{i}", "text": f"held out {i}"} for i in range(3)]
    hub_cache(offline_hub, "acme/tiny", {"train": ROWS, "test": held_out[:2], "validation": held_out[2:]})
    assert [(d.doc_id, d.text) for d in iter_documents("hf:acme/tiny:train")] == EXPECTED
    assert [d.doc_id for d in iter_documents("hf:acme/tiny@main:test")] == ["t0", "t1"]
    every = [d.doc_id for d in iter_documents("hf:acme/tiny")]  # every split, files sorted
    assert every == ["t0", "t1", "a", "b", "c", "d", "e", "t2"]
    with pytest.raises(PplawError, match=r"hf:acme/nope:train: dataset 'acme/nope' is not in the Hugging Face cache"):
        list(iter_documents("hf:acme/nope:train"))
    with pytest.raises(PplawError, match="no .* files for split 'dev'"):
        list(iter_documents("hf:acme/tiny:dev"))


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.json", '{"id": "a", "text": "x"}', r"bad\.json: expected a JSON array of objects, got dict"),
        ("bad.json", '[{"id": "a", "text": "x"}, 3]', r"bad\.json: record 2: expected a JSON object, got int"),
        ("bad.json", '[{"id": "a",\n "text": }]', r"bad\.json:2: malformed JSON"),
        ("bad.csv", "id,body\na,x\n", r"bad\.csv:1: missing text column 'text'"),
        ("bad.csv", 'id,text\na,"x"\nb,y,extra\n', r"bad\.csv:3: more fields than the header's 2"),
    ],
)
def test_bad_files_name_the_place(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(PplawError, match=message):
        list(iter_documents(str(tmp_path / name)))


def test_a_dataset_dict_names_its_splits(tmp_path):
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    ).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(PplawError, match=r"DatasetDict with splits \['train', 'test'\]; name one, e.g. .*dd/train"):
        list(iter_documents(str(tmp_path / "dd")))
    assert [d.doc_id for d in iter_documents(str(tmp_path / "dd" / "test"))] == ["c", "d", "e"]


def test_a_study_runs_on_a_datasets_directory_and_a_hub_id(tmp_path, offline_hub):
    """`pplaw run` through the landscape with the domain pool a `save_to_disk` directory and the
    test split a hub dataset from the cache."""
    import yaml
    from tiny_hf import WORDS, save_tiny_llama

    words = " ".join(WORDS).split()
    # each word carries its document's number, so a cloze question says which split it came from
    rows = [
        {"id": f"d{i}", "text": " ".join(f"{words[(i * 7 + k) % len(words)]}{i}" for k in range(40 + i))}
        for i in range(40)
    ]
    datasets.Dataset.from_list(rows[:30]).save_to_disk(str(tmp_path / "pool"))
    hub_cache(offline_hub, "acme/tiny-med", {"test": rows[30:]})
    model = save_tiny_llama(tmp_path / "model", seed=1)
    config = {
        "name": "formats",
        "out_dir": str(tmp_path / "study"),
        "base_model": str(model),
        "data": {
            "domain_train": str(tmp_path / "pool"),
            "domain_test": "hf:acme/tiny-med:test",
            "domain_max_docs": 24,
            "eval_max_docs": 6,
        },
        "landscape": {"seq_len": 32, "batch_size": 8},
        "train": {"seq_len": 32},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "c.yaml"), "--until", "landscape"]) == 0
    summary = json.loads((tmp_path / "study" / "landscape" / "summary.json").read_text())
    assert summary["documents"] == 24
    questions = [json.loads(line)["question"] for line in (tmp_path / "study" / "data" / "domain_cloze.jsonl").open()]
    assert questions and {int(q.split()[0].lstrip("abcdefghijklmnopqrstuvwxyz")) for q in questions} <= set(
        range(30, 40)
    )


def test_landscape_export_as_document_columns(tmp_path, capsys):
    """`pplaw landscape export`: one row per scored document, its ppl the exp of its mean token NLL
    over the landscape's chunks, readable back as a corpus (Parquet) and as a datasets directory."""
    import numpy as np
    import pandas as pd
    from tiny_hf import WORDS, save_tiny_llama

    from pplaw_jax.landscape.directory import read_parts

    rows = [{"id": f"d{i}", "text": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(20 + 9 * i))} for i in range(6)]
    rows.append({"id": "empty", "text": ""})  # no tokens: skipped by the scorer
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = save_tiny_llama(tmp_path / "model", seed=2)
    assert (
        main(
            ["score", "--model", str(model), "--data", str(corpus), "--out", str(tmp_path / "land"), "--seq-len", "16"]
        )
        == 0
    )
    chunks = read_parts(tmp_path / "land")
    capsys.readouterr()
    for fmt in ("parquet", "hf"):
        assert (
            main(
                [
                    "landscape",
                    "export",
                    "--landscape",
                    str(tmp_path / "land"),
                    "--data",
                    str(corpus),
                    "--out",
                    str(tmp_path / fmt),
                    "--format",
                    fmt,
                ]
            )
            == 0
        )
        printed = json.loads(capsys.readouterr().out)
        assert (printed["documents"], printed["left_out"]) == (6, 1)
        spec = str(tmp_path / "parquet" / "landscape.parquet") if fmt == "parquet" else str(tmp_path / "hf" / "dataset")
        docs = {d.doc_id: d.text for d in iter_documents(spec)}
        assert docs == {r["id"]: r["text"] for r in rows[:6]}
    table = pd.read_parquet(tmp_path / "parquet" / "landscape.parquet").set_index("id")
    for doc_id, group in chunks.groupby("doc_id"):
        assert table.loc[doc_id, "chunks"] == len(group) > 0
        assert table.loc[doc_id, "ppl"] == pytest.approx(np.exp(group.sum_nll.sum() / group.n_tokens.sum()))
        assert table.loc[doc_id, "chunk_ppl_max"] == pytest.approx(group.ppl.max())
    assert len(set(chunks.groupby("doc_id").size())) > 1  # documents of several chunks: the join is tested
