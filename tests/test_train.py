"""`pplaw train` end to end on a tiny model: sharding, kill -9 resumption, selection, evaluation, export.

References: a 1-device run for the 8-device mesh; an uninterrupted run for the resumed one (same
per-step losses); PyTorch/transformers on the exported `RUN/hf` for the final weights and the
domain test loss in `eval.json`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from jax.sharding import PartitionSpec as P

from pplaw_jax.cli import main
from pplaw_jax.data import chunk_token_ids
from pplaw_jax.distributed import make_mesh
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import file_sha256
from pplaw_jax.models import ModelConfig, init_model, load_model, save_hf_checkpoint, train_bpe_tokenizer
from pplaw_jax.models.sharded import ShardedLM
from pplaw_jax.train.checkpoint import RunCheckpointer
from pplaw_jax.train.dataset import TokenSequences, batch_indices, gather, pack_sequences
from pplaw_jax.train.loop import Trainer, mean_loss
from pplaw_jax.train.metrics import read_metrics
from pplaw_jax.train.optim import AdamW, make_schedule

WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at which".split()
SEQ_LEN = 24
CONFIG = {
    "model_type": "llama",
    "vocab_size": 320,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def _texts(rng, n):
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 80)))) for _ in range(n)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Corpora (train/test/general JSONL), a trained BPE tokenizer dir, a scratch config, a base HF model."""
    d = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    texts = {}
    for name, n in (("train", 40), ("test", 6), ("general", 6)):
        texts[name] = _texts(rng, n)
        with open(d / f"{name}.jsonl", "w") as f:
            for i, t in enumerate(texts[name]):
                f.write(json.dumps({"id": f"{name}{i}", "text": t}) + "\n")
    tokenizer = train_bpe_tokenizer(texts["train"], 300)
    tokenizer.save(d / "tok")
    (d / "cfg.json").write_text(json.dumps(CONFIG))
    config = ModelConfig.from_hf(CONFIG)
    save_hf_checkpoint(init_model(config, seed=1), config, tokenizer, d / "base")
    return d, texts, tokenizer


def _train_args(d, out, *extra):
    return [
        "train", "--model", f"scratch:{d / 'cfg.json'}", "--tokenizer", str(d / "tok"),
        "--data", str(d / "train.jsonl"),
        "--out", str(out), "--seq-len", str(SEQ_LEN), "--batch-size", "8", "--lr", "3e-3", *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------------- sharding
def _run_steps(mesh, tokenizer, train, dtype="float32", steps=3, model=None):
    config = ModelConfig.from_hf(CONFIG)
    schedule = make_schedule(3e-3, steps, 1)
    trainer = Trainer(model or init_model(config, seed=0, dtype=dtype), mesh, AdamW(weight_decay=0.1))
    stats = []
    for s in range(steps):
        ids, lengths = gather(train, batch_indices(0, s, 8, len(train)))
        stats.append(
            {k: float(v) for k, v in trainer.step(trainer.put(ids), trainer.put(lengths), schedule(s)).items()}
        )
    return trainer, stats


def test_eight_devices_match_one(files, tmp_path):
    d, texts, tokenizer = files
    train = pack_sequences(
        (c for t in texts["train"] for c in chunk_token_ids(tokenizer.encode(t), SEQ_LEN, tokenizer.doc_start_id)),
        SEQ_LEN,
    )
    mesh8 = make_mesh("data=2,fsdp=2,tensor=2")
    assert mesh8.devices.size == 8
    sharded, stats8 = _run_steps(mesh8, tokenizer, train)
    single, stats1 = _run_steps(make_mesh("data=1", devices=jax.devices()[:1]), tokenizer, train)
    assert stats8[0]["train_loss"] > stats8[-1]["train_loss"]  # it learns
    for a, b in zip(stats8, stats1):
        assert a["n_tokens"] == b["n_tokens"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    kernel = sharded.params["layers"][0]["mlp"]["up_proj"]["kernel"][...]
    assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5), sharded.params, single.params
    )
    # Evaluation over the same mesh agrees with one device too.
    assert mean_loss(sharded, train, 8) == pytest.approx(mean_loss(single, train, 8), rel=1e-5)

    # A checkpoint saved from the 8-device mesh restores exactly onto the 1-device mesh.
    ckpt = RunCheckpointer(tmp_path / "ckpt", save_every=1, keep=1)
    ckpt.save(3, sharded.state(), {"step": 3})
    ckpt.wait()
    state, meta = ckpt.restore(3, single.abstract_state())
    ckpt.close()
    assert meta == {"step": 3}
    single.load_state(state)
    assert single.params["norm"]["scale"][...].sharding.mesh.devices.size == 1
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), single.state(), sharded.state()
    )


def test_scanned_layers_train_like_unrolled_and_export(files, tmp_path):
    """The same initial weights in the scanned layout (with remat) train to the same losses on the
    8-device mesh, its optimizer moments follow the stacked parameters' shardings, its state
    round-trips through an orbax checkpoint, and its HF export loads back with the same logits."""
    from flax import nnx

    from pplaw_jax.models import flat_params, model_from_params
    from pplaw_jax.train.export import export_hf

    d, texts, tokenizer = files
    train = pack_sequences(
        (c for t in texts["train"] for c in chunk_token_ids(tokenizer.encode(t), SEQ_LEN, tokenizer.doc_start_id)),
        SEQ_LEN,
    )
    config = ModelConfig.from_hf(CONFIG)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    start = {k: np.asarray(v) for k, v in flat_params(init_model(config, seed=0)).items()}
    scanned = model_from_params(config, start, mesh=mesh, scan_layers=True, remat="dots_saveable")
    trainer, stats = _run_steps(mesh, tokenizer, train, model=scanned)
    _, reference = _run_steps(mesh, tokenizer, train)
    for a, b in zip(stats, reference):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    kernel = trainer.params["layers"]["mlp"]["up_proj"]["kernel"][...]
    assert kernel.shape[0] == 2 and kernel.sharding.spec == P(None, "fsdp", "tensor")
    mu = trainer.opt_state[1][0].mu["layers"]["mlp"]["up_proj"]["kernel"][...]
    assert mu.sharding == kernel.sharding

    ckpt = RunCheckpointer(tmp_path / "ckpt", save_every=1, keep=1)
    ckpt.save(3, trainer.state(), {"step": 3})
    ckpt.wait()
    state, _ = ckpt.restore(3, trainer.abstract_state())
    ckpt.close()
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), state, trainer.state())

    export_hf(trainer, config, tokenizer, tmp_path / "hf")
    again = load_model(str(tmp_path / "hf"))
    ids = jnp.asarray(train.tokens[:2])
    model = trainer.model()
    np.testing.assert_allclose(
        np.asarray(again.model(ids)), np.asarray(nnx.jit(lambda m, x: m(x))(model, ids)), atol=1e-5, rtol=1e-5
    )


def test_bfloat16_compute_keeps_float32_master_weights(files):
    d, texts, tokenizer = files
    train = pack_sequences(
        (c for t in texts["train"][:8] for c in chunk_token_ids(tokenizer.encode(t), SEQ_LEN, tokenizer.doc_start_id)),
        SEQ_LEN,
    )
    mesh = make_mesh("data=1", devices=jax.devices()[:1])
    bf16, stats_bf16 = _run_steps(mesh, tokenizer, train, dtype="bfloat16", steps=2)
    _, stats_f32 = _run_steps(mesh, tokenizer, train, dtype="float32", steps=2)
    assert {str(x.dtype) for x in jax.tree.leaves(bf16.params)} == {"float32"}
    assert {str(x.dtype) for x in jax.tree.leaves(bf16.opt_state) if x.ndim} == {"float32"}
    for a, b in zip(stats_bf16, stats_f32):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)
        assert a["train_loss"] != b["train_loss"]  # the forward really ran in bfloat16


# ---------------------------------------------------------------------- kill -9 and resume
def test_kill_and_resume_reproduces_the_uninterrupted_run(files, tmp_path, capsys):
    d, _, _ = files
    extra = ["--steps", "14", "--save-every", "3", "--eval-data", str(d / "test.jsonl"), "--eval-every", "5"]
    assert main(_train_args(d, tmp_path / "ref", *extra)) == 0
    ref = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert [r["step"] for r in ref] == list(range(1, 15))
    assert [r["step"] for r in ref if "domain_loss" in r] == [5, 10, 14]

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pplaw_jax.cli", *_train_args(d, out, *extra)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 240
    while len(read_metrics(out / "metrics.jsonl")) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_rows = len(read_metrics(out / "metrics.jsonl"))
    assert 8 <= killed_rows < 14, "the run must be killed mid-way"
    assert not (out / "eval.json").exists()

    assert main(_train_args(d, out, *extra)) == 0  # the same command resumes
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 15))  # no duplicated or missing steps
    for a, b in zip(rows, ref):
        for key in ("tokens", "train_loss", "lr", "grad_norm", "domain_loss"):
            assert a.get(key) == b.get(key), (a["step"], key)
    final, ref_final = (json.loads((p / "eval.json").read_text()) for p in (out, tmp_path / "ref"))
    assert final["domain_loss"] == ref_final["domain_loss"] and final["steps"] == 14

    capsys.readouterr()
    assert main(_train_args(d, out, *extra)) == 0
    assert "complete" in capsys.readouterr().out
    # TensorBoard shows the same single trajectory: the resumed session purges the killed one's
    # events from the replayed steps on (read back with the TFRecord framing + Event protobuf)
    for tag, key in (("train/train_loss", "train_loss"), ("train/lr", "lr"), ("eval/domain_loss", "domain_loss")):
        want = [(r["step"], r[key]) for r in rows if key in r]
        got = _tensorboard_scalars(out / "tensorboard", tag)
        assert [s for s, _ in got] == [s for s, _ in want], tag
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)  # float32 in events


def _tensorboard_scalars(log_dir, tag):
    """(step, value) of `tag` over every event file in `log_dir`, honouring purges."""
    from tb_events import tensorboard_scalars

    return tensorboard_scalars(log_dir).get(tag, [])


def _torch_mean_loss(model, hf_tokenizer, texts, seq_len, start_id):
    """Mean token NLL over all chunks of `texts`, computed by transformers/PyTorch."""
    total, count = 0.0, 0
    for text in texts:
        ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        for chunk in chunk_token_ids(ids, seq_len, start_id):
            x = torch.tensor([chunk])
            with torch.no_grad():
                logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
            total -= logp[torch.arange(len(chunk) - 1), x[0, 1:]].sum().item()
            count += len(chunk) - 1
    return total / count


def test_cpt_on_selection_exports_an_hf_model(files, tmp_path, capsys):
    d, texts, tokenizer = files
    rows = []
    for i, t in enumerate(texts["train"]):
        for k, chunk in enumerate(chunk_token_ids(tokenizer.encode(t), SEQ_LEN, tokenizer.doc_start_id)):
            if (i + k) % 3 == 0:
                rows.append((f"train{i}", k, len(chunk) - 1, 10.0 + i + 0.5 * k))
    sel = tmp_path / "sel"
    sel.mkdir()
    pd.DataFrame(rows, columns=["doc_id", "chunk", "n_tokens", "ppl"]).to_parquet(sel / "selection.parquet")
    (sel / "summary.json").write_text(json.dumps({"n_chunks": len(rows)}))
    out = tmp_path / "run"
    args = [
        "train", "--model", str(d / "base"), "--data", str(d / "train.jsonl"), "--selection", str(sel),
        "--out", str(out), "--seq-len", str(SEQ_LEN), "--batch-size", "4", "--lr", "1e-2", "--warmup", "0",
        "--eval-data", str(d / "test.jsonl"), "--general-eval-data", str(d / "general.jsonl"),
        "--mesh", "data=2,fsdp=2,tensor=2",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "eval.json").read_text())
    ppl = np.array([r[3] for r in rows])
    assert summary["mu_ppl"] == pytest.approx(ppl.mean()) and summary["sigma_ppl"] == pytest.approx(ppl.std())
    assert summary["mu_logppl"] == pytest.approx(np.log(ppl).mean())
    assert summary["sigma_logppl"] == pytest.approx(np.log(ppl).std())
    assert summary["tokens"] == sum(r[2] for r in rows) and summary["sequences"] == len(rows)
    assert summary["steps"] == -(-len(rows) // 4)  # default: one epoch
    assert summary["trained_tokens"] == summary["tokens"]
    # TensorBoard's HParams dashboard gets the run's subset, budget and settings
    from tb_events import tensorboard_hparams

    hparams = tensorboard_hparams(out / "tensorboard")
    assert hparams["mu_logppl"] == pytest.approx(np.log(ppl).mean()) and hparams["lr"] == pytest.approx(1e-2)
    assert (
        hparams["selection_sha256"] == file_sha256(sel / "selection.parquet") and hparams["steps"] == summary["steps"]
    )
    # a finished run answers "nothing to do" only for its own arguments
    capsys.readouterr()
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
    # a selection cut under another seq_len (its landscape's) is refused before any training
    other = tmp_path / "sel_other"
    other.mkdir()
    (other / "selection.parquet").write_bytes((sel / "selection.parquet").read_bytes())
    (other / "summary.json").write_text(json.dumps({"n_chunks": len(rows), "landscape_seq_len": 4 * SEQ_LEN}))
    other_args = [a if a != str(sel) else str(other) for a in args]
    other_args[other_args.index(str(out))] = str(tmp_path / "run_other")
    assert main(other_args) == 2
    assert (
        f"cut by its landscape with seq_len {4 * SEQ_LEN}, this run has --seq-len {SEQ_LEN}" in capsys.readouterr().err
    )
    assert main([*args, "--lr", "5e-3"]) == 2
    assert "holds a different run (lr: 0.01 -> 0.005)" in capsys.readouterr().err

    # transformers loads RUN/hf; its logits equal our loaded export's, and its test loss is eval.json's.
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out / "hf")
    ids = np.array([[tokenizer.doc_start_id, *tokenizer.encode(texts["test"][0])[: SEQ_LEN - 1]]], dtype=np.int32)
    ours = load_model(str(out / "hf"))
    with torch.no_grad():
        ref_logits = hf_model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours.model(ids)), ref_logits, atol=1e-4, rtol=1e-4)
    for name in ("test", "general"):
        ref = _torch_mean_loss(hf_model, hf_tok, texts[name], SEQ_LEN, tokenizer.doc_start_id)
        assert summary[f"{'domain' if name == 'test' else 'general'}_loss"] == pytest.approx(ref, rel=1e-5)
    # The base model scores worse on the training selection than the trained one (CPT did something).
    base = ShardedLM(load_model(str(d / "base")).model, make_mesh("data=-1"))
    trained = ShardedLM(ours.model, make_mesh("data=-1"))
    seqs = TokenSequences(*(np.load(out / "data" / "host000" / f"train.{n}.npy") for n in ("tokens", "lengths")))
    assert mean_loss(trained, seqs, 8) < mean_loss(base, seqs, 8) - 0.1


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seq-len", "65"], "exceeds the model's max_position_embeddings 64"),
        (
            ["--batch-size", "6", "--mesh", "data=4,fsdp=2"],
            "--batch-size 6 is not a multiple of the data x fsdp mesh size 8",
        ),
        (["--batch-size", "4000000"], "needs roughly .* GiB per device"),
        (["--lr", "nan"], r"--lr: nan out of range \(must be > 0\)"),
        (["--warmup", "inf"], r"--warmup: inf out of range \(must be >= 0\)"),
        (["--steps", "5", "--tokens", "100"], "not allowed with argument"),  # argparse: mutually exclusive
    ],
)
def test_bad_settings_fail_before_training(files, tmp_path, capsys, extra, message):
    d, _, _ = files
    assert main(_train_args(d, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_selection_and_changed_run(files, tmp_path, capsys):
    d, texts, _ = files
    sel = tmp_path / "selection.parquet"
    pd.DataFrame({"doc_id": ["train0", "ghost"], "chunk": [0, 3], "n_tokens": [5, 5], "ppl": [2.0, 3.0]}).to_parquet(
        sel
    )
    (tmp_path / "summary.json").write_text(json.dumps({"n_chunks": 2}))
    assert main(_train_args(d, tmp_path / "a", "--selection", str(sel))) == 2
    assert "not in" in (err := capsys.readouterr().err) and "'ghost', chunk 3" in err
    pd.DataFrame({"doc_id": [], "chunk": [], "n_tokens": [], "ppl": []}).to_parquet(sel)
    (tmp_path / "summary.json").write_text(json.dumps({"n_chunks": 0}))
    assert main(_train_args(d, tmp_path / "b", "--selection", str(sel))) == 2
    assert "selection is empty" in capsys.readouterr().err

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.json").write_text(json.dumps({"lr": 1.0}))
    assert main(_train_args(d, tmp_path / "c", "--steps", "2")) == 2
    assert "holds a different run" in (err := capsys.readouterr().err) and "lr: 1.0 -> 0.003" in err


def test_new_weights_or_data_at_the_same_path_are_another_run(files, tmp_path, capsys):
    """A run directory was identified by the paths of its model and corpus only: new weights or a
    new corpus at the same path resumed (or answered "nothing to do") as if nothing had changed.
    The run now records what the files hold, and both a finished and an unfinished run refuse."""
    import shutil

    d, _, _ = files
    work = tmp_path / "inputs"
    shutil.copytree(d, work)
    args = [
        "train",
        "--model",
        str(work / "base"),
        "--data",
        str(work / "train.jsonl"),
        "--out",
        str(tmp_path / "run"),
        "--seq-len",
        str(SEQ_LEN),
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--steps",
        "2",
    ]
    assert main(args) == 0
    train = work / "train.jsonl"
    original = train.read_bytes()
    train.write_bytes(original.replace(b'"text": "', b'"text": "x', 1))  # same path, same id, new text
    capsys.readouterr()
    assert main(args) == 2
    assert "holds a different run (data_content:" in capsys.readouterr().err
    train.write_bytes(original)
    (tmp_path / "run" / "eval.json").unlink()  # as if killed before the end: the resume path checks too
    weights = work / "base" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(blob))
    assert main(args) == 2
    assert "holds a different run (model_content:" in capsys.readouterr().err
    assert not (tmp_path / "run" / "eval.json").exists()


def test_train_tokenizer_writes_a_loadable_tokenizer(files, tmp_path):
    from pplaw_jax.models import Tokenizer
    from pplaw_jax.train import train_tokenizer

    d, texts, _ = files
    tok = train_tokenizer(str(d / "train.jsonl"), 280, tmp_path / "tok", max_docs=10)
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.encode(texts["train"][0]) == tok.encode(texts["train"][0])
    assert loaded.vocab_size <= 280
    with pytest.raises(PplawError, match="already exists"):
        train_tokenizer(str(d / "train.jsonl"), 280, tmp_path / "tok")


def test_a_rerun_removes_what_a_killed_train_left(files, tmp_path):
    """Killed while writing metrics.jsonl (or its token cache), a run left `metrics.jsonl.<random>.tmp`
    behind even after a successful rerun (found by the fault-injection suite's helper)."""
    d, _, _ = files
    out = tmp_path / "run"
    (out / "data" / "host000").mkdir(parents=True)
    left = [
        out / "metrics.jsonl.mk8trkem.tmp",
        out / "data" / "host000" / "train.tokens.npy.abcdefgh.tmp",
        out / "eval.json.12345678.tmp",
    ]
    for path in left:
        path.write_text("partial")
    assert main(_train_args(d, out, "--steps", "2")) == 0
    assert not [p for p in left if p.exists()]
    assert not [p for p in out.rglob("*.tmp")]


def test_metrics_reach_the_host_every_log_every_steps(files, tmp_path, monkeypatch):
    """The loop fetched every step's scalars at once (a device sync per step). Now the host reads
    them every --log-every steps, before each checkpoint and at evaluations; metrics.jsonl still
    has one row per step, with the same values as a run that syncs every step."""
    import pplaw_jax.train.loop as loop

    d, _, _ = files
    taken, synced = [0], []
    real_step, real_fetch = loop.Trainer.step, loop.fetch

    def counting_step(self, *a):
        taken[0] += 1
        return real_step(self, *a)

    def spying_fetch(x):
        synced.append(taken[0])
        return real_fetch(x)

    monkeypatch.setattr(loop.Trainer, "step", counting_step)
    monkeypatch.setattr(loop, "fetch", spying_fetch)
    extra = ["--steps", "12", "--save-every", "8", "--eval-data", str(d / "test.jsonl"), "--eval-every", "6"]
    assert main(_train_args(d, tmp_path / "k5", *extra, "--log-every", "5")) == 0
    # log, eval, checkpoint, log, end (the save hook checkpoints every --save-every steps and the
    # last, not also the first step as orbax's own save policy would)
    assert sorted(set(synced)) == [5, 6, 8, 10, 12]
    synced.clear()
    taken[0] = 0
    assert main(_train_args(d, tmp_path / "k1", *extra, "--log-every", "1")) == 0
    assert sorted(set(synced)) == list(range(1, 13))
    rows5, rows1 = (read_metrics(tmp_path / k / "metrics.jsonl") for k in ("k5", "k1"))
    assert [r["step"] for r in rows5] == list(range(1, 13))
    for a, b in zip(rows5, rows1):
        assert {k: v for k, v in a.items() if k != "tokens_per_s"} == {
            k: v for k, v in b.items() if k != "tokens_per_s"
        }


def test_memory_check_is_skipped_where_the_os_reports_no_figure(monkeypatch, caplog):
    """`pplaw train` read /proc/meminfo unconditionally, so it crashed on macOS."""
    import builtins

    import pplaw_jax.train.loop as loop
    from pplaw_jax.distributed import make_mesh

    real_open = builtins.open

    def no_proc(path, *a, **k):
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)

    def no_sysconf(name):
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr(loop.os, "sysconf", no_sysconf)
    with caplog.at_level("INFO", logger="pplaw"):
        loop.check_memory(
            ModelConfig.from_hf(CONFIG),
            batch_size=8,
            seq_len=SEQ_LEN,
            mesh=make_mesh("data=-1"),
            compute_bytes=4,
            remat=False,
        )
    assert "memory check skipped: this OS reports no available memory" in caplog.text


def test_a_full_disk_is_one_line_and_the_rerun_finishes_the_same_run(files, tmp_path, capsys, monkeypatch):
    """A stand-in for a full file system: the metrics row of step 5 fails with ENOSPC. The command
    ends with one line and rc 2 and no eval.json; with space again, the same command resumes from
    its step-4 checkpoint and finishes with the losses and metrics rows of an uninterrupted run."""
    import errno

    import pplaw_jax.train.loop as loop

    d, _, _ = files
    extra = ["--steps", "6", "--save-every", "2", "--log-every", "1", "--eval-data", str(d / "test.jsonl")]
    assert main(_train_args(d, tmp_path / "whole", *extra)) == 0
    capsys.readouterr()
    real = loop.MetricsLog.write

    def full_after_step_four(self, row):
        if row["step"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "full" / "metrics.jsonl"))
        return real(self, row)

    monkeypatch.setattr(loop.MetricsLog, "write", full_after_step_four)
    assert main(_train_args(d, tmp_path / "full", *extra)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]
    assert len(err) == 1 and "no space left on the device" in err[0], err
    assert not (tmp_path / "full" / "eval.json").exists()
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    monkeypatch.setattr(loop.MetricsLog, "write", real)
    assert main(_train_args(d, tmp_path / "full", *extra)) == 0
    whole, full = (json.loads((tmp_path / k / "eval.json").read_text()) for k in ("whole", "full"))
    timing = ("wall_time_s", "seconds")
    assert {k: v for k, v in full.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}
    rows = [
        [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(tmp_path / k / "metrics.jsonl")]
        for k in ("whole", "full")
    ]
    assert rows[0] == rows[1] and [r["step"] for r in rows[1]] == list(range(1, 7))


POOLED = """
import json, sys
from pplaw_jax.cli import main
from pplaw_jax.models import sharded
runs = json.loads(sys.argv[1])
assert main(runs[0]) == 0
jitted = dict(sharded._JITTED)
assert main(runs[1]) == 0
# the second run made no jitted function of its own and compiled no new train step
assert sharded._JITTED == jitted, sorted(map(str, set(sharded._JITTED) - set(jitted)))
assert [f._cache_size() for k, f in jitted.items() if k[0] == "train_step"] == [1]
"""


def test_a_run_after_another_in_one_process_writes_what_it_writes_alone(files, tmp_path):
    """`pplaw run` trains its runs in one process, where a run reuses the steps compiled for the
    runs before it (`models.sharded.shared_jit`; the learning rate is an argument of the step, so
    runs of other lengths share it). The second of two runs trained in one process (another
    length, seed and schedule than the first) writes the same directory as the same command run in
    a process of its own: every file byte for byte or value for value, timings aside
    (`test_fault_injection.compare_trees`)."""
    from test_fault_injection import child_env, compare_trees, pplaw_cmd

    d, _, _ = files
    evals = ["--eval-data", str(d / "test.jsonl"), "--general-eval-data", str(d / "general.jsonl")]
    common = ["train", "--model", str(d / "base"), "--data", str(d / "train.jsonl"), "--seq-len", str(SEQ_LEN)]
    first = [*common, "--out", str(tmp_path / "first"), "--steps", "3", "--seed", "1", *evals]
    second = [*common, "--out", str(tmp_path / "run"), "--steps", "5", "--seed", "2", "--save-every", "2", *evals]
    subprocess.run([sys.executable, "-c", POOLED, json.dumps([first, second])], env=child_env(), check=True)
    (tmp_path / "run").rename(tmp_path / "pooled")
    subprocess.run(pplaw_cmd(*second), env=child_env(), check=True, capture_output=True)
    assert compare_trees(tmp_path / "pooled", tmp_path / "run") == []
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["steps"] == 5
