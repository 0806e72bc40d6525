"""A random tiny HF Llama (transformers + torch) with a byte-level BPE tokenizer, saved to disk.

Shared by the scoring tests: the PyTorch model is the independent reference, and its directory is
what `pplaw score --model` loads.
"""

from pathlib import Path

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
