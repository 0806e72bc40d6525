"""Architecture hyper-parameters of the Llama-family decoder, read from / written to HF `config.json`.

One frozen dataclass covers Llama 2/3, Mistral, Qwen2/2.5, Qwen3 and SmolLM/SmolLM2: they differ
only in a handful of switches (qkv bias, per-head q/k RMSNorm, tied embeddings, RoPE scaling,
sliding window). Both the transformers-5 RoPE layout (`rope_parameters`) and the older one
(`rope_theta` + `rope_scaling`) are accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pplaw_jax.errors import PplawError

# model_type -> HF architecture class name
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
ROPE_TYPES = ("default", "linear", "dynamic", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    """Decoder hyper-parameters (HF names in brackets where they differ).

    `attention_bias` means q/k/v projections carry a bias. The output projection has one too for
    Llama/Qwen3/Mistral when `attention_bias` is set (HF semantics), never for Qwen2; see
    `attention_out_bias`. `sliding_window` (Mistral) restricts each query to the last
    `sliding_window` keys, itself included.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int  # num_hidden_layers
    num_heads: int  # num_attention_heads
    num_kv_heads: int  # num_key_value_heads
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "llama3"|"linear"|"dynamic", "factor": ...}
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    model_type: str = "llama"
    sliding_window: int | None = None

    def __post_init__(self):
        if self.model_type not in ARCHITECTURES:
            raise PplawError(f"model_type {self.model_type!r} is not supported (supported: {sorted(ARCHITECTURES)})")
        if self.num_heads % self.num_kv_heads:
            raise PplawError(
                f"num_attention_heads={self.num_heads} is not a multiple of num_key_value_heads={self.num_kv_heads}"
            )
        if self.rope_scaling is not None:
            rope_type = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if rope_type not in ROPE_TYPES:
                raise PplawError(f"rope_scaling type {rope_type!r} is not supported (supported: {ROPE_TYPES})")

    def __hash__(self):  # rope_scaling is a dict; hash its items so configs can key jit caches
        fields = dataclasses.astuple(self)
        return hash(tuple(tuple(sorted(f.items())) if isinstance(f, dict) else f for f in fields))

    @property
    def attention_out_bias(self) -> bool:
        """Whether o_proj has a bias: HF Llama/Mistral/Qwen3 tie it to `attention_bias`, Qwen2 never."""
        return self.attention_bias and self.model_type != "qwen2"

    # ------------------------------------------------------------------ HF config.json
    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> ModelConfig:
        """Build from an HF `config.json` dict; PplawError naming the field for unsupported settings."""
        c = dict(config)
        model_type = c.get("model_type")
        if model_type not in ARCHITECTURES:
            raise PplawError(
                f"config.json: model_type {model_type!r} is not supported (supported: {sorted(ARCHITECTURES)})"
            )
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if key not in c:
                raise PplawError(f"config.json: missing field {key!r}")
        act = c.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise PplawError(f"config.json: hidden_act {act!r} is not supported (only silu)")
        if c.get("mlp_bias"):
            raise PplawError("config.json: mlp_bias=true is not supported")
        if model_type in ("qwen2", "qwen3") and c.get("use_sliding_window"):
            raise PplawError("config.json: use_sliding_window=true is not supported for Qwen models")

        # transformers 5 keeps theta and scaling together in rope_parameters; older files split them.
        rope = dict(c.get("rope_parameters") or {})
        legacy = c.get("rope_scaling")
        if legacy:
            rope = {**legacy, **rope}
        rope_theta = float(rope.pop("rope_theta", c.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        rope.pop("type", None)
        rope_scaling = None if rope_type == "default" else {**rope, "rope_type": rope_type}

        num_heads = int(c["num_attention_heads"])
        if not c.get("head_dim") and int(c["hidden_size"]) % num_heads:
            raise PplawError(
                f"config.json: hidden_size {c['hidden_size']} is not divisible by num_attention_heads "
                f"{num_heads} (and no head_dim is given)"
            )
        head_dim = c.get("head_dim") or int(c["hidden_size"]) // num_heads
        sliding = c.get("sliding_window") if model_type == "mistral" else None
        return cls(
            vocab_size=int(c["vocab_size"]),
            hidden_size=int(c["hidden_size"]),
            intermediate_size=int(c["intermediate_size"]),
            num_layers=int(c["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(c.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(c.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            attention_bias=True if model_type == "qwen2" else bool(c.get("attention_bias", False)),
            qk_norm=model_type == "qwen3",
            bos_token_id=first_id(c.get("bos_token_id")),
            eos_token_id=first_id(c.get("eos_token_id")),
            model_type=model_type,
            sliding_window=int(sliding) if sliding else None,
        )

    def to_hf(self) -> dict:
        """An HF `config.json` dict that `transformers.AutoConfig`/`AutoModelForCausalLM` load."""
        rope_parameters = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            rope_parameters = {**self.rope_scaling, "rope_theta": self.rope_theta}
        out = {
            "architectures": [ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope_parameters,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }
        if self.model_type in ("llama", "qwen3"):
            out["attention_bias"] = self.attention_bias
        if self.model_type == "llama":
            out["mlp_bias"] = False
        if self.model_type == "mistral":
            out["sliding_window"] = self.sliding_window
        if self.model_type == "qwen2":
            out["use_sliding_window"] = False
        return out

    # ------------------------------------------------------------------ sizes
    def num_params(self) -> int:
        """Number of parameters (a tied embedding counted once)."""
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            attn += q + 2 * kv
        if self.attention_out_bias:
            attn += h
        if self.qk_norm:
            attn += 2 * self.head_dim
        mlp = 3 * h * self.intermediate_size
        layer = attn + mlp + 2 * h
        embed = self.vocab_size * h
        return self.num_layers * layer + h + embed * (1 if self.tie_word_embeddings else 2)

    def flops_per_token(self, seq_len: int, training: bool = True) -> float:
        """Model FLOPs per token for a sequence of `seq_len` tokens (the MFU numerator).

        Forward: 2 FLOPs per multiply-add of every weight matmul (all parameters except the input
        embedding lookup, plus the LM head even when tied) and `4 * num_layers * seq_len *
        num_heads * head_dim` for the attention scores and weighted values over the full
        seq_len x seq_len square (what dense attention computes; the causal half is not
        discounted, as in PaLM's MFU definition). Training (`training=True`) is 3x the forward
        (backward = 2x forward), i.e. the PaLM `6N + 12 L H Q T` formula.
        """
        # The input lookup does no matmul; a tied embedding is still used once, as the LM head.
        # Norm scales and biases are counted too (negligible; keeps the standard 2N form).
        matmul_params = self.num_params() - (0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size)
        forward = 2.0 * matmul_params + 4.0 * self.num_layers * seq_len * self.num_heads * self.head_dim
        return 3.0 * forward if training else forward


def first_id(value) -> int | None:
    """config.json token ids may be an int, a list of ints (several EOS) or null."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)
