"""A random tiny HF Llama (transformers + torch) with a byte-level BPE tokenizer, saved to disk.

Shared by the scoring tests: the PyTorch model is the independent reference, and its directory is
what `pplaw score --model` loads.
"""

import json
from pathlib import Path

import numpy as np
import pytest

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly pack boxes of "
    "liquor jugs and zebras graze near the old mill in spring"
).split()


def save_tiny_llama(model_dir: Path, seed: int) -> Path:
    """A 2-layer GQA Llama (untied) with weights scaled up so chunk NLLs differ clearly."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pplaw_jax.models import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 20, vocab_size=320)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the init, so the logits are far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    model.save_pretrained(model_dir)
    tokenizer.save(model_dir)
    return model_dir


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to Llama Q/K rows (HF rotate-half -> interleaved)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(hf_model, path, arch: str, qtype=None, tokenizer=None) -> None:
    """Write `hf_model` as llama.cpp does; with `qtype`, matrices are quantized (norms stay F32);
    with `tokenizer` (a byte-level BPE `pplaw_jax.models.Tokenizer`), its vocabulary and merges as
    llama.cpp's `gpt2` tokenizer metadata."""
    cfg = hf_model.config
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_vocab_size(cfg.vocab_size)
    if tokenizer is None:
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(1)
    else:
        model = json.loads(tokenizer.to_transformers().backend_tokenizer.to_str())["model"]
        tokens = sorted(model["vocab"], key=model["vocab"].get)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in model["merges"]])
        special = {tokenizer.bos_id, tokenizer.eos_id}
        writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: CONTROL
        writer.add_bos_token_id(tokenizer.bos_id)
        writer.add_eos_token_id(tokenizer.eos_id)
    names = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for name, tensor in hf_model.state_dict().items():
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
            out = f"blk.{layer}.{names[rest]}"
            if arch == "llama" and rest.startswith("self_attn.q_proj"):
                array = _llama_cpp_permute(array, cfg.num_attention_heads)
            elif arch == "llama" and rest.startswith("self_attn.k_proj"):
                array = _llama_cpp_permute(array, cfg.num_key_value_heads)
        if qtype is not None and array.ndim == 2:
            writer.add_tensor(out, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(out, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
