"""A new model family is its own module plus one registry entry: a toy family (a Llama decoder under
a new config.json `model_type`) defined here loads an HF checkpoint through `load_model` once it is
registered, and not before, with the toy decoder class and the Llama logits."""

import dataclasses
import json

import numpy as np
import pytest
from tiny_hf import save_tiny_llama

from pplaw_jax.errors import PplawError
from pplaw_jax.models import ModelConfig, load_model, registry
from pplaw_jax.models.family import Family
from pplaw_jax.models.llama import LlamaForCausalLM


# ---- the toy family's module: its config class, its decoder, its Family
@dataclasses.dataclass(frozen=True)
class ToyConfig(ModelConfig):
    @classmethod
    def from_hf(cls, raw):
        base = ModelConfig.from_hf({**raw, "model_type": "llama"})
        return cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})


class ToyDecoder(LlamaForCausalLM):
    pass


TOY = Family("toy", ToyConfig, ToyDecoder, ("toyllama",))


def test_a_registered_family_loads_its_checkpoints(tmp_path, monkeypatch):
    model_dir = save_tiny_llama(tmp_path / "llama", seed=4)
    reference = load_model(str(model_dir))
    raw = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**raw, "model_type": "toyllama"}))
    with pytest.raises(PplawError, match=r"model_type 'toyllama' is not supported \(supported: \['gemma3'"):
        load_model(str(model_dir))

    monkeypatch.setattr(registry, "FAMILIES", dict(registry.FAMILIES))  # the registry line, undone after the test
    registry.register(TOY)
    toy = load_model(str(model_dir))
    assert type(toy.model) is ToyDecoder and type(toy.config) is ToyConfig
    ids = np.array([[reference.tokenizer.doc_start_id, *reference.tokenizer.encode("the quick brown fox")]], np.int32)
    np.testing.assert_array_equal(np.asarray(toy.model(ids)), np.asarray(reference.model(ids)))
    with pytest.raises(ValueError, match="taken"):
        registry.register(TOY)


def test_every_family_is_found_by_its_model_types_and_config():
    for family in registry.FAMILIES.values():
        for model_type in family.hf_model_types:
            assert registry.by_model_type(model_type) is family
    assert (
        registry.of_config(
            ModelConfig.from_hf(
                {
                    "model_type": "qwen2",
                    "vocab_size": 8,
                    "hidden_size": 8,
                    "intermediate_size": 16,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                }
            )
        ).name
        == "llama"
    )
