"""Training building blocks without a model: schedule, optimizer, data order, selection, cache, metrics, loss."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from pplaw_jax.data import chunk_token_ids
from pplaw_jax.errors import PplawError
from pplaw_jax.models import train_bpe_tokenizer
from pplaw_jax.models.loss import token_nll
from pplaw_jax.select.io import read_selection
from pplaw_jax.train.dataset import (
    TokenSequences,
    batch_indices,
    build_sequences,
    cached_sequences,
    eval_batches,
    gather,
    pack_sequences,
)
from pplaw_jax.train.metrics import MetricsLog, read_metrics
from pplaw_jax.train.optim import make_optimizer, make_schedule, total_steps, warmup_steps

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


# ---------------------------------------------------------------------- schedule and optimizer
def test_total_steps_rule():
    assert total_steps(batch_size=4, seq_len=9, num_sequences=10, tokens=100) == math.ceil(100 / 32)
    assert total_steps(batch_size=4, seq_len=9, num_sequences=10, steps=7) == 7
    assert total_steps(batch_size=4, seq_len=9, num_sequences=10) == 3  # one epoch
    with pytest.raises(PplawError):
        total_steps(batch_size=4, seq_len=9, num_sequences=10, steps=1, tokens=5)


def test_warmup_fraction_and_steps():
    assert warmup_steps(0.1, 50) == 5
    assert warmup_steps(0.001, 50) == 1  # a positive fraction keeps at least one step
    assert warmup_steps(0, 50) == 0
    assert warmup_steps(7, 50) == 7
    with pytest.raises(PplawError):
        warmup_steps(60, 50)
    with pytest.raises(PplawError):
        warmup_steps(2.5, 50)


def test_cosine_schedule_values():
    lr, steps, warm, ratio = 1e-3, 20, 4, 0.1
    sched = make_schedule(lr, steps, warm, kind="cosine", min_lr_ratio=ratio)
    for s in range(warm):
        assert float(sched(s)) == pytest.approx(lr * (s + 1) / warm)
    for s in range(warm, steps + 1):
        frac = (s - warm) / (steps - warm)
        expected = lr * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
        assert float(sched(s)) == pytest.approx(expected, rel=1e-5)
    assert float(sched(steps)) == pytest.approx(lr * ratio)


def test_linear_and_constant_schedules():
    lin = make_schedule(1.0, 10, 0, kind="linear", min_lr_ratio=0.2)
    assert [round(float(lin(s)), 6) for s in (0, 5, 10)] == [1.0, 0.6, 0.2]
    const = make_schedule(0.5, 10, 2, kind="constant")
    assert [float(const(s)) for s in (0, 1, 2, 9)] == [0.25, 0.5, 0.5, 0.5]
    with pytest.raises(PplawError):
        make_schedule(1.0, 10, 0, kind="step")


def test_adamw_decays_matrices_only():
    params = {"kernel": jnp.ones((2, 2)), "scale": jnp.ones((2,))}
    lr, wd = 0.1, 0.5
    tx = make_optimizer(lambda _: lr, weight_decay=wd, clip_norm=1.0)
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, state, params)
    np.testing.assert_allclose(updates["kernel"], -lr * wd * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["scale"], 0.0)


@pytest.mark.parametrize("scan", [False, True])
def test_adamw_decays_model_matrices_only_in_either_layout(scan):
    """A scanned model's norm scales are stacked [layers, width] arrays, still not decayed."""
    from flax import nnx

    from pplaw_jax.models import ModelConfig, init_model

    params = nnx.state(
        init_model(ModelConfig(64, 16, 32, 2, 2, 2, 8, attention_bias=True), scan_layers=scan), nnx.Param
    )
    tx = make_optimizer(lambda _: 0.1, weight_decay=0.5, clip_norm=None)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    decayed = {
        ".".join(map(str, p)): bool(np.any(np.asarray(v.get_value()) != 0)) for p, v in nnx.to_flat_state(updates)
    }
    layer = "layers." if scan else "layers.0."
    assert decayed[layer + "mlp.up_proj.kernel"] and decayed["embed_tokens.embedding"]
    assert not decayed[layer + "input_layernorm.scale"] and not decayed[layer + "self_attn.q_proj.bias"]
    assert not decayed["norm.scale"]


def test_gradients_are_clipped_to_global_norm_before_adam():
    params = {"kernel": jnp.ones((2, 2)), "scale": jnp.ones((2,))}
    grads = [
        {"kernel": jnp.full((2, 2), 300.0), "scale": jnp.array([-400.0, 0.0])},  # norm 721: clipped
        {"kernel": jnp.full((2, 2), 0.1), "scale": jnp.array([0.2, -0.1])},  # norm < 1: untouched
    ]
    clipped = [optax.tree.scale(1.0 / max(1.0, float(optax.tree.norm(gs))), gs) for gs in grads]
    ours, ref = make_optimizer(lambda _: 0.1, weight_decay=0.0, clip_norm=1.0), optax.adam(0.1, b2=0.95)
    s_ours, s_ref = ours.init(params), ref.init(params)
    for g, c in zip(grads, clipped):
        u_ours, s_ours = ours.update(g, s_ours, params)
        u_ref, s_ref = ref.update(c, s_ref, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), u_ours, u_ref)


# ---------------------------------------------------------------------- data order
def test_batch_order_is_a_pure_function_covering_each_epoch():
    n, b, seed = 10, 4, 3
    stream = np.concatenate([batch_indices(seed, s, b, n) for s in range(5)])  # 20 samples = 2 epochs
    assert sorted(stream[:n]) == list(range(n)) and sorted(stream[n:]) == list(range(n))
    assert not np.array_equal(stream[:n], stream[n:])  # a fresh permutation per epoch
    # The same step asked for out of order (as after a resume) gives the same rows.
    np.testing.assert_array_equal(batch_indices(seed, 3, b, n), stream[12:16])
    assert not np.array_equal(batch_indices(seed + 1, 0, b, n), stream[:4])


def test_eval_batches_and_gather_pad_the_tail():
    seqs = TokenSequences(np.arange(15, dtype=np.int32).reshape(5, 3), np.array([3, 2, 3, 1, 2], dtype=np.int32))
    batches = list(eval_batches(5, 4))
    np.testing.assert_array_equal(batches[1], [4, -1, -1, -1])
    ids, lengths = gather(seqs, batches[1])
    np.testing.assert_array_equal(ids, [[12, 13, 14], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lengths, [2, 0, 0, 0])
    ids, _ = gather(seqs, np.array([3, 0, 3]))
    np.testing.assert_array_equal(ids, [[9, 10, 11], [0, 1, 2], [9, 10, 11]])


def test_pack_sequences_across_blocks():
    chunks = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10], [11]]
    seqs = pack_sequences(iter(chunks), 4, block_rows=2)
    np.testing.assert_array_equal(seqs.lengths, [3, 1, 2, 4, 1])
    np.testing.assert_array_equal(seqs.tokens, [[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 0, 0], [7, 8, 9, 10], [11, 0, 0, 0]])
    assert seqs.num_scored_tokens == 2 + 0 + 1 + 3 + 0
    assert len(pack_sequences(iter([]), 4)) == 0


# ---------------------------------------------------------------------- selection -> sequences
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    texts = {f"d{i}": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))) for i in range(12)}
    texts["empty"] = ""
    with open(d / "train.jsonl", "w") as f:
        for doc_id, text in texts.items():
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    tokenizer = train_bpe_tokenizer(list(texts.values()), 300)
    return d, texts, tokenizer


def _chunks(texts, tokenizer, seq_len):
    return {
        (doc_id, k): ids
        for doc_id, text in texts.items()
        for k, ids in enumerate(chunk_token_ids(tokenizer.encode(text), seq_len, tokenizer.doc_start_id))
    }


def _write_selection(path, rows):
    """A selection as `pplaw select` leaves it: the parquet, then summary.json beside it."""
    pd.DataFrame(rows, columns=["doc_id", "chunk", "n_tokens", "ppl"]).to_parquet(path)
    (path.parent / "summary.json").write_text(json.dumps({"n_chunks": len(rows)}))
    return path


def test_selection_maps_rows_to_chunks(corpus, tmp_path):
    d, texts, tokenizer = corpus
    seq_len = 8
    chunks = _chunks(texts, tokenizer, seq_len)
    picked = [key for key in chunks if key[1] % 2 == 1][:5] + [("d0", 0)]
    rows = [(doc, k, len(chunks[(doc, k)]) - 1, 2.0 + k) for doc, k in picked]
    sel = read_selection(_write_selection(tmp_path / "selection.parquet", rows))
    assert sel.stats() == {
        "mu_ppl": pytest.approx(np.mean([r[3] for r in rows])),
        "sigma_ppl": pytest.approx(np.std([r[3] for r in rows])),
        "mu_logppl": pytest.approx(np.mean(np.log([r[3] for r in rows]))),
        "sigma_logppl": pytest.approx(np.std(np.log([r[3] for r in rows]))),
        "tokens": sum(r[2] for r in rows),
        "chunks": len(rows),
    }
    seqs = build_sequences(str(d / "train.jsonl"), tokenizer, seq_len, selection=sel)
    order = [key for key in chunks if key in set(picked)]  # corpus order
    assert len(seqs) == len(picked)
    for i, key in enumerate(order):
        assert seqs.lengths[i] == len(chunks[key])
        assert list(seqs.tokens[i, : seqs.lengths[i]]) == chunks[key]
        assert not seqs.tokens[i, seqs.lengths[i] :].any()
    assert seqs.num_scored_tokens == sel.stats()["tokens"]


def test_a_selection_without_its_summary_is_refused(corpus, tmp_path):
    """A killed `pplaw select` into an old directory left the old selection.parquet without a
    summary.json, and `train --selection` trained on it (rc 0).  A selection counts only with the
    summary.json written after it, and the two must agree on the row count."""
    rows = [("d0", 0, 5, 3.0), ("d1", 0, 5, 4.0)]
    path = _write_selection(tmp_path / "selection.parquet", rows)
    assert len(read_selection(tmp_path)) == 2
    (tmp_path / "summary.json").unlink()
    with pytest.raises(PplawError, match=r"no summary.json beside it: the selection is incomplete"):
        read_selection(path)
    (tmp_path / "summary.json").write_text(json.dumps({"n_chunks": 3}))
    with pytest.raises(PplawError, match=r"2 rows, but summary.json records n_chunks=3"):
        read_selection(tmp_path)


def test_selection_errors(corpus, tmp_path):
    d, texts, tokenizer = corpus
    data = str(d / "train.jsonl")
    chunks = _chunks(texts, tokenizer, 8)
    with pytest.raises(PplawError, match="empty"):
        read_selection(_write_selection(tmp_path / "empty.parquet", []))
    pd.DataFrame({"doc_id": ["d0"], "chunk": [0]}).to_parquet(tmp_path / "cols.parquet")
    (tmp_path / "summary.json").write_text(json.dumps({"n_chunks": 1}))
    with pytest.raises(PplawError, match="missing column"):
        read_selection(tmp_path / "cols.parquet")
    rows = [("d0", 0, len(chunks[("d0", 0)]) - 1, 3.0), ("nope", 0, 5, 3.0), ("d1", 99, 5, 3.0)]
    sel = read_selection(_write_selection(tmp_path / "missing.parquet", rows))
    with pytest.raises(PplawError, match=r"2 of 3 selected rows are not in .*'nope', chunk 0.*'d1', chunk 99"):
        build_sequences(data, tokenizer, 8, selection=sel)
    sel = read_selection(_write_selection(tmp_path / "wrong.parquet", [("d0", 0, 1000, 3.0)]))
    with pytest.raises(PplawError, match="different token count"):
        build_sequences(data, tokenizer, 8, selection=sel)


def test_cache_reuses_and_invalidates(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return TokenSequences(np.arange(6, dtype=np.int32).reshape(2, 3), np.array([3, 2], dtype=np.int32))

    a = cached_sequences(tmp_path, "train", "k1", build)
    b = cached_sequences(tmp_path, "train", "k1", build)
    assert len(calls) == 1
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    cached_sequences(tmp_path, "train", "k2", build)
    assert len(calls) == 2


# ---------------------------------------------------------------------- metrics log
def test_metrics_log_truncates_to_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, keep_through_step=None)
    for s in range(1, 6):
        log.write({"step": s, "train_loss": np.float32(1.0 / s), "tokens": np.int64(10 * s), "lr": float("nan")})
    log.close()
    with open(path, "a") as f:
        f.write('{"step": 6, "train_lo')  # a kill mid-line
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    rows = read_metrics(path)
    assert rows[1]["tokens"] == 20 and isinstance(rows[1]["tokens"], int) and rows[1]["lr"] is None
    log = MetricsLog(path, keep_through_step=3)
    log.write({"step": 4, "train_loss": 9.0})
    log.close()
    assert [(r["step"], r["train_loss"]) for r in read_metrics(path)][-2:] == [(3, pytest.approx(1 / 3)), (4, 9.0)]
    MetricsLog(path, keep_through_step=None).close()
    assert path.read_text() == ""


# ---------------------------------------------------------------------- loss
def test_token_nll_matches_numpy():
    rng = np.random.default_rng(0)
    b, t, v = 3, 6, 11
    logits = rng.normal(size=(b, t, v)).astype(np.float32)
    ids = rng.integers(0, v, size=(b, t)).astype(np.int32)
    lengths = np.array([6, 3, 1], dtype=np.int32)
    first = np.array([1, 2, 1], dtype=np.int32)
    sum_nll, n = token_nll(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(lengths), jnp.asarray(first))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for row in range(b):
        js = range(first[row], lengths[row])
        assert n[row] == len(js)
        np.testing.assert_allclose(sum_nll[row], -sum(logp[row, j - 1, ids[row, j]] for j in js), rtol=1e-5, atol=1e-6)


def test_tensorboard_rows_are_on_disk_when_write_returns(tmp_path):
    """tensorboardX's SummaryWriter queues events for a thread and its flush does not drain the
    queue: a kill -9 right after a checkpoint lost rows that metrics.jsonl held (found by the
    fault-injection suite). A process that dies without closing anything keeps every row here."""
    import subprocess
    import sys

    from test_train import _tensorboard_scalars

    script = (
        "import os\n"
        "from pplaw_jax.train.metrics import MetricsLog\n"
        f"log = MetricsLog({str(tmp_path / 'metrics.jsonl')!r}, None, tensorboard_dir={str(tmp_path / 'tb')!r})\n"
        "for s in (1, 2, 3):\n"
        "    log.write({'step': s, 'train_loss': 5.0 - s, 'domain_loss': 4.0})\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert _tensorboard_scalars(tmp_path / "tb", "train/train_loss") == [(1, 4.0), (2, 3.0), (3, 2.0)]
    assert _tensorboard_scalars(tmp_path / "tb", "eval/domain_loss") == [(1, 4.0), (2, 4.0), (3, 4.0)]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_the_clock_counts_compilation_apart():
    """A jitted function's first call compiles inside the section that calls it: the clock gives
    that to `compile` (from JAX's compilation events), and a second call compiles nothing."""
    from pplaw_jax.timing import Clock

    clock = Clock()
    f = jax.jit(lambda x: jnp.tanh(x) @ x.T + 17.25)  # a new function: not compiled before
    with clock("first"):
        f(jnp.ones((64, 64))).block_until_ready()
    compiled = clock.seconds["compile"]
    assert compiled > 0 and clock.seconds["first"] >= 0
    with clock("second"):
        f(jnp.ones((64, 64))).block_until_ready()
    assert clock.seconds["compile"] == compiled and set(clock.rounded()) == {"compile", "first", "second"}
