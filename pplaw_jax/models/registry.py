"""The model families `load_model` reads: one entry per family (its module defines the `Family`).

`by_model_type` picks a family from a checkpoint's config.json, `of_config` from a built config;
`register` adds a family defined outside the package (a plugin, a test).
"""

from __future__ import annotations

from pplaw_jax.models import gemma3, llama
from pplaw_jax.models.family import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (llama.FAMILY, gemma3.FAMILY)}


def register(family: Family) -> Family:
    """Add `family` (its name and model types must be new)."""
    taken = {t for f in FAMILIES.values() for t in (*f.hf_model_types, *f.gguf_archs)}
    if family.name in FAMILIES or taken & {*family.hf_model_types, *family.gguf_archs}:
        raise ValueError(
            f"model family {family.name!r} or one of its model types / GGUF architectures "
            f"{[*family.hf_model_types, *family.gguf_archs]} is taken"
        )
    FAMILIES[family.name] = family
    return family


def model_types() -> list[str]:
    return sorted(t for f in FAMILIES.values() for t in f.hf_model_types)


def gguf_archs() -> list[str]:
    return sorted(a for f in FAMILIES.values() for a in f.gguf_archs)


def by_gguf_arch(arch) -> Family | None:
    """The family that reads GGUF files of `general.architecture` `arch`; None if none does."""
    return next((f for f in FAMILIES.values() if arch in f.gguf_archs), None)


def by_model_type(model_type) -> Family | None:
    """The family that reads config.json's `model_type`; None if none does."""
    return next((f for f in FAMILIES.values() if model_type in f.hf_model_types), None)


def of_config(config) -> Family:
    """The family whose config class `config` is (exactly: a family may subclass another's config)."""
    family = next((f for f in FAMILIES.values() if type(config) is f.config_class), None)
    if family is None:
        raise TypeError(f"no model family has config class {type(config).__name__}")
    return family
