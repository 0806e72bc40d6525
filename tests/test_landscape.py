"""`pplaw score`: NLL arithmetic, parts/resume logic, multi-host splitting, and agreement with PyTorch."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tiny_hf import WORDS, save_tiny_llama

from pplaw_jax.cli import main
from pplaw_jax.data import Document, iter_documents
from pplaw_jax.errors import PplawError
from pplaw_jax.landscape.directory import PART_SCHEMA, iter_done_parts, read_parts
from pplaw_jax.landscape.score import score_corpus
from pplaw_jax.models.loss import token_nll

REPO = Path(__file__).resolve().parents[1]
KEY = ["doc_id", "chunk"]


def sorted_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY).reset_index(drop=True)


# ------------------------------------------------------------------------------- the scoring loss
def reference_nll(logits: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = logits.astype(np.float64)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    sums, counts = [], []
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        sums.append(-sum(logp[b, t, ids[b, t + 1]] for t in range(n - 1)))
        counts.append(max(n - 1, 0))
    return np.asarray(sums), np.asarray(counts)


def test_scoring_loss_matches_reference():
    rng = np.random.default_rng(0)
    B, T, V = 4, 7, 13
    logits = rng.normal(scale=3.0, size=(B, T, V)).astype(np.float32)
    ids = rng.integers(0, V, size=(B, T)).astype(np.int32)
    lengths = [7, 4, 1, 0]  # full, padded, start token only (nothing scored), dummy row
    mask = (np.arange(T)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    ids[mask == 0] = 0
    score = jax.jit(lambda lg, i, m: token_nll(lg, i, m.sum(axis=1)))  # what make_score_fn computes
    got_sum, got_n = score(logits, ids, mask)
    want_sum, want_n = reference_nll(logits, ids, mask)
    np.testing.assert_array_equal(np.asarray(got_n), want_n)
    np.testing.assert_allclose(np.asarray(got_sum), want_sum, rtol=1e-6, atol=1e-6)
    # bfloat16 logits: the log-softmax runs in float32, so only the bf16 rounding of the inputs shows
    bf16 = jnp.asarray(logits, dtype=jnp.bfloat16)
    got_bf16, _ = score(bf16, ids, mask)
    want_bf16, _ = reference_nll(np.asarray(bf16.astype(jnp.float32)), ids, mask)
    np.testing.assert_allclose(np.asarray(got_bf16), want_bf16, rtol=1e-6, atol=1e-5)


# ----------------------------------------------------------------- driver with an injected scorer
def char_encode(texts):
    """One token per character, with its start offset (what `score_corpus` takes)."""
    return [([ord(c) % 50 + 1 for c in t], list(range(len(t)))) for t in texts]


ALPHABET = "abcdefghijklmnopqrstuvwxyzé€𝔸"  # 1-, 2-, 3- and 4-byte UTF-8 characters


def fake_token_nll(ids: np.ndarray) -> np.ndarray:
    """A made-up per-target NLL that depends only on the target id and its position."""
    pos = np.arange(ids.shape[-1])
    return 0.1 * ids + 0.01 * pos + 0.5


class FakeScorer:
    """numpy score_fn: sums `fake_token_nll` over masked targets; counts calls; can fail on call k."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.shapes = set()

    def __call__(self, ids, mask):
        self.calls += 1
        self.shapes.add(ids.shape)
        if self.calls == self.fail_on_call:
            raise RuntimeError("injected crash")
        nll = fake_token_nll(ids[:, 1:]) * (mask[:, 1:] > 0)
        return nll.sum(-1).astype(np.float32), (mask[:, 1:] > 0).sum(-1)


def make_docs(n: int, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        length = int(rng.choice([0, 1, 5, 12, 30]))
        text = "".join(ALPHABET[int(c)] for c in rng.integers(0, len(ALPHABET), size=length))
        docs.append(Document(f"doc{i:03d}", text, "mem", i + 1))
    return docs


def expected_rows(docs: list[Document], seq_len: int) -> pd.DataFrame:
    rows = []
    for d in docs:
        ids = char_encode([d.text])[0][0]
        for k, start in enumerate(range(0, len(ids), seq_len - 1)):
            window = np.asarray(ids[start : start + seq_len - 1])  # the scored targets
            nll = fake_token_nll(window)
            n_bytes = len(d.text[start : start + seq_len - 1].encode("utf-8"))  # one token per character
            rows.append((d.doc_id, k, len(window), float(np.float32(nll.sum())), n_bytes))
    df = pd.DataFrame(rows, columns=["doc_id", "chunk", "n_tokens", "sum_nll", "n_bytes"])
    df["ppl"] = np.exp(df.sum_nll / df.n_tokens)
    return df[["doc_id", "chunk", "n_tokens", "sum_nll", "ppl", "n_bytes"]]


def run_fake(out, docs, scorer, **kw):
    args = dict(
        out_dir=out,
        score_fn=scorer,
        encode_batch=char_encode,
        start_id=0,
        seq_len=8,
        batch_size=4,
        run_args={"model": "fake", "data": "mem"},
        docs_per_part=5,
        progress=False,
    )
    args.update(kw)
    return score_corpus(iter(docs), **args)


def test_non_finite_scores_and_ids_past_the_vocabulary_are_never_written(tmp_path):
    """A model whose logits are NaN for some document, or a tokenizer whose ids run past the
    model's vocabulary, stops the run with one error naming the document; no part is marked done."""
    docs = [Document(f"doc{i}", "abcdefgh" * 3, "mem", i + 1) for i in range(6)]

    def nan_in_the_first_batch(ids, mask):
        nll, count = FakeScorer()(ids, mask)
        nll = nll.astype(np.float64)
        nll[1] = np.nan  # the second row of every batch: doc0's chunk 1 in the first one
        return nll, count

    with pytest.raises(PplawError, match=r"document 'doc0' chunk 1 as nan"):
        run_fake(tmp_path / "nan", docs, nan_in_the_first_batch)
    assert not list((tmp_path / "nan" / "parts").glob("*.done"))
    with pytest.raises(PplawError, match=r"document 'doc0': token id 50 is outside the model's vocabulary of 40"):
        run_fake(tmp_path / "vocab", docs, FakeScorer(), vocab_size=40)
    assert not list((tmp_path / "vocab" / "parts").glob("*.done"))
    run_fake(tmp_path / "fits", docs, FakeScorer(), vocab_size=51)  # every id below 51: scored


def test_score_corpus_rows_parts_and_summary(tmp_path):
    docs = make_docs(23)
    scorer = FakeScorer()
    summary = run_fake(tmp_path / "out", docs, scorer)
    got = read_parts(tmp_path / "out")
    want = expected_rows(docs, seq_len=8)
    assert pq.read_schema(next(iter_done_parts(tmp_path / "out"))[2]).equals(PART_SCHEMA)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-6)  # in reading order
    assert scorer.shapes == {(4, 8)}  # one static shape: short final batches are padded
    assert len(list(iter_done_parts(tmp_path / "out"))) == 5  # ceil(23 / 5)
    n_empty = sum(d.text == "" for d in docs)
    assert summary["documents"] == 23 and summary["skipped"] == n_empty > 0
    assert summary["chunks"] == len(want) and summary["tokens"] == want.n_tokens.sum()
    ppl = want.ppl.to_numpy()
    assert summary["ppl"]["mean"] == pytest.approx(ppl.mean(), rel=1e-9)
    assert summary["ppl"]["std"] == pytest.approx(ppl.std(ddof=0), rel=1e-9)
    assert summary["ppl"]["quantiles"]["q25"] == pytest.approx(np.quantile(ppl, 0.25), rel=1e-9)
    assert summary["ppl"]["quantiles"]["q99"] == pytest.approx(np.quantile(ppl, 0.99), rel=1e-9)
    assert summary["logppl"]["mean"] == pytest.approx(np.log(ppl).mean(), rel=1e-9)
    assert summary["logppl"]["std"] == pytest.approx(np.log(ppl).std(ddof=0), rel=1e-9)
    assert summary["corpus_ppl"] == pytest.approx(math.exp(want.sum_nll.sum() / want.n_tokens.sum()), rel=1e-9)
    # bytes: every scored document's UTF-8 bytes, once; bits per byte from them
    assert summary["bytes"] == sum(len(d.text.encode("utf-8")) for d in docs) > sum(len(d.text) for d in docs)
    assert summary["bits_per_byte"] == pytest.approx(want.sum_nll.sum() / math.log(2) / summary["bytes"], rel=1e-9)
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert (tmp_path / "out" / "histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_after_crash_is_exact_and_skips_done_parts(tmp_path):
    docs = make_docs(23, seed=1)
    run_fake(tmp_path / "ref", docs, FakeScorer())
    reference = read_parts(tmp_path / "ref")

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="injected crash"):
        run_fake(out, docs, FakeScorer(fail_on_call=5))
    done = list(iter_done_parts(out))
    assert 0 < len(done) < 5 and not (out / "summary.json").exists()
    stamps = {p: (p.stat().st_mtime_ns, p.with_suffix(".done").stat().st_mtime_ns) for _, _, p in done}
    # what a kill in the middle of writing the next part could leave behind
    unfinished = out / "parts" / f"host000-part{len(done):05d}"
    unfinished.with_suffix(".parquet").write_bytes(b"half a parquet file")
    unfinished.with_name(unfinished.name + ".parquet.x1y2z3.tmp").write_bytes(b"partial")

    scorer = FakeScorer()
    run_fake(out, docs, scorer)
    resumed = read_parts(out)
    pd.testing.assert_frame_equal(resumed, reference, check_exact=True)
    assert not resumed.duplicated(KEY).any()
    assert {p: (p.stat().st_mtime_ns, p.with_suffix(".done").stat().st_mtime_ns) for p in stamps} == stamps
    # only the batches of unfinished parts were scored again
    batches = [math.ceil(len(expected_rows(docs[5 * k : 5 * k + 5], 8)) / 4) for k in range(len(done), 5)]
    assert scorer.calls == sum(batches)
    assert not list((out / "parts").glob("*.tmp"))


def test_refuses_other_arguments_and_changed_data(tmp_path):
    docs = make_docs(12, seed=2)
    run_fake(tmp_path / "out", docs, FakeScorer())
    with pytest.raises(PplawError, match="seq_len: 8 -> 16"):
        run_fake(tmp_path / "out", docs, FakeScorer(), seq_len=16)
    with pytest.raises(PplawError, match="model: 'fake' -> 'other'"):
        run_fake(tmp_path / "out", docs, FakeScorer(), run_args={"model": "other", "data": "mem"})
    changed = docs[:3] + [Document("inserted", "abc", "mem", 0)] + docs[3:]
    with pytest.raises(PplawError, match="the data changed since this part was written"):
        run_fake(tmp_path / "out", changed, FakeScorer())
    # batch size is not part of the identity: resuming with another one is allowed
    run_fake(tmp_path / "out", docs, FakeScorer(), batch_size=8)


def test_two_hosts_write_the_same_rows_as_one(tmp_path, monkeypatch):
    monkeypatch.setattr("pplaw_jax.landscape.score.HOST_WAIT_POLL_S", 0.02)
    records = make_docs(17, seed=3)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.doc_id, "text": d.text}) + "\n" for d in records))
    single = run_fake(tmp_path / "one", iter_documents(str(corpus)), FakeScorer())

    def host(h):
        docs = iter_documents(str(corpus), process_index=h, process_count=2)
        return run_fake(tmp_path / "two", docs, FakeScorer(), process_index=h, process_count=2)

    # host 0 finishes its parts first and waits for host 1's marker before writing the summary
    result = {}
    waiter = threading.Thread(target=lambda: result.update(summary=host(0)))
    waiter.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "two" / "parts" / "host000.done").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    assert waiter.is_alive() and not (tmp_path / "two" / "summary.json").exists()
    assert host(1) is None
    waiter.join(timeout=30)
    both = result["summary"]
    pd.testing.assert_frame_equal(
        sorted_rows(read_parts(tmp_path / "two")), sorted_rows(read_parts(tmp_path / "one")), check_exact=True
    )
    for key in ("documents", "skipped", "chunks", "tokens", "ppl", "logppl"):
        assert both[key] == single[key]
    assert {h for h, _, _ in iter_done_parts(tmp_path / "two")} == {0, 1}


def test_a_failing_host_stops_the_waiting_ones(tmp_path, monkeypatch):
    monkeypatch.setattr("pplaw_jax.landscape.score.HOST_WAIT_POLL_S", 0.02)
    docs = make_docs(10, seed=4)
    with pytest.raises(RuntimeError, match="injected crash"):
        run_fake(tmp_path / "out", docs[1::2], FakeScorer(fail_on_call=1), process_index=1, process_count=2)
    assert "injected crash" in (tmp_path / "out" / "parts" / "host001.failed").read_text()
    with pytest.raises(PplawError, match=r"host 1 failed \(RuntimeError: injected crash\)"):
        run_fake(tmp_path / "out", docs[0::2], FakeScorer(), process_index=0, process_count=2)
    assert not (tmp_path / "out" / "summary.json").exists()
    # the rerun of host 1 clears its failure; host 0 (already done) then completes the landscape
    assert run_fake(tmp_path / "out", docs[1::2], FakeScorer(), process_index=1, process_count=2) is None
    assert not (tmp_path / "out" / "parts" / "host001.failed").exists()
    summary = run_fake(tmp_path / "out", docs[0::2], FakeScorer(), process_index=0, process_count=2)
    assert summary["documents"] == 10
    assert oct((tmp_path / "out" / "summary.json").stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------- real model vs PyTorch
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random 2-layer HF Llama (GQA, untied) with a byte-level BPE tokenizer, saved to disk."""
    root = tmp_path_factory.mktemp("tiny_llama")
    save_tiny_llama(root / "model", seed=0)

    rng = np.random.default_rng(0)
    docs = []
    for i, n in enumerate([0, 3, 60, 17, 150, 1, 45, 90, 0, 33, 8, 120]):
        docs.append({"id": f"t{i:02d}", "text": " ".join(rng.choice(WORDS, size=n))})
    docs.append({"id": "ws", "text": "   "})
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return root / "model", corpus


@pytest.fixture(scope="module")
def torch_rows(tiny_llama):
    """Per-chunk NLL from transformers' own tokenizer and model, chunked by hand (seq_len 24)."""
    import torch
    import transformers

    model_dir, corpus = tiny_llama
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    start = tok.bos_token_id
    rows = []
    for line in corpus.read_text().splitlines():
        doc = json.loads(line)
        ids = tok(doc["text"], add_special_tokens=False)["input_ids"]
        for k in range(math.ceil(len(ids) / 23)):
            seq = torch.tensor([[start] + ids[23 * k : 23 * (k + 1)]])
            with torch.no_grad():
                logits = model(seq).logits[0, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits, seq[0, 1:], reduction="sum").item()
            rows.append((doc["id"], k, seq.shape[1] - 1, nll))
    return sorted_rows(pd.DataFrame(rows, columns=["doc_id", "chunk", "n_tokens", "sum_nll"]))


def run_cli(*args: str) -> int:
    return main(["score", *args])


def test_chunk_bytes_partition_each_document_with_a_real_tokenizer(tiny_llama):
    """With a real BPE tokenizer the windows' texts (first token to the next window's first token)
    cover each document exactly once: their bytes add up to its UTF-8 bytes, whatever seq_len."""
    from pplaw_jax.data.chunking import chunk_token_ids, window_bytes
    from pplaw_jax.models import load_model

    model_dir, corpus = tiny_llama
    tok = load_model(str(model_dir)).tokenizer
    texts = [d.text for d in iter_documents(str(corpus)) if d.text] + ["naïve café — 𝔸 ünïcödé  spaced  out "]
    for seq_len in (3, 8, 50):
        for text, (ids, starts) in zip(texts, tok.encode_batch_with_starts(texts)):
            sizes = window_bytes(text, starts, seq_len)
            assert len(sizes) == len(chunk_token_ids(ids, seq_len, 0))
            assert sum(sizes) == len(text.encode("utf-8")) and min(sizes) >= 0


def test_cli_matches_pytorch(tiny_llama, torch_rows, tmp_path, capsys):
    model_dir, corpus = tiny_llama
    out = tmp_path / "land"
    assert (
        run_cli(
            "--model",
            str(model_dir),
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--seq-len",
            "24",
            "--docs-per-part",
            "4",
            "--mesh",
            "data=8",
        )
        == 0
    )
    got = sorted_rows(read_parts(out))
    assert got[KEY + ["n_tokens"]].equals(torch_rows[KEY + ["n_tokens"]])
    np.testing.assert_allclose(got.sum_nll, torch_rows.sum_nll, rtol=1e-4)
    np.testing.assert_allclose(got.ppl, np.exp(got.sum_nll / got.n_tokens), rtol=1e-12)
    assert torch_rows.sum_nll.std() > 1.0  # the chunks really differ: the comparison has teeth
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["documents"], summary["skipped"], summary["chunks"]) == (13, 2, len(torch_rows))
    assert summary["tokens"] == torch_rows.n_tokens.sum()
    assert summary["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1} and summary["batch_size"] == 8
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["chunks"] == len(torch_rows)


@pytest.mark.parametrize(
    "mesh_spec, n_devices, dtype, rtol",
    [
        ("data=1", 1, "float32", 1e-4),
        ("data=2,fsdp=2,tensor=2", 8, "float32", 1e-4),
        ("data=4,fsdp=2", 8, "bfloat16", 3e-2),
    ],
)
def test_meshes_and_dtypes_agree_with_pytorch(tiny_llama, torch_rows, tmp_path, mesh_spec, n_devices, dtype, rtol):
    from pplaw_jax.distributed import make_mesh
    from pplaw_jax.landscape.score import make_score_fn
    from pplaw_jax.models import load_model

    model_dir, corpus = tiny_llama
    loaded = load_model(str(model_dir), dtype=dtype)
    mesh = make_mesh(mesh_spec, devices=jax.devices()[:n_devices])
    score_corpus(
        iter_documents(str(corpus)),
        out_dir=tmp_path / "land",
        score_fn=make_score_fn(loaded.model, mesh),
        encode_batch=loaded.tokenizer.encode_batch_with_starts,
        start_id=loaded.tokenizer.doc_start_id,
        seq_len=24,
        batch_size=8,
        run_args={"mesh": mesh_spec},
        docs_per_part=5,
        progress=False,
    )
    got = sorted_rows(read_parts(tmp_path / "land"))
    assert got[KEY + ["n_tokens"]].equals(torch_rows[KEY + ["n_tokens"]])
    np.testing.assert_allclose(got.sum_nll, torch_rows.sum_nll, rtol=rtol)


def test_bad_input_exits_nonzero_without_summary(tiny_llama, tmp_path, capsys):
    model_dir, corpus = tiny_llama
    bad = tmp_path / "bad.jsonl"
    bad.write_text(corpus.read_text() + '{"id": "x", "text": "unterminated}\n')
    out = tmp_path / "out"
    assert run_cli("--model", str(model_dir), "--data", str(bad), "--out", str(out), "--seq-len", "24") == 2
    assert "bad.jsonl:14: malformed JSON" in capsys.readouterr().err
    assert not (out / "summary.json").exists()

    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    assert run_cli("--model", str(tmp_path / "weights.bin"), "--data", str(corpus), "--out", str(tmp_path / "o2")) == 2
    assert "not a model" in capsys.readouterr().err
    assert (
        run_cli("--model", str(model_dir), "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o3")) == 2
    )
    assert "no such file or directory" in capsys.readouterr().err
    assert (
        run_cli(
            "--model",
            str(model_dir),
            "--data",
            str(corpus),
            "--out",
            str(tmp_path / "o4"),
            "--batch-size",
            "6",
            "--mesh",
            "data=4,fsdp=2",
        )
        == 2
    )
    assert "not a multiple of the data x fsdp mesh size 8" in capsys.readouterr().err
    assert (
        run_cli("--model", str(model_dir), "--data", str(corpus), "--out", str(tmp_path / "o5"), "--batch-size", "0")
        == 2
    )  # not silently the default
    assert "--batch-size: 0 out of range (must be >= 1)" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "e", "text": ""}\n{"id": "f", "text": ""}\n')
    assert (
        run_cli("--model", str(model_dir), "--data", str(empty), "--out", str(tmp_path / "o6"), "--seq-len", "24") == 2
    )
    assert "empty.jsonl: no scorable text (2 documents" in capsys.readouterr().err
    for o in ("o2", "o3", "o4", "o5", "o6"):
        assert not (tmp_path / o / "summary.json").exists()


def test_new_weights_or_data_at_the_same_path_are_another_run(tiny_llama, tmp_path, capsys):
    """Resume identified the model by its path only: new weights copied over the old ones between
    a kill and the resume finished with rows of both models.  Now the content is part of the run."""
    import shutil

    model_dir, corpus = tiny_llama
    model, data = tmp_path / "model", tmp_path / "corpus.jsonl"
    shutil.copytree(model_dir, model)
    shutil.copy(corpus, data)
    args = ["--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"), "--seq-len", "24"]
    assert run_cli(*args) == 0
    shutil.copytree(model, tmp_path / "copy")  # a copy (new mtimes) is the same model
    assert run_cli("--model", str(tmp_path / "copy"), *args[2:], "--out", str(tmp_path / "out2")) == 0
    capsys.readouterr()
    save_tiny_llama(model, seed=1)  # other weights, same path and architecture
    assert run_cli(*args) == 2
    assert "model_content" in (err := capsys.readouterr().err) and "data_content" not in err
    save_tiny_llama(model, seed=0)
    assert run_cli(*args) == 0  # the original weights again: the same run
    data.write_text(data.read_text() + '{"id": "new", "text": "one more document"}\n')
    assert run_cli(*args) == 2
    assert "data_content" in capsys.readouterr().err


def test_kill_9_then_resume_gives_the_uninterrupted_rows(tiny_llama, tmp_path):
    """A real `pplaw score` process is SIGKILLed in the middle of a part, then rerun to completion.

    The corpus is a named pipe during the first run: the test feeds one part and a half of
    documents and holds the pipe open, so the process is guaranteed to be inside part 1 (blocked
    reading) when it dies. For the rerun the pipe is replaced by a regular file of the same name.
    """
    model_dir, corpus = tiny_llama
    lines = corpus.read_text().splitlines(keepends=True)[:9]
    args = ["--model", str(model_dir), "--seq-len", "24", "--docs-per-part", "3", "--batch-size", "8"]
    reference = tmp_path / "reference.jsonl"
    reference.write_text("".join(lines))
    assert run_cli(*args, "--data", str(reference), "--out", str(tmp_path / "ref")) == 0

    data = tmp_path / "corpus.jsonl"
    os.mkfifo(data)
    out = tmp_path / "out"
    log = open(tmp_path / "killed.log", "wb")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pplaw_jax.cli", "score", *args, "--data", str(data), "--out", str(out)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    release = threading.Event()

    def feed():
        try:
            with open(data, "w") as pipe:  # blocks until the scorer opens the pipe
                pipe.write("".join(lines[:5]))
                pipe.flush()
                release.wait(timeout=300)
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    first = out / "parts" / "host000-part00000.done"
    try:
        deadline = time.monotonic() + 240
        while not first.exists():
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "the first part never completed"
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None  # still waiting for the rest of part 1
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        release.set()
        feeder.join(timeout=10)
        log.close()
    assert not (out / "summary.json").exists()
    assert not (out / "parts" / "host000-part00001.done").exists()
    part0 = out / "parts" / "host000-part00000.parquet"
    stamp = part0.stat().st_mtime_ns

    data.unlink()
    data.write_text("".join(lines))
    assert run_cli(*args, "--data", str(data), "--out", str(out)) == 0
    pd.testing.assert_frame_equal(
        sorted_rows(read_parts(out)), sorted_rows(read_parts(tmp_path / "ref")), check_exact=True
    )
    assert part0.stat().st_mtime_ns == stamp  # the part finished before the kill was not redone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["documents"] == 9 and summary["parts"] == 3


def test_a_full_disk_is_one_line_and_the_rerun_completes_the_same_rows(tiny_llama, tmp_path, capsys, monkeypatch):
    """A stand-in for a full file system: writing the second part fails with ENOSPC. The command
    ends with one line and rc 2, the first part stays done, nothing of the second is marked done;
    with space again, the same command finishes with exactly the rows of an uninterrupted run."""
    import errno

    from pplaw_jax.landscape import directory

    model_dir, corpus = tiny_llama
    args = ["--model", str(model_dir), "--data", str(corpus), "--seq-len", "24", "--docs-per-part", "5"]
    assert run_cli(*args, "--out", str(tmp_path / "whole")) == 0
    capsys.readouterr()
    real, calls = directory.write_part, []

    def full_after_one(out_dir, host, part, table, marker):
        calls.append(part)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(out_dir))
        return real(out_dir, host, part, table, marker)

    monkeypatch.setattr(directory, "write_part", full_after_one)
    assert run_cli(*args, "--out", str(tmp_path / "full")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]
    assert len(err) == 1 and "no space left on the device" in err[0], err
    assert sorted(p.name for p in (tmp_path / "full" / "parts").glob("*.done")) == ["host000-part00000.done"]
    monkeypatch.setattr(directory, "write_part", real)
    assert run_cli(*args, "--out", str(tmp_path / "full")) == 0
    pd.testing.assert_frame_equal(
        sorted_rows(read_parts(tmp_path / "full")), sorted_rows(read_parts(tmp_path / "whole"))
    )
