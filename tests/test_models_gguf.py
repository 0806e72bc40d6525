"""GGUF loading: a synthetic GGUF written the way llama.cpp's converter writes it (fast), and the
real SmolLM2-135M-Instruct Q4_1 GGUF against transformers' own GGUF loader (slow)."""

from __future__ import annotations

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from tiny_hf import write_gguf

from pplaw_jax.models import load_model
from pplaw_jax.models.gguf import load_gguf
from pplaw_jax.models.loading import resolve_model_path

VOCAB = 128


@pytest.mark.parametrize(
    "arch,config_cls,model_cls,tied",
    [
        ("llama", transformers.LlamaConfig, transformers.LlamaForCausalLM, True),
        ("llama", transformers.LlamaConfig, transformers.LlamaForCausalLM, False),
        ("qwen2", transformers.Qwen2Config, transformers.Qwen2ForCausalLM, False),
    ],
)
def test_synthetic_gguf_matches_pytorch(arch, config_cls, model_cls, tied, tmp_path):
    torch.manual_seed(0)
    config = config_cls(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
        rms_norm_eps=1e-5,
        rope_theta=1000.0,
    )
    hf = model_cls(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    path = tmp_path / "tiny.gguf"
    write_gguf(hf, path, arch)

    ours_config, model = load_gguf(path)
    assert ours_config.tie_word_embeddings == tied
    assert ours_config.attention_bias == (arch == "qwen2")
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 16)).astype(np.int32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids))), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_quantized_gguf_loads_straight_into_its_shards(scan, tmp_path, monkeypatch):
    """A Q8_0 GGUF (Llama: permuted Q/K rows) loaded onto a mesh: each device's rows are
    dequantized on their own and placed, no device ever holds more than its share plus the largest
    tensor (measured after every placement), and the logits match PyTorch running the weights
    `gguf` dequantizes whole (the independent reference of the row-wise reading)."""
    from flax import nnx
    from residency import ResidencyProbe, shard_bytes

    from pplaw_jax.distributed import make_mesh

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        rope_theta=1000.0,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    q8 = gguf.GGMLQuantizationType.Q8_0
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:  # the reference holds exactly what the file can: quantized and dequantized whole
                w = (0.1 * torch.randn_like(p)).numpy()
                p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, q8), q8)))
    path = tmp_path / "tiny-q8.gguf"
    write_gguf(hf, path, "llama", qtype=q8)
    kinds = {t.name: t.tensor_type for t in gguf.GGUFReader(str(path)).tensors}
    assert kinds["blk.0.attn_q.weight"] == q8 and kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32

    mesh = make_mesh("data=1,fsdp=4,tensor=2")
    probe = ResidencyProbe(monkeypatch)
    _, model = load_gguf(path, mesh=mesh, scan_layers=scan)
    arrays = [v.get_value() for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    assert probe.placements == len(arrays)
    share, largest = shard_bytes(arrays), max(a.nbytes for a in arrays)
    assert sum(a.nbytes for a in arrays) > max(share.values()) + largest
    for device in mesh.devices.flat:
        assert probe.peak[device] <= share[device] + largest
    print(
        f"GGUF residency per device: peak <= {max(probe.peak.values())} B, share <= {max(share.values())} B, "
        f"largest tensor {largest} B, all parameters {sum(a.nbytes for a in arrays)} B"
    )
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 16)).astype(np.int32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    logits = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=0)


def test_unsupported_gguf_quantization_names_the_tensor(tmp_path, monkeypatch):
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    path = tmp_path / "tiny.gguf"
    write_gguf(hf, path, "llama")

    def refuse(data, qtype):
        raise NotImplementedError(qtype.name)

    monkeypatch.setattr(gguf.quants, "dequantize", refuse)
    from pplaw_jax.errors import PplawError

    with pytest.raises(PplawError, match=r"tiny\.gguf: tensor token_embd\.weight: quantization F32 unsupported"):
        load_gguf(path)


SENTENCES = [
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "def square(x):\n    return x ** 2  # a tiny function",
    "Patients were randomised to receive 50 mg of the study drug or placebo twice daily.",
    "Ünïcödé — naïve café, 東京 🙂",
]


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers():
    pytest.importorskip("accelerate", reason="transformers' GGUF loading needs accelerate")
    try:
        path = resolve_model_path("smollm2-135m-instruct")
    except Exception as e:  # package not installed
        pytest.skip(str(e))
    ours = load_model("smollm2-135m-instruct")
    assert ours.config.num_layers == 30 and ours.config.tie_word_embeddings
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert ours.tokenizer.bos_id == ref_tok.bos_token_id and ours.tokenizer.eos_id == ref_tok.eos_token_id

    worst = 0.0
    for text in SENTENCES:
        ids = ours.tokenizer.encode(text)
        assert ids == ref_tok(text, add_special_tokens=False)["input_ids"]
        assert ours.tokenizer.decode(ids) == text
        ids = np.asarray([[ours.tokenizer.doc_start_id, *ids]], np.int32)
        with torch.no_grad():
            expected = ref(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
        logits = np.asarray(ours.model(jnp.asarray(ids)))
        worst = max(worst, float(np.abs(logits - expected).max()))
        assert (logits.argmax(-1) == expected.argmax(-1)).all()
    print(f"SmolLM2 GGUF max |logit diff| vs transformers: {worst:.3g}")
    assert worst < 1e-3
